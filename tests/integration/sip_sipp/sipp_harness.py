"""Runs sipp as the trunk (UAS) on loopback and our SipService against it on the real reactor."""

import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from zope.interface import implementer

from cbserver.sip.service import SipService
from cbserver.sip.ua import ICallListener, UAConfig

SIPP = shutil.which("sipp")
SCENARIOS = Path(__file__).parent / "scenarios"
USERNAME, PASSWORD = "cbuser", "secret"
OFFER = (
    b"v=0\r\no=cb 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n"
)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@implementer(ICallListener)
class RecordingListener:
    """Records events; ``done`` fires at the final one. Hangs up ``hangup_after`` s after answer."""

    def __init__(self, hangup_after=None):
        self.events = []
        self.done = Deferred()
        self.hangup_after = hangup_after

    def _final(self):
        if not self.done.called:
            self.done.callback(self.events)

    def call_trying(self, call):
        self.events.append(("trying",))

    def call_ringing(self, call, early_sdp):
        self.events.append(("ringing", early_sdp))

    def call_answered(self, call, remote_sdp):
        self.events.append(("answered", remote_sdp))
        if self.hangup_after is not None:
            reactor.callLater(self.hangup_after, call.hangup)

    def call_failed(self, call, status, reason):
        self.events.append(("failed", status, reason))
        self._final()

    def call_ended(self, call, by_remote, reason):
        self.events.append(("ended", by_remote, reason))
        self._final()

    def call_info(self, call, content_type, body):
        self.events.append(("info", content_type, body))

    def call_offer(self, call, remote_sdp):
        self.events.append(("offer", remote_sdp))


class SippTrunk:
    """One sipp UAS process handling exactly one call (``-m 1``)."""

    def __init__(self, scenario: str, workdir: Path, lost: int = 0, tcp: bool = False, keys=None):
        self.scenario = SCENARIOS / f"{scenario}.xml"
        self.keys = dict(keys or {})  # -key name value: [name] in the scenario
        self.workdir = workdir
        self.lost = lost
        self.tcp = tcp
        self.port = free_udp_port()
        self.proc = None

    def start(self):
        args = [
            SIPP, "-sf", str(self.scenario), "-i", "127.0.0.1", "-p", str(self.port),
            "-mp", str(free_udp_port()), "-m", "1", "-nostdin", "-timeout", "40s",
            "-timeout_error", "-au", USERNAME, "-ap", PASSWORD, "-trace_err", "-max_retrans", "12",
            "-trace_logs",  # the scenarios' <log> actions (e.g. what proxy_auth.xml received)
        ]  # fmt: skip
        if self.lost:
            args += ["-lost", str(self.lost)]
        for name, value in self.keys.items():
            args += ["-key", name, str(value)]
        if self.tcp:
            args += ["-t", "t1"]  # one TCP socket per call
        if os.environ.get("CBS_SIPP_TRACE"):
            args += ["-trace_msg"]
        self.proc = subprocess.Popen(
            args, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip

    async def ready(self, timeout: float = 10.0, attempts: int = 5) -> None:
        """Wait until sipp has bound its port, so our first INVITE is not lost to a race.

        The port was free when picked but another process may take it before sipp binds;
        then sipp exits at once and is started again on a fresh port.
        """
        kind = socket.SOCK_STREAM if self.tcp else socket.SOCK_DGRAM
        for _ in range(attempts):
            waited = 0.0
            while waited < timeout and self.proc.poll() is None:
                with socket.socket(socket.AF_INET, kind) as s:
                    try:
                        s.bind(("127.0.0.1", self.port))
                    except OSError:
                        taken = True  # by sipp, or by another process (then sipp exits at once)
                    else:
                        taken = False
                if taken:
                    await deferLater(reactor, 0.3, lambda: None)
                    if self.proc.poll() is None:
                        return  # sipp is listening
                    break
                await deferLater(reactor, 0.02, lambda: None)
                waited += 0.02
            if self.proc.poll() is None:
                break  # still running but never bound: give up below
            self.port = free_udp_port()  # it died (port taken meanwhile?): try another
            self.start()
        raise RuntimeError(f"sipp did not start: {self.errors()}")

    async def wait(self, timeout: float = 45.0) -> int:
        waited = 0.0
        while self.proc.poll() is None and waited < timeout:
            await deferLater(reactor, 0.05, lambda: None)
            waited += 0.05
        if self.proc.poll() is None:
            self.kill()
        return self.proc.wait()

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # lets sipp flush its logs
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def logged(self) -> str:
        """What the scenario's ``<log>`` actions wrote (``-trace_logs``)."""
        return "".join(p.read_text(errors="replace") for p in sorted(self.workdir.glob("*_logs.log")))

    def errors(self) -> str:
        logs = sorted(self.workdir.glob("*_errors.log"))
        text = "".join(p.read_text(errors="replace") for p in logs)
        if self.proc is not None and self.proc.stderr is not None:
            text += self.proc.stderr.read().decode(errors="replace")
        return text[-4000:]


def make_service(trunk_port: int, t1: float = 0.2, transport: str = "udp") -> SipService:
    config = UAConfig(
        public_address="127.0.0.1", public_port=0, trunk_host="127.0.0.1",
        trunk_port=trunk_port, from_domain="cb.test", username=USERNAME, password=PASSWORD,
        t1=t1, t2=2.0, t4=2.0, session_expires=0, keepalive_interval=0,
    )  # fmt: skip
    return SipService(config, reactor, transport=transport)


async def with_timeout(d: Deferred, seconds: float):
    timer = reactor.callLater(seconds, d.cancel)
    try:
        return await d
    finally:
        if timer.active():
            timer.cancel()
