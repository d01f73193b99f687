"""RFC 4475 torture messages at the running UDP service, inside a throw-away network namespace.

The messages' Vias name documentation hosts (192.0.2.x, example.com), so the service runs in
a namespace with only a loopback (192.0.2.0/24 added to it): whatever the server does, no
packet can leave the machine. Expected outcomes follow tests/data/rfc4475/README.md.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT / "tests" / "data" / "rfc4475"
IP = shutil.which("ip")

DROPPED = set()
ANY_PARSED = "parsed"  # exactly one final status, not 400, not 2xx unless OPTIONS-like
EXPECTED = {
    "wsinv.dat": ANY_PARSED, "intmeth.dat": {405, 501}, "esc01.dat": ANY_PARSED,
    "escnull.dat": ANY_PARSED, "esc02.dat": {405, 501}, "lwsdisp.dat": ANY_PARSED,
    "longreq.dat": ANY_PARSED, "dblreq.dat": ANY_PARSED, "semiuri.dat": ANY_PARSED,
    "transports.dat": ANY_PARSED, "mpart01.dat": {405, 415}, "unreason.dat": DROPPED,
    "noreason.dat": DROPPED, "badinv01.dat": {400, None}, "clerr.dat": {400, None},
    "ncl.dat": {400, None}, "scalar02.dat": {400}, "scalarlg.dat": DROPPED,
    "quotbal.dat": {400, None}, "ltgtruri.dat": {400}, "lwsruri.dat": {400},
    "lwsstart.dat": {400}, "trws.dat": {400}, "escruri.dat": {400}, "baddate.dat": {400},
    "regbadct.dat": {400}, "badaspec.dat": {400}, "baddn.dat": {400}, "badvers.dat": {505},
    "mismatch01.dat": {400}, "mismatch02.dat": {400}, "bigcode.dat": DROPPED,
    "badbranch.dat": ANY_PARSED, "insuf.dat": {400}, "unkscm.dat": {416},
    "novelsc.dat": ANY_PARSED, "unksm2.dat": ANY_PARSED, "bext01.dat": {420},
    "invut.dat": {415}, "regaut01.dat": {405}, "multi01.dat": {400}, "mcl01.dat": {400},
    "bcast.dat": DROPPED, "zeromf.dat": {200}, "cparam01.dat": {405}, "cparam02.dat": {405},
    "regescrt.dat": {405}, "sdp01.dat": {406}, "inv2543.dat": ANY_PARSED,
}  # fmt: skip


def _netns_usable():
    if IP is None:
        return "iproute2 (`ip`) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"cbs-probe-{os.getpid()}"
    made = subprocess.run([IP, "netns", "add", probe], capture_output=True)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.decode().strip()}"
    subprocess.run([IP, "netns", "del", probe], capture_output=True)
    return None


@pytest.fixture(scope="module")
def torture_results():
    reason = _netns_usable()
    if reason:
        pytest.skip(reason)
    ns = f"cbs-torture-{os.getpid()}"
    subprocess.run([IP, "netns", "add", ns], check=True)
    try:
        for cmd in (["ip", "link", "set", "lo", "up"],
                    ["ip", "addr", "add", "192.0.2.254/24", "dev", "lo"]):  # fmt: skip
            subprocess.run([IP, "netns", "exec", ns, *cmd], check=True)
        run = subprocess.run(
            [IP, "netns", "exec", ns, sys.executable, "-m",
             "tests.integration.sip_sipp.torture_runner", str(DATA)],
            cwd=ROOT, capture_output=True, timeout=180,
        )  # fmt: skip
    finally:
        subprocess.run([IP, "netns", "del", ns], capture_output=True)
    assert run.returncode == 0, run.stderr.decode()[-3000:]
    out = json.loads(run.stdout.decode().strip().splitlines()[-1])
    assert "error" not in out, out.get("error")
    return out["result"]


def test_every_torture_file_was_sent(torture_results):
    assert set(torture_results) == set(EXPECTED) == {p.name for p in DATA.glob("*.dat")}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_torture_message_outcome(torture_results, name):
    result = torture_results[name]
    assert result["alive_after"], f"no 200 to the OPTIONS sent after {name}"
    statuses = [r["status"] for r in result["responses"] if "status" in r]
    assert all("unparseable" not in r for r in result["responses"])
    # a request gets one final answer; retransmissions of it may repeat the same one
    assert len(set(statuses)) <= 1, statuses
    got = statuses[0] if statuses else None
    want = EXPECTED[name]
    if want is ANY_PARSED:
        assert got is not None and got != 400, statuses
    elif want == DROPPED:
        assert got is None, statuses
    else:
        assert got in want, statuses
    if name == "bext01.dat":
        assert result["responses"][0]["unsupported"]
