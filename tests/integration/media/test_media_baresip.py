"""baresip as a phone: it auto-answers, we play a prompt, it records; the recording must
contain the prompt (cross-correlation), and the digits it sends must be collected.

baresip (Debian ``baresip-core``) runs on loopback only (``-n 127.0.0.1``: SIP and RTP on
127.0.0.1) with ALSA's ``null`` device as its speaker, a silent file as its microphone, the
``sndfile`` module recording what it decodes, and the ``cons`` module taking key presses over
UDP (digits during a call are sent as RFC 4733).
"""

import os
import shutil
import socket
import wave

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor
from twisted.internet.task import deferLater

from cbserver.media.clock import MediaClock
from cbserver.media.collector import CollectOutcome, DigitCollector
from cbserver.media.listen import DigitCollection, DtmfInput
from cbserver.media.player import Player, PlayResult
from cbserver.media.ports import PortPool
from cbserver.media.prompts import load_prompt_library
from cbserver.media.session import RtpSession
from tests.integration.media.sipfake import Caller, sdp
from tests.integration.media.xcorr import best_match, samples

BARESIP = shutil.which("baresip")
MODULES = "/usr/lib/baresip/modules"
NEEDED = ("g711", "aufile", "alsa", "sndfile", "account", "cons", "menu")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(BARESIP is None, reason="baresip not installed (apt-get install baresip-core)"),
    pytest.mark.skipif(
        not all(os.path.exists(f"{MODULES}/{m}.so") for m in NEEDED),
        reason=f"baresip modules {NEEDED} not all present in {MODULES}",
    ),
]



def free_port(kind):
    """A port number the OS just had free on 127.0.0.1 (for baresip's own sockets)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SIP_PORT = free_port(socket.SOCK_DGRAM)  # baresip binds UDP and TCP on it
CONS_PORT = free_port(socket.SOCK_DGRAM)


class Output(protocol.ProcessProtocol):
    def __init__(self):
        self.text = ""
        self.ready = defer.Deferred()
        self.ended = defer.Deferred()

    def outReceived(self, data):
        self.text += data.decode(errors="replace")
        if "baresip is ready" in self.text and not self.ready.called:
            self.ready.callback(None)

    errReceived = outReceived

    def processEnded(self, reason):
        if not self.ready.called:
            self.ready.errback(RuntimeError(f"baresip exited early: {self.text[-1500:]}"))
        self.ended.callback(None)


def configure(folder):
    (folder / "rec").mkdir()
    with wave.open(str(folder / "silence.wav"), "wb") as w:  # baresip's microphone
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x00" * 8000 * 40)
    modules = "\n".join(f"module {m}.so" for m in NEEDED if m != "menu") + "\nmodule menu.so"
    (folder / "config").write_text(f"""poll_method epoll
sip_listen 127.0.0.1:{SIP_PORT}
audio_player alsa,null
audio_alert alsa,null
audio_source aufile,{folder / 'silence.wav'}
rtp_ports 26000-26100
module_path {MODULES}
{modules}
cons_listen 127.0.0.1:{CONS_PORT}
snd_path {folder / 'rec'}
""")
    (folder / "accounts").write_text(
        "<sip:phone@127.0.0.1>;regint=0;answermode=auto;audio_codecs=PCMU,PCMA\n")
    (folder / "contacts").write_text("")


class Keys(protocol.DatagramProtocol):
    def press(self, keys):
        for k in keys:
            self.transport.write(k.encode(), ("127.0.0.1", CONS_PORT))


@pytest_twisted.inlineCallbacks
def test_baresip_hears_the_prompt_and_its_digits_are_collected(tmp_path):
    configure(tmp_path)
    out = Output()
    proc = reactor.spawnProcess(
        out, BARESIP, [BARESIP, "-f", str(tmp_path), "-n", "127.0.0.1", "-t", "30"], env=os.environ)
    session = sip = keys = None
    try:
        yield out.ready
        library = load_prompt_library("en")
        media = MediaClock(reactor)
        session = RtpSession(reactor, reactor, PortPool(43000, 43999), "127.0.0.1", call_id="bs")
        session.open()
        caller = Caller(("127.0.0.1", SIP_PORT), sdp(session.local_port, pts=(0,)))
        sip = reactor.listenUDP(0, caller, interface="127.0.0.1")
        host, port, pt, te_pt = yield caller.invite()
        assert host == "127.0.0.1", f"baresip offered media on {host}; only loopback is allowed"
        session.configure(("127.0.0.1", port), pt, "PCMU", te_pt)
        inp = DtmfInput(call_id="bs")
        inp.attach(session)
        yield deferLater(reactor, 0.5, lambda: None)  # let baresip's audio path start
        played = yield Player(media, session, library, ["please_wait"]).play()
        assert played is PlayResult.DONE
        yield deferLater(reactor, 0.5, lambda: None)

        collection = DigitCollection(reactor, inp, DigitCollector(8, 10, 2, "#"))
        collected = collection.start()
        collection.arm()
        keys = reactor.listenUDP(0, Keys(), interface="127.0.0.1")
        for k in "42#":
            keys.protocol.press(k)
            yield deferLater(reactor, 0.4, lambda: None)
        result = yield collected
        caller.bye()
        yield deferLater(reactor, 1.0, lambda: None)
    finally:
        if proc.pid is not None:
            proc.signalProcess("TERM")
        yield out.ended
        for thing in (session,):
            if thing is not None:
                yield thing.close()
        for port in (sip, keys):
            if port is not None:
                yield port.stopListening()

    recordings = sorted((tmp_path / "rec").glob("*dec*.wav"))
    assert recordings, f"baresip recorded nothing: {out.text[-1500:]}"
    with wave.open(str(recordings[0])) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 8000)
        heard = samples(w.readframes(w.getnframes()))
    # baresip records only what it decoded (its jitter buffer eats the first frames), so look
    # for the prompt without its first and last 200 ms.
    cut = 1600
    score, _lag = best_match(samples(library.pcm("please_wait"))[cut:-cut], heard)
    other, _ = best_match(samples(library.pcm("goodbye"))[cut // 2:-cut // 2], heard)
    assert score > 0.9, f"prompt not found in the recording (peak {score:.2f})"
    assert other < 0.6, f"an unplayed prompt matched too well ({other:.2f})"
    assert result.digits == "42" and result.outcome is CollectOutcome.TERMINATOR
