"""RFC 4475 torture messages as real UDP datagrams at a running server, judged by the README.

Both ends run in a network namespace this test creates (see netns.py), so no packet can
leave the machine. Two servers are tried: ``ua`` (the real SIP stack, cbserver.sip.ua) and
``validate`` (a minimal responder made only of message.py + validate.py, which checks the
harness and the validation rules on the wire but is not the user agent).
"""

import importlib.util
import json
import os
import select
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.sip_torture.netns import SERVER_ADDR, Namespace, NetnsUnavailable
from tests.unit.sip_msg.rfc4475 import load, readme_expectations

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
ROWS = readme_expectations()
STACKS = ("ua", "validate")
# A short T1 keeps server transactions (64*T1) brief, so that files sharing a branch do
# not have to wait long for the previous transaction to end (see torture_client.run).
T1 = 0.02


def _ua_missing() -> str | None:
    if importlib.util.find_spec("cbserver.sip.ua") is None:
        return "cbserver.sip.ua does not exist yet"
    if importlib.util.find_spec("tests.integration.sip_torture.ua_stack") is None:
        return "no ua_stack wiring for the torture server yet"
    return None


def _start_server(ns: Namespace, stack: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [*ns.prefix(), sys.executable, "-m", "tests.integration.sip_torture.torture_server",
           "--host", SERVER_ADDR, "--port", "5060", "--stack", stack, "--t1", str(T1)]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    ready, _, _ = select.select([proc.stdout], [], [], 20)
    line = proc.stdout.readline() if ready else ""
    if not line.startswith("READY"):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"torture server ({stack}) did not start: {line!r}")
    return proc


@pytest.fixture(scope="module", params=STACKS)
def observations(request):
    """Run every torture file against one server; file name -> what the client saw."""
    stack = request.param
    if stack == "ua" and (why := _ua_missing()):
        pytest.skip(why)
    try:
        ns = Namespace(f"cbs-torture-{os.getpid()}-{stack}").__enter__()
    except NetnsUnavailable as exc:
        pytest.skip(f"network namespaces unavailable: {exc}")
    try:
        server = _start_server(ns, stack)
        try:
            cmd = [*ns.prefix(), sys.executable, "-m",
                   "tests.integration.sip_torture.torture_client",
                   "--server", f"{SERVER_ADDR}:5060",
                   "--txn-lifetime", str(64 * T1 + 0.3)]  # fmt: skip
            env = dict(os.environ, PYTHONPATH=str(ROOT))
            done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                                  timeout=600)  # fmt: skip
            assert done.returncode == 0, done.stderr
            yield stack, json.loads(done.stdout)
        finally:
            server.terminate()
            server.wait(timeout=10)
    finally:
        ns.__exit__(None, None, None)


def _finals(responses):
    return [r for r in responses if r.get("status", 0) >= 200]


@pytest.mark.parametrize("name", sorted(ROWS))
def test_torture_datagram(observations, name):
    stack, seen = observations
    exp = ROWS[name]
    obs = seen[name]
    # Never crash or stop answering: an OPTIONS right after every message still gets 200.
    assert obs["probe"] == 200, f"{stack}: server stopped answering after {name}"
    first, again = obs["first"], obs["again"]
    assert not any("unparseable" in r for r in first + again), "server sent junk"
    finals = _finals(first + again)
    statuses = sorted({r["status"] for r in finals})
    if load(name).startswith(b"SIP/"):
        # A response matching no transaction is dropped silently.
        assert first + again == [], f"answered a stray response: {statuses}"
        return
    if exp.cls == "invalid":
        assert not any(200 <= s < 300 for s in statuses), "2xx to an invalid message"
    if exp.parsed:
        assert _finals(first), f"no final answer to a parseable request ({exp.text})"
        assert _finals(again), "the retransmission got no answer"
        assert len(statuses) == 1, f"different answers to one request: {statuses}"
        assert statuses[0] != 400, "400 for a message the README marks parseable"
        if exp.error_codes:
            assert statuses[0] in exp.error_codes, f"{statuses} not in {set(exp.error_codes)}"
        return
    if not finals:
        assert exp.droppable, f"no answer; README wants {exp.text}"
        return
    assert len(statuses) == 1, f"different answers to one request: {statuses}"
    assert _finals(again), "the retransmission got no answer"
    assert statuses[0] in exp.codes, f"{statuses} but README wants {exp.text}"
    if statuses[0] == 420:
        assert _finals(first)[0]["unsupported"], "420 without Unsupported"
