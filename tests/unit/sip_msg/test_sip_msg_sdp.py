"""Unit tests for cbserver.sip.sdp (RFC 4566 parse/build, RFC 3264 offer/answer)."""

import pytest

from cbserver.sip.sdp import (
    SdpError,
    make_answer,
    make_offer,
    negotiate,
    parse_sdp,
)

OFFER = (
    b"v=0\r\n"
    b"o=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\n"
    b"s=-\r\n"
    b"i=a call\r\n"
    b"c=IN IP4 192.0.2.10\r\n"
    b"b=AS:64\r\n"
    b"t=0 0\r\n"
    b"m=audio 49170 RTP/AVP 8 0 97 101\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:97 iLBC/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-15\r\n"
    b"a=ptime:30\r\n"
    b"a=sendrecv\r\n"
    b"m=video 51372 RTP/AVP 31\r\n"
    b"a=rtpmap:31 H261/90000\r\n"
)


def test_parse_and_serialize_round_trip():
    sd = parse_sdp(OFFER)
    assert sd.origin.startswith("alice 2890844526")
    assert sd.connection.address == "192.0.2.10"
    assert [m.media for m in sd.media] == ["audio", "video"]
    assert sd.media[0].formats == ["8", "0", "97", "101"]
    assert sd.media[0].rtpmap()["101"] == ("telephone-event", 8000, None)
    assert sd.serialize() == OFFER


def test_lf_only_line_ends_are_accepted():
    sd = parse_sdp(OFFER.replace(b"\r\n", b"\n"))
    assert sd.media[0].port == 49170


@pytest.mark.parametrize(
    "body",
    [b"", b"o=x 1 1 IN IP4 1.2.3.4\r\n", b"v=0\r\nthis is not sdp\r\n", b"v=0\r\ns=-\r\n",
     b"v=0\r\no=x 1 1 IN IP4 1.2.3.4\r\nm=audio port RTP/AVP 0\r\n",
     b"v=0\r\no=x 1 1 IN IP4 1.2.3.4\r\nc=IN IP4\r\n"],
)  # fmt: skip
def test_junk_is_sdp_error(body):
    with pytest.raises(SdpError):
        parse_sdp(body)


def test_negotiate_takes_the_offerers_first_supported_codec():
    choice = negotiate(OFFER)
    assert (choice.address, choice.port, choice.codec, choice.payload_type) == (
        "192.0.2.10", 49170, "PCMA", 8,
    )  # fmt: skip
    assert choice.telephone_event == 101
    assert choice.direction == "sendrecv"
    assert choice.ptime == 30


def test_negotiate_of_a_parsed_description_is_that_of_its_bytes():
    # The leg's media parses an answer once and asks both streams_removed and negotiate.
    assert negotiate(parse_sdp(OFFER)) == negotiate(OFFER)
    assert negotiate(parse_sdp(OFFER), codecs=("PCMU",)) == negotiate(OFFER, codecs=("PCMU",))


def test_negotiate_honours_our_codec_list():
    assert negotiate(OFFER, codecs=("PCMU",)).codec == "PCMU"


def test_static_payload_types_need_no_rtpmap_and_media_c_line_wins():
    sdp = (
        b"v=0\r\no=- 1 1 IN IP4 198.51.100.1\r\ns=-\r\nc=IN IP4 198.51.100.1\r\nt=0 0\r\n"
        b"m=audio 4000 RTP/AVP 0\r\nc=IN IP4 198.51.100.2\r\na=recvonly\r\n"
    )
    choice = negotiate(sdp)
    assert (choice.address, choice.codec, choice.telephone_event) == ("198.51.100.2", "PCMU", None)
    assert choice.direction == "recvonly"


def test_session_level_direction_applies_to_streams():
    sdp = OFFER.replace(b"a=sendrecv\r\n", b"").replace(b"t=0 0\r\n", b"t=0 0\r\na=sendonly\r\n")
    assert negotiate(sdp).direction == "sendonly"


def test_rejected_and_unusable_streams_are_skipped():
    sdp = (
        b"v=0\r\no=- 1 1 IN IP4 198.51.100.1\r\ns=-\r\nc=IN IP4 198.51.100.1\r\nt=0 0\r\n"
        b"m=audio 0 RTP/AVP 0\r\n"
        b"m=audio 5000 RTP/SAVP 0\r\n"
        b"m=audio 6000 RTP/AVP 18\r\n"
        b"m=audio 7000 RTP/AVP 18 8\r\n"
    )
    assert negotiate(sdp).port == 7000


def test_nothing_acceptable_raises():
    sdp = (
        b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\n"
        b"m=audio 5 RTP/AVP 18\r\n"
    )
    with pytest.raises(SdpError):
        negotiate(sdp)


def test_missing_connection_line_raises():
    sdp = b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nm=audio 5 RTP/AVP 0\r\n"
    with pytest.raises(SdpError):
        negotiate(sdp)


def test_make_offer_is_valid_and_negotiable():
    offer = make_offer("203.0.113.5", 20000, session_id=42, version=7)
    sd = parse_sdp(offer)
    assert sd.origin == "cbserver 42 7 IN IP4 203.0.113.5"
    assert sd.media[0].formats == ["0", "8", "101"]
    assert sd.media[0].attribute("fmtp") == "101 0-16"
    choice = negotiate(offer)
    assert (choice.port, choice.codec, choice.telephone_event) == (20000, "PCMU", 101)


def test_make_offer_ipv6_and_no_telephone_event():
    sd = parse_sdp(make_offer("2001:db8::5", 20002, codecs=("PCMA",), telephone_event=None))
    assert str(sd.connection) == "IN IP6 2001:db8::5"
    assert sd.media[0].formats == ["8"]


def test_make_answer_accepts_audio_rejects_video():
    answer = parse_sdp(make_answer(OFFER, "203.0.113.9", 30000, session_id=1, version=1))
    audio, video = answer.media
    assert (audio.port, audio.formats) == (30000, ["8", "101"])
    assert audio.attribute("ptime") == "30"
    assert audio.direction() == "sendrecv"
    # RFC 3264 6: rejected stream stays in place with port 0.
    assert (video.media, video.port, video.formats) == ("video", 0, ["31"])
    assert negotiate(answer.serialize()).codec == "PCMA"


@pytest.mark.parametrize(
    "offered,answered",
    [("sendonly", "recvonly"), ("recvonly", "sendonly"), ("inactive", "inactive")],
)
def test_answer_direction_mirrors_the_offer(offered, answered):
    offer = OFFER.replace(b"a=sendrecv", b"a=" + offered.encode())
    assert parse_sdp(make_answer(offer, "203.0.113.9", 30000)).media[0].direction() == answered


def test_answer_without_telephone_event_when_not_wanted():
    answer = parse_sdp(make_answer(OFFER, "203.0.113.9", 30000, telephone_event=False))
    assert answer.media[0].formats == ["8"]


def test_answer_to_unacceptable_offer_raises():
    offer = OFFER.replace(b"m=audio 49170 RTP/AVP 8 0 97 101", b"m=audio 49170 RTP/AVP 97")
    with pytest.raises(SdpError):
        make_answer(offer, "203.0.113.9", 30000)
