"""A real SMTP server on loopback (Twisted's ESMTP server) that keeps what it is sent.

The notification tests hand mail to it over TCP exactly as to an operator's relay; it can
refuse a recipient (550) to show how a refusal is reported.
"""

from __future__ import annotations

import email
import email.policy

from twisted.internet import defer, reactor
from twisted.mail import smtp
from zope.interface import implementer


@implementer(smtp.IMessage)
class _Message:
    """One recipient's copy of a message, parsed into the sink when the data ends."""

    def __init__(self, sink, envelope):
        self.sink, self.envelope, self.lines = sink, envelope, []

    def lineReceived(self, line):
        self.lines.append(line)

    def eomReceived(self):
        raw = b"\r\n".join(self.lines) + b"\r\n"
        self.sink.messages.append((self.envelope, email.message_from_bytes(
            raw, policy=email.policy.default)))
        return defer.succeed(None)

    def connectionLost(self):
        self.lines = []


@implementer(smtp.IMessageDelivery)
class _Delivery:
    """Accepts any sender and every recipient the sink does not refuse (550 for those)."""

    def __init__(self, sink):
        self.sink = sink

    def receivedHeader(self, helo, origin, recipients):
        return b"Received: by the test sink"

    def validateFrom(self, helo, origin):
        self.sink.envelope_from = str(origin)
        return origin

    def validateTo(self, user):
        address = str(user.dest)
        if address in self.sink.refuse:
            raise smtp.SMTPBadRcpt(user)
        return lambda: _Message(self.sink, (self.sink.envelope_from, address))


class SmtpSink:
    """Listens on 127.0.0.1 (an ephemeral port); ``messages`` holds (envelope, message) pairs,
    one pair per recipient, as SMTP delivers them."""

    def __init__(self, refuse: tuple[str, ...] = ()):
        self.messages: list = []
        self.refuse = set(refuse)
        self.envelope_from = None
        self.port = None

    def start(self) -> int:
        """Start listening; the port number."""
        sink = self

        class Factory(smtp.SMTPFactory):
            def buildProtocol(self, addr):
                p = smtp.ESMTP()
                p.delivery = _Delivery(sink)
                p.factory = self
                return p

        self.port = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
        return self.port.getHost().port

    def stop(self):
        """Stop listening (a Deferred)."""
        return defer.maybeDeferred(self.port.stopListening)
