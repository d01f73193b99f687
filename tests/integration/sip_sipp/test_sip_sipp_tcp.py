"""Our UA over real TCP against sipp (``-t t1``) playing the trunk."""

import pytest
import pytest_twisted

from tests.integration.sip_sipp.sipp_harness import (
    OFFER,
    SIPP,
    RecordingListener,
    SippTrunk,
    make_service,
    with_timeout,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(SIPP is None, reason="sipp (Debian package sip-tester) is not on PATH"),
]


@pytest.mark.parametrize(
    "scenario,hangup_after,expected",
    [
        ("ring_answer", 0.3, ("ended", False, "local hangup")),
        ("far_bye", None, ("ended", True, "remote hangup")),
        ("busy", None, ("failed", 486)),
        ("auth", 0.3, ("ended", False, "local hangup")),
    ],
)
@pytest_twisted.ensureDeferred
async def test_call_over_tcp(scenario, hangup_after, expected, tmp_path):
    trunk = SippTrunk(scenario, tmp_path, tcp=True)
    trunk.start()
    await trunk.ready()
    service = make_service(trunk.port, transport="tcp")
    service.startService()
    try:
        listener = RecordingListener(hangup_after=hangup_after)
        service.ua.place_call(
            "15550001", caller_id="cb1818", display_name=None, sdp_offer=OFFER,
            no_answer_timeout=10, listener=listener,
        )  # fmt: skip
        events = await with_timeout(listener.done, 30)
        rc = await trunk.wait()
    finally:
        trunk.kill()
        await service.stopService()
    assert events[-1][: len(expected)] == expected, f"{events}\nsipp said: {trunk.errors()}"
    assert rc == 0, f"sipp exit {rc}: {trunk.errors()}"
