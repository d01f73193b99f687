"""Interop: baresip phones behind Kamailio, which delays in-dialog BYEs by 30 ms.

This is how issue 13 found the bug: a real phone sends RTCP BYE (straight to cbserver's RTP
port) as it sends its SIP BYE (through the proxy, which takes 30 ms longer). Kamailio (Debian
``kamailio``) is the trunk: it record-routes, sends legA's INVITE to one baresip and legB's to
another, and sleeps 30 ms before relaying any in-dialog BYE. cbserver runs in the test process
(``callbackrig``). One phone hangs up (baresip's ``b`` key); the callback must end with that
party's hang-up cause, and cbserver must send no BYE on that leg.
"""

import os
import shutil
import socket
import wave

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor, task
from twisted.logger import globalLogPublisher

from tests.integration.media.callbackrig import CallbackRig

BARESIP = shutil.which("baresip")
KAMAILIO = shutil.which("kamailio") or ("/usr/sbin/kamailio" if os.path.exists("/usr/sbin/kamailio")
                                         else None)
BARESIP_MODULES = "/usr/lib/baresip/modules"
NEEDED = ("g711", "aufile", "alsa", "account", "cons", "menu")
KAMAILIO_MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules"
LEGA_NUMBER = "5511987654321"  # the rig's legA; anything else goes to phone B

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(BARESIP is None, reason="baresip not installed (apt-get install baresip-core)"),
    pytest.mark.skipif(KAMAILIO is None, reason="kamailio not installed (apt-get install kamailio)"),
    pytest.mark.skipif(not all(os.path.exists(f"{BARESIP_MODULES}/{m}.so") for m in NEEDED),
                       reason=f"baresip modules {NEEDED} not all present"),
    pytest.mark.skipif(not os.path.isdir(KAMAILIO_MODULES), reason="kamailio modules not found"),
]


def free_udp_port() -> int:
    """A UDP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


KAMAILIO_CFG = """#!KAMAILIO
debug=2
log_stderror=yes
children=2
auto_aliases=no
listen=udp:127.0.0.1:{port}
mpath="{modules}/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "siputils.so"
loadmodule "cfgutils.so"
loadmodule "textops.so"
loadmodule "xlog.so"

request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if (has_totag()) {{
        if (loose_route()) {{
            if (is_method("BYE")) {{
                xlog("L_INFO", "delaying BYE call_id=$ci by {delay_us} us\\n");
                usleep({delay_us});
            }}
            t_relay();
            exit;
        }}
        if (is_method("ACK")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
        sl_send_reply("404", "Not here");
        exit;
    }}
    if (is_method("CANCEL")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
    record_route();
    if ($rU == "{lega}") {{
        $ru = "sip:phone@127.0.0.1:{phone_a}";
    }} else {{
        $ru = "sip:phone@127.0.0.1:{phone_b}";
    }}
    t_relay();
}}
"""


class Output(protocol.ProcessProtocol):
    """Collects a child's output; ``ready`` fires when ``marker`` shows (None: at once)."""

    def __init__(self, name, marker=None):
        self.name = name
        self.marker = marker
        self.text = ""
        self.ready = defer.Deferred()
        self.ended = defer.Deferred()
        if marker is None:
            self.ready.callback(None)

    def outReceived(self, data):
        self.text += data.decode(errors="replace")
        if self.marker and self.marker in self.text and not self.ready.called:
            self.ready.callback(None)

    errReceived = outReceived

    def processEnded(self, reason):
        if not self.ready.called:
            self.ready.errback(RuntimeError(f"{self.name} exited early: {self.text[-1500:]}"))
        self.ended.callback(None)


class Keys(protocol.DatagramProtocol):
    """Key presses for baresip's ``cons`` module."""

    def press(self, keys, port):
        for k in keys:
            self.transport.write(k.encode(), ("127.0.0.1", port))


def phone_config(folder, sip_port, cons_port, rtp_low):
    """A baresip that auto-answers on loopback, a silent file as its microphone."""
    folder.mkdir()
    with wave.open(str(folder / "silence.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x00" * 8000 * 40)
    modules = "\n".join(f"module {m}.so" for m in NEEDED)
    (folder / "config").write_text(f"""poll_method epoll
sip_listen 127.0.0.1:{sip_port}
audio_player alsa,null
audio_alert alsa,null
audio_source aufile,{folder / 'silence.wav'}
rtp_ports {rtp_low}-{rtp_low + 99}
module_path {BARESIP_MODULES}
{modules}
cons_listen 127.0.0.1:{cons_port}
""")
    (folder / "accounts").write_text(
        "<sip:phone@127.0.0.1>;regint=0;answermode=auto;audio_codecs=PCMU,PCMA\n")
    (folder / "contacts").write_text("")


@pytest.mark.parametrize("who, cause", [("A", "lega_hung_up"), ("B", "legb_hung_up")])
@pytest_twisted.inlineCallbacks
def test_a_baresip_phone_hanging_up_through_kamailio_is_a_hang_up(tmp_path, who, cause):
    proxy_port = free_udp_port()
    phones = {leg: (free_udp_port(), free_udp_port()) for leg in "AB"}  # (sip, cons)
    (tmp_path / "kamailio.cfg").write_text(KAMAILIO_CFG.format(
        port=proxy_port, modules=KAMAILIO_MODULES, delay_us=30000, lega=LEGA_NUMBER,
        phone_a=phones["A"][0], phone_b=phones["B"][0]))
    events = []
    globalLogPublisher.addObserver(events.append)
    procs, outputs, rig, keys = [], [], None, None
    try:
        kam = Output("kamailio")
        procs.append(reactor.spawnProcess(kam, KAMAILIO, [
            KAMAILIO, "-DD", "-E", "-f", str(tmp_path / "kamailio.cfg"), "-Y", str(tmp_path),
            "-m", "32", "-M", "8"], env=os.environ))
        outputs.append(kam)
        for leg, low in (("A", 26200), ("B", 26300)):
            folder = tmp_path / f"phone{leg}"
            phone_config(folder, *phones[leg], low)
            out = Output(f"baresip {leg}", "baresip is ready")
            procs.append(reactor.spawnProcess(out, BARESIP, [
                BARESIP, "-f", str(folder), "-n", "127.0.0.1", "-t", "60"], env=os.environ))
            outputs.append(out)
            yield out.ready
        rig = CallbackRig(("127.0.0.1", proxy_port), rtp_ports=(44000, 44999))
        session = rig.session
        done = session.start()
        for _ in range(150):  # both phones answer, the relay joins them
            if session.state.name == "CONNECTED":
                break
            yield task.deferLater(reactor, 0.1, lambda: None)
        assert session.state.name == "CONNECTED", (session.state, kam.text[-1500:])
        yield task.deferLater(reactor, 1.5, lambda: None)
        assert session._relay.forwarded > 20, "no RTP through the relay"
        keys = reactor.listenUDP(0, Keys(), interface="127.0.0.1")
        keys.protocol.press("b", phones[who][1])  # baresip: hang up
        final = (yield defer.gatherResults([done]).addTimeout(15, reactor))[0]
        hung = getattr(session, who.lower())
        rtcp_byes = [e for e in events if (e.get("log_format") or "").startswith("rtcp bye")
                     and e.get("call_id") == f"rig-{who}"]
        assert rtcp_byes, "the phone sent no RTCP BYE: the race was not exercised"
        assert "delaying BYE call_id=" + hung.call.call_id in kam.text
        assert final["cause"]["code"] == cause, final["cause"]
        assert rig.byes_on(hung) == 0  # no BYE of ours on the leg that hung up
        assert rig.byes_on(session.b if who == "A" else session.a) >= 1
    finally:
        globalLogPublisher.removeObserver(events.append)
        if rig is not None:
            yield rig.close()
        if keys is not None:
            yield keys.stopListening()
        for proc in procs:
            if proc.pid is not None:
                proc.signalProcess("TERM")
        for out in outputs:
            yield out.ended
