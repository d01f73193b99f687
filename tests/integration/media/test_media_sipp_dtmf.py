"""sipp as the caller plays RFC 4733 DTMF captures to our RTP session; we collect the digits.

sipp (Debian ``sip-tester``) sends an INVITE to a tiny test-only SIP answerer, which answers
with the SDP of a real RtpSession on loopback; sipp then replays
``/usr/share/sip-tester/dtmf_2833_<d>.pcap`` for each digit. The real media clock, session,
DtmfInput and DigitCollection read them.
"""

import os
import shutil
import socket

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue

from cbserver.media.collector import CollectOutcome, DigitCollector
from cbserver.media.listen import DigitCollection, DtmfInput
from cbserver.media.ports import PortPool
from cbserver.media.session import RtpSession
from tests.integration.media.sipfake import Answerer, sdp

PCAP_DIR = "/usr/share/sip-tester"
SIPP = shutil.which("sipp")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(SIPP is None, reason="sipp not installed (apt-get install sip-tester)"),
    pytest.mark.skipif(
        not os.path.exists(f"{PCAP_DIR}/dtmf_2833_1.pcap"),
        reason=f"sipp's DTMF captures missing in {PCAP_DIR} (Debian sip-tester ships them)",
    ),
]


def free_media_port() -> int:
    """An even UDP port free on 127.0.0.1, with the next three free too (sipp binds +2)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1] & ~1
        socks = []
        try:
            for p in range(port, port + 4):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free media port for sipp")


def scenario(digits: str) -> str:
    plays = "\n".join(
        f'  <nop><action><exec play_pcap_audio="{PCAP_DIR}/dtmf_2833_{d}.pcap"/></action></nop>\n'
        '  <pause milliseconds="400"/>'
        for d in digits
    )
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="cbserver dtmf caller">
  <send><![CDATA[
INVITE sip:ivr@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:caller@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:ivr@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:caller@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

v=0
o=- 1 1 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
]]></send>
  <recv response="100" optional="true"/>
  <recv response="200" rtd="true"/>
  <send><![CDATA[
ACK sip:ivr@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:caller@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:ivr@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
Contact: <sip:caller@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Length: 0

]]></send>
  <pause milliseconds="200"/>
{plays}
  <send retrans="500"><![CDATA[
BYE sip:ivr@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:caller@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:ivr@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 2 BYE
Contact: <sip:caller@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Length: 0

]]></send>
  <recv response="200"/>
</scenario>
"""


@pytest_twisted.inlineCallbacks
def test_collector_reads_sipp_rfc4733_digits_exactly(tmp_path):
    digits = "1590372"  # every replay reuses one timestamp; distinct neighbours, one repeat
    pool = PortPool(41000, 41999)
    session = RtpSession(reactor, reactor, pool, "127.0.0.1", call_id="sipp-dtmf")
    session.open()
    inp = DtmfInput(call_id="sipp-dtmf")
    inp.attach(session)

    def answer(media):
        host, port, pt, te_pt = media
        session.configure((host, port), pt, "PCMU", te_pt)
        return sdp(session.local_port, pts=(0,), te_pt=te_pt)

    answerer = Answerer(answer)
    sip_port = reactor.listenUDP(0, answerer, interface="127.0.0.1")
    collection = DigitCollection(
        reactor, inp, DigitCollector(len(digits) + 5, first_digit_timeout=15,
                                     inter_digit_timeout=2.0, terminator="#"))
    collected = collection.start()
    collection.arm()
    (tmp_path / "uac.xml").write_text(scenario(digits))
    media_port = free_media_port()
    sipp = getProcessOutputAndValue(SIPP, [
        "-sf", str(tmp_path / "uac.xml"), "-m", "1", "-i", "127.0.0.1", "-p", "0",
        "-mi", "127.0.0.1", "-mp", str(media_port), "-timeout", "30s", "-timeout_error",
        "-nostdin", "-trace_err", "-error_file", str(tmp_path / "err.log"),
        f"127.0.0.1:{sip_port.getHost().port}",
    ], env=os.environ, path=str(tmp_path))
    try:
        out, err, code = yield sipp
        result = yield collected
    finally:
        yield session.close()
        yield sip_port.stopListening()
    assert code == 0, (out + err).decode(errors="replace")[-2000:]
    assert result.digits == digits
    assert result.outcome is CollectOutcome.INTER_DIGIT_TIMEOUT
    assert session.latched and session.remote == ("127.0.0.1", media_port)
