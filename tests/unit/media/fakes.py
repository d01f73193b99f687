"""Test doubles for media unit tests: a fake UDP reactor on a fake clock, a prompt library."""

from twisted.internet.error import CannotListenError
from twisted.internet.task import Clock
from zope.interface import implementer

from cbserver.media import rtp
from cbserver.media.prompts import IPromptLibrary, encode_frames


class FakeUDPPort:
    def __init__(self, reactor, port, protocol, interface):
        self.reactor, self.port, self.protocol, self.interface = reactor, port, protocol, interface
        self.sent = []
        self.listening = True

    def write(self, data, addr):
        self.sent.append((data, addr))

    def stopListening(self):
        self.listening = False
        self.reactor.ports.pop(self.port, None)


class FakeReactor(Clock):
    """A Clock that also 'binds' UDP ports in memory."""

    def __init__(self, busy=()):
        super().__init__()
        self.ports = {}
        self.busy = set(busy)

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        if port in self.busy or port in self.ports:
            raise CannotListenError(interface, port, "in use")
        p = FakeUDPPort(self, port, protocol, interface)
        self.ports[port] = p
        protocol.transport = p
        return p


def rtp_sent(port):
    """The RTP packets written on a fake port, parsed."""
    return [rtp.unpack(data) for data, _addr in port.sent]


@implementer(IPromptLibrary)
class FakePrompts:
    """Prompts made of constant-valued PCM; prompt 'name' lasts frames[name] frames."""

    language = "xx"

    def __init__(self, lengths):
        self._pcm = {
            name: (i + 1).to_bytes(2, "little", signed=True) * (160 * n)
            for i, (name, n) in enumerate(sorted(lengths.items()))
        }

    def names(self):
        return frozenset(self._pcm)

    def frames(self, name, codec):
        return encode_frames(self._pcm[name], codec)

    def pcm(self, name):
        return self._pcm[name]
