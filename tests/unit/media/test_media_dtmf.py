"""RFC 4733 event receiver, SIP INFO bodies, the pure digit collector and its Twisted shell."""

import pytest
from twisted.internet.task import Clock

from cbserver.media import rtp
from cbserver.media.collector import CollectOutcome, CollectResult, DigitCollector
from cbserver.media.dtmf import DtmfError, EventReceiver, pack_event, parse_event, parse_info
from cbserver.media.listen import DigitCollection, DtmfInput


def press(event, ts, steps=4, ends=3, start_marker=True):
    """Packets of one key press as RFC 4733 2.5.2 sends them: (ts, marker, payload)."""
    out = [(ts, start_marker and i == 0, pack_event(event, False, 10, 160 * (i + 1)))
           for i in range(steps)]
    out += [(ts, False, pack_event(event, True, 10, 160 * (steps + 1)))] * ends
    return out


def run(receiver, packets):
    return "".join(d for d in (receiver.packet(*p) for p in packets) if d is not None)


def test_payload_fields():
    ev = parse_event(bytes([11, 0x80 | 10, 0x03, 0x20]))
    assert (ev.event, ev.end, ev.volume, ev.duration, ev.digit) == (11, True, 10, 800, "#")
    assert parse_event(pack_event(16, False, 0, 0)).digit is None
    with pytest.raises(DtmfError):
        parse_event(b"\x01")


def test_each_press_is_one_digit_despite_end_retransmissions():
    packets = press(1, 1000) + press(1, 3000) + press(11, 5000)
    assert run(EventReceiver(), packets) == "11#"


def test_lost_start_packets_are_tolerated():
    packets = press(5, 1000)[2:] + press(7, 2000)[-1:]  # only end packets of the second press
    assert run(EventReceiver(), packets) == "57"


def test_reordered_and_duplicated_packets_do_not_repeat_a_digit():
    packets = press(3, 1000)
    packets = packets[1:2] + packets[:1] + packets[1:] + packets[2:]  # the start only once
    assert run(EventReceiver(), packets) == "3"


def test_long_event_segment_is_not_a_new_press():
    # RFC 4733 2.5.1.3: after 0xFFFF samples the event goes on with a new timestamp
    first = [(1000, True, pack_event(9, False, 10, 0xFFFF))]
    cont = [(1000 + 0xFFFF, False, pack_event(9, False, 10, 800))]
    cont += [(1000 + 0xFFFF, False, pack_event(9, True, 10, 1600))] * 3
    assert run(EventReceiver(), first + cont) == "9"


def test_malformed_payload_is_counted_not_raised():
    r = EventReceiver()
    assert r.packet(1, True, b"\x00") is None and r.malformed == 1


@pytest.mark.parametrize(("ctype", "body", "digit"), [
    ("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n", "5"),
    ("Application/DTMF-Relay; charset=x", "signal= #\nDuration=100", "#"),
    ("application/dtmf-relay", "Signal=10\r\nDuration=160", "*"),
    ("application/dtmf", "9", "9"),
    ("application/dtmf", "11\r\n", "#"),
])
def test_info_bodies(ctype, body, digit):
    assert parse_info(ctype, body) == digit


@pytest.mark.parametrize(("ctype", "body"), [
    ("application/dtmf-relay", "Duration=160"),
    ("application/dtmf-relay", "Signal=X"),
    ("text/plain", "5"),
])
def test_bad_info_bodies(ctype, body):
    with pytest.raises(DtmfError):
        parse_info(ctype, body)


def test_collector_terminator_max_and_timeouts():
    c = DigitCollector(4, first_digit_timeout=5, inter_digit_timeout=3)
    c.arm(0)
    assert c.deadline == 5
    assert c.digit("1", 1) is None and c.deadline == 4
    assert c.digit("2", 2) is None
    assert c.digit("#", 3) == CollectResult("12", CollectOutcome.TERMINATOR)
    c = DigitCollector(3, 5, 3)
    for d in "12":
        c.digit(d, 0)
    assert c.digit("3", 0) == CollectResult("123", CollectOutcome.MAX_DIGITS)
    c = DigitCollector(3, 5, 3)
    c.arm(10)
    assert c.expire(14.9) is None
    assert c.expire(15) == CollectResult("", CollectOutcome.FIRST_DIGIT_TIMEOUT)
    c = DigitCollector(3, 5, 3, terminator=None)
    c.digit("#", 0)
    assert c.expire(3) == CollectResult("#", CollectOutcome.INTER_DIGIT_TIMEOUT)


def test_digit_before_arm_is_barge_in_and_arm_then_does_not_restart_first_timeout():
    c = DigitCollector(5, 5, 3)
    c.digit("4", 1.0)
    assert c.barged_in and c.deadline == 4.0
    c.arm(2.0)
    assert c.deadline == 4.0


def event_packet(ts, event, end=False, marker=False):
    return rtp.RtpPacket(101, 1, ts, 7, pack_event(event, end, 10, 160), marker)


def test_collection_shell_with_fake_clock_and_typeahead():
    clock = Clock()
    inp = DtmfInput()
    inp.rtp_event(event_packet(100, 1, marker=True))  # typed ahead before collecting
    barged = []
    coll = DigitCollection(clock, inp, DigitCollector(6, 5, 3), on_barge_in=lambda: barged.append(1))
    results = []
    coll.start().addCallback(results.append)
    assert barged == [1]
    clock.advance(2)
    assert inp.info("application/dtmf-relay", "Signal=2\r\n")
    clock.advance(2.9)
    assert results == []
    clock.advance(0.1)
    assert results == [CollectResult("12", CollectOutcome.INTER_DIGIT_TIMEOUT)]
    assert clock.getDelayedCalls() == []
    assert not inp.info("text/plain", "x")


def test_first_digit_timeout_runs_from_arm_and_cancel_gives_partial():
    clock = Clock()
    inp = DtmfInput()
    coll = DigitCollection(clock, inp, DigitCollector(6, 5, 3))
    results = []
    d = coll.start()
    d.addCallback(results.append)
    clock.advance(100)  # not armed: the prompt is still playing
    assert results == []
    coll.arm()
    clock.advance(5)
    assert results == [CollectResult("", CollectOutcome.FIRST_DIGIT_TIMEOUT)]
    coll2 = DigitCollection(clock, inp, DigitCollector(6, 5, 3))
    d2 = coll2.start()
    inp.rtp_event(event_packet(200, 9, marker=True))
    d2.cancel()
    assert d2.result == CollectResult("9", CollectOutcome.CANCELLED)
    assert clock.getDelayedCalls() == []


def test_replayed_capture_with_reused_timestamp_counts_each_press():
    # sipp's play_pcap_audio replays the same packets (same timestamp) for every press
    packets = press(1, 43200) + press(2, 43200) + press(1, 43200) + press(1, 43200)
    assert run(EventReceiver(), packets) == "1211"


def test_late_packet_of_an_older_event_is_not_a_new_digit():
    first = press(4, 1000)
    packets = first[:-1] + press(6, 2000) + first[-1:]
    assert run(EventReceiver(), packets) == "46"
