"""A real phone holds and resumes a call from our UA, through a real proxy.

Kamailio (Debian ``kamailio``) is the trunk: a registrar and record-routing proxy on
loopback. baresip (Debian ``baresip-core``) registers to it and auto-answers our call; then
its ``/hold`` and ``/resume`` commands send re-INVITEs with ``a=sendonly`` and ``a=sendrecv``
through the proxy. Our answers must say ``recvonly`` then ``sendrecv`` (RFC 3264 6.1), and our
leg media (a real LegMedia playing a prompt) must send no RTP while held and resume after.
"""

import os
import shutil
import socket
import wave
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor
from twisted.internet.task import deferLater

from cbserver.callback.legmedia import LegMedia, MediaEnvironment
from cbserver.media.clock import MediaClock
from cbserver.media.ports import PortPool
from cbserver.sip.sdp import parse_sdp
from cbserver.sip.service import SipService
from cbserver.sip.ua import UAConfig
from tests.integration.sip_sipp.test_sip_sipp_hold import MediaListener
from tests.unit.media.fakes import FakePrompts

KAMAILIO = shutil.which("kamailio", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin"]))
BARESIP = shutil.which("baresip")
MODULES = "/usr/lib/baresip/modules"
NEEDED = ("g711", "aufile", "alsa", "account", "cons", "menu")
PROXY_CFG = Path(__file__).parent / "kamailio" / "proxy.cfg"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(KAMAILIO is None, reason="kamailio not installed (apt-get install kamailio)"),
    pytest.mark.skipif(BARESIP is None, reason="baresip not installed (apt-get install baresip-core)"),
    pytest.mark.skipif(
        not all(os.path.exists(f"{MODULES}/{m}.so") for m in NEEDED),
        reason=f"baresip modules {NEEDED} not all present in {MODULES}",
    ),
]


def free_port(kind=socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Output(protocol.ProcessProtocol):
    """A child's output, with a Deferred for the first time some text appears in it."""

    def __init__(self):
        self.text = ""
        self.ended = defer.Deferred()
        self._waits = []

    def wait_for(self, needle: str) -> defer.Deferred:
        d = defer.Deferred()
        self._waits.append((needle, d))
        self._check()
        return d

    def _check(self):
        for needle, d in list(self._waits):
            if needle in self.text:
                self._waits.remove((needle, d))
                d.callback(None)

    def outReceived(self, data):  # noqa: N802 - Twisted API
        self.text += data.decode(errors="replace")
        self._check()

    errReceived = outReceived  # noqa: N815

    def processEnded(self, reason):  # noqa: N802 - Twisted API
        for _, d in self._waits:
            d.errback(RuntimeError(f"process exited: {self.text[-2000:]}"))
        self._waits = []
        self.ended.callback(None)


def baresip_config(folder: Path, sip_port: int, cons_port: int, proxy_port: int) -> None:
    folder.mkdir()
    with wave.open(str(folder / "silence.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x00" * 8000 * 30)
    modules = "\n".join(f"module {m}.so" for m in NEEDED if m != "menu") + "\nmodule menu.so"
    (folder / "config").write_text(f"""poll_method epoll
sip_listen 127.0.0.1:{sip_port}
audio_player alsa,null
audio_alert alsa,null
audio_source aufile,{folder / 'silence.wav'}
rtp_ports 26200-26300
module_path {MODULES}
{modules}
cons_listen 127.0.0.1:{cons_port}
""")
    (folder / "accounts").write_text(
        f"<sip:phone@127.0.0.1:{proxy_port}>;regint=600;answermode=auto;audio_codecs=PCMU\n")
    (folder / "contacts").write_text("")


class Keys(protocol.DatagramProtocol):
    def __init__(self, port):
        self.port = port

    def command(self, text):
        self.transport.write(text.encode(), ("127.0.0.1", self.port))


async def wait_until(check, timeout: float, what: str):
    waited = 0.0
    while not check():
        if waited > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        await deferLater(reactor, 0.05, lambda: None)
        waited += 0.05


@pytest_twisted.ensureDeferred
async def test_baresip_hold_and_resume_through_kamailio(tmp_path):
    proxy_port, sip_port, cons_port = free_port(), free_port(), free_port()
    cfg = tmp_path / "proxy.cfg"
    cfg.write_text(PROXY_CFG.read_text().replace("LISTEN_PORT", str(proxy_port)))
    (tmp_path / "run").mkdir()
    kam_out, phone_out = Output(), Output()
    kam = reactor.spawnProcess(kam_out, KAMAILIO, [
        KAMAILIO, "-DD", "-E", "-f", str(cfg), "-Y", str(tmp_path / "run"), "-w", str(tmp_path),
        "-P", str(tmp_path / "run" / "k.pid"),
    ], env=os.environ)  # fmt: skip
    phone = keys = service = media = None
    try:
        await kam_out.wait_for("INFO: <core>")  # its start-up lines
        await deferLater(reactor, 0.5, lambda: None)
        baresip_config(tmp_path / "phone", sip_port, cons_port, proxy_port)
        phone = reactor.spawnProcess(phone_out, BARESIP, [
            BARESIP, "-f", str(tmp_path / "phone"), "-n", "127.0.0.1", "-t", "40",
        ], env=os.environ)  # fmt: skip
        await phone_out.wait_for("200 OK")  # registered with the proxy
        env = MediaEnvironment(clock=reactor, reactor=reactor, pool=PortPool(44000, 44999),
                               media_clock=MediaClock(reactor), bind_address="127.0.0.1",
                               public_address="127.0.0.1",
                               libraries={"app": FakePrompts({"p": 1500})})  # fmt: skip
        media = LegMedia(env, "app", "kam-hold")
        offer = media.open()
        config = UAConfig(
            public_address="127.0.0.1", public_port=0, trunk_host="127.0.0.1", trunk_port=proxy_port,
            from_domain="cb.test", username="cb", password="x", t1=0.5, t2=4.0, t4=5.0,
            session_expires=0, keepalive_interval=0,
        )  # fmt: skip
        service = SipService(config, reactor, listen_address="127.0.0.1", listen_port=0)
        service.startService()
        listener = MediaListener(media)
        call = service.ua.place_call("phone", caller_id="cb1818", display_name=None, sdp_offer=offer,
                                     no_answer_timeout=10, listener=listener)  # fmt: skip
        await wait_until(lambda: listener.events, 10, "the phone to answer")
        assert listener.events[0][0] == "answered", (listener.events, phone_out.text[-2000:])
        await deferLater(reactor, 1.0, lambda: None)
        sent_before_hold = media.session.packets_sent
        keys = reactor.listenUDP(0, Keys(cons_port), interface="127.0.0.1")
        keys.protocol.command("/hold\n")
        await wait_until(lambda: len(listener.events) >= 2, 10, "the hold re-INVITE")
        held_answer = call.local_sdp
        sent_at_hold = media.session.packets_sent
        await deferLater(reactor, 1.5, lambda: None)
        sent_after_hold = media.session.packets_sent
        keys.protocol.command("/resume\n")
        await wait_until(lambda: len(listener.events) >= 3, 10, "the resume re-INVITE")
        resumed_answer = call.local_sdp
        sent_at_resume = media.session.packets_sent
        await deferLater(reactor, 1.0, lambda: None)
        sent_after_resume = media.session.packets_sent
        await call.hangup()
    finally:
        if keys is not None:
            await keys.stopListening()
        if service is not None:
            await service.stopService()
        if media is not None:
            await media.close()
        for proc, out in ((phone, phone_out), (kam, kam_out)):
            if proc is not None and proc.pid is not None:
                proc.signalProcess("TERM")
                await out.ended
    directions = [(e[0], e[2]) for e in listener.events]
    assert directions[:3] == [("answered", "sendrecv"), ("offer", "sendonly"), ("offer", "sendrecv")], (
        directions, phone_out.text[-2000:])
    assert directions[-1] == ("ended", "local hangup")
    assert parse_sdp(held_answer).media[0].direction() == "recvonly"
    assert parse_sdp(resumed_answer).media[0].direction() == "sendrecv"
    assert sent_at_hold >= sent_before_hold > 20  # a second of prompt before the hold
    assert sent_after_hold == sent_at_hold, "RTP sent to the phone while it held the call"
    assert sent_after_resume - sent_at_resume > 20
