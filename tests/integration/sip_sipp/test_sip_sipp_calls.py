"""Our UA over real UDP against sipp playing the trunk, with and without 10% packet loss."""

import hashlib
import re

import pytest
import pytest_twisted

from tests.integration.sip_sipp.sipp_harness import (
    OFFER,
    PASSWORD,
    SIPP,
    USERNAME,
    RecordingListener,
    SippTrunk,
    make_service,
    with_timeout,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(SIPP is None, reason="sipp (Debian package sip-tester) is not on PATH"),
]


def answered_we_hang_up(events):
    names = [e[0] for e in events]
    assert names[-2:] == ["answered", "ended"], events
    assert events[-1] == ("ended", False, "local hangup")
    assert b"m=audio" in events[-2][1]


def ringing_then_answered(events):
    answered_we_hang_up(events)
    # with packet loss the 180 may be lost (provisionals are not retransmitted)
    assert set(e[0] for e in events) <= {"trying", "ringing", "answered", "ended"}


def early_media(events):
    answered_we_hang_up(events)
    early = [e for e in events if e[0] == "ringing"]
    for e in early:
        assert e[1] is not None and b"m=audio" in e[1]


def failed_with(status, reason=None):
    def check(events):
        assert events[-1][:2] == ("failed", status), events
        if reason is not None:
            assert events[-1][2] == reason
        assert "answered" not in [e[0] for e in events]

    return check


def far_end_bye(events):
    assert [e[0] for e in events][-2:] == ["answered", "ended"], events
    assert events[-1] == ("ended", True, "remote hangup")


def reinvite(events):
    names = [e[0] for e in events]
    assert names[-3:] == ["answered", "offer", "ended"], events
    assert b"PCMA" in events[-2][1]
    assert events[-1] == ("ended", True, "remote hangup")


# scenario -> (hang up this long after answer, no-answer timeout, check of the listener events)
CASES = {
    "answer": (0.3, 10, answered_we_hang_up),
    "ring_answer": (0.3, 10, ringing_then_answered),
    "early_media": (0.3, 10, early_media),
    "busy": (None, 10, failed_with(486)),
    "decline": (None, 10, failed_with(603)),
    "noanswer": (None, 1.0, failed_with(487, "no answer")),
    "auth": (0.3, 10, answered_we_hang_up),
    "proxy_auth": (0.3, 10, answered_we_hang_up),
    "far_bye": (None, 10, far_end_bye),
    "reinvite": (None, 10, reinvite),
}


@pytest.mark.parametrize("lost", [0, 10], ids=["clean", "lost10"])
@pytest.mark.parametrize("scenario", list(CASES))
@pytest_twisted.ensureDeferred
async def test_call_against_sipp_trunk(scenario, lost, tmp_path):
    hangup_after, no_answer, check = CASES[scenario]
    trunk = SippTrunk(scenario, tmp_path, lost=lost)
    trunk.start()
    await trunk.ready()
    service = make_service(trunk.port)
    service.startService()
    try:
        listener = RecordingListener(hangup_after=hangup_after)
        service.ua.place_call(
            "15550001", caller_id="cb1818", display_name="Callback", sdp_offer=OFFER,
            no_answer_timeout=no_answer, listener=listener,
        )  # fmt: skip
        events = await with_timeout(listener.done, 40)
        rc = await trunk.wait()
    finally:
        trunk.kill()
        await service.stopService()
    try:
        check(events)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nsipp said: {trunk.errors()}") from exc
    assert rc == 0, f"sipp exit {rc}: {trunk.errors()}"
    if scenario == "proxy_auth":
        # sipp's verifyauth reads only Authorization; the 407 answer is checked here instead.
        assert_digest_response(trunk.logged(), "INVITE", USERNAME, PASSWORD)


def assert_digest_response(log: str, method: str, username: str, password: str) -> None:
    """The Proxy-Authorization the trunk logged carries the right digest (RFC 2617 3.2.2.1).

    Recomputed here from the password with qop=auth: response = MD5(HA1 ":" nonce ":" nc ":"
    cnonce ":" qop ":" HA2), HA1 = MD5(username ":" realm ":" password), HA2 = MD5(method
    ":" digest-uri).
    """
    line = re.search(r"Proxy-Authorization (Digest .*)", log)
    assert line, f"no Proxy-Authorization in sipp's log: {log!r}"
    fields = {k: quoted or bare
              for k, quoted, bare in re.findall(r'(\w+)=(?:"([^"]*)"|([^,\s]+))', line.group(1))}

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    def response(secret: str) -> str:
        ha1 = md5(f"{username}:{fields['realm']}:{secret}")
        ha2 = md5(f"{method}:{fields['uri']}")
        return md5(f"{ha1}:{fields['nonce']}:{fields['nc']}:{fields['cnonce']}:auth:{ha2}")

    assert fields["username"] == username and fields["qop"] == "auth"
    assert fields["response"] == response(password)
    assert fields["response"] != response("not-" + password)  # a wrong password would show
