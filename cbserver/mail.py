"""E-mail notifications through the operator's mail relay (Twisted's ESMTP client).

Only one notification exists today, the manual's: "Notification about the cards generated
will be sent by email to the user who created them. A .csv file with information about the
new accounts will be attached to that email." ``Mailer.send`` builds one RFC 5322 message
(text body, attachments as MIME parts, RFC 2045) and hands it to the relay in
``[notifications] smtp`` over one SMTP session (RFC 5321), with STARTTLS (RFC 3207) and AUTH
when configured. It never retries on its own: the caller reports a failure and keeps what the
mail would have carried (the generator's CSV stays in the cards folder).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from email.message import EmailMessage
from email.policy import default
from email.utils import formatdate, make_msgid

from twisted.internet import defer
from twisted.mail.smtp import ESMTPSenderFactory

from cbserver.config import NotificationsConfig, parse_host_port
from cbserver.logs import Logger, describe_failure


class MailError(Exception):
    """A notification could not be handed to the relay; the text says why, in one line."""


class Mailer:
    """Sends notification mail through the configured relay (``enabled`` False: none set)."""

    log = Logger()

    def __init__(self, cfg: NotificationsConfig, reactor, timeout: float = 30.0):
        self.cfg = cfg
        self.reactor = reactor
        self.timeout = timeout

    @property
    def enabled(self) -> bool:
        """Is a mail relay configured?"""
        return bool(self.cfg.smtp)

    def message(self, to: Sequence[str], subject: str, body: str,
                attachments: Sequence[tuple[str, str, bytes]] = ()) -> EmailMessage:
        """The message: ``attachments`` are (file name, MIME type, content) triples."""
        # "\n" line ends: Twisted's SMTP client sends each line with CRLF itself (RFC 5321
        # 2.3.8) and dot-stuffs it (4.5.2); CRLF here would reach the relay as CR CR LF.
        msg = EmailMessage(policy=default)
        msg["From"] = self.cfg.sender
        msg["To"] = ", ".join(to)
        msg["Subject"] = subject
        msg["Date"] = formatdate(self.reactor.seconds(), usegmt=True)
        msg["Message-ID"] = make_msgid("cbserver", domain=self.cfg.sender.rpartition("@")[2])
        msg.set_content(body)
        for name, mime, data in attachments:
            maintype, _, subtype = mime.partition("/")
            msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
        return msg

    def send(self, to: Sequence[str], subject: str, body: str,
             attachments: Sequence[tuple[str, str, bytes]] = ()) -> defer.Deferred:
        """Hand one message to the relay; fires with None, or fails with ``MailError``."""
        if not self.enabled:
            return defer.fail(MailError("no mail relay is configured ([notifications] smtp)"))
        host, port = parse_host_port(self.cfg.smtp, default_port=25)
        data = self.message(to, subject, body, attachments).as_bytes()
        done: defer.Deferred = defer.Deferred()
        cfg = self.cfg
        factory = ESMTPSenderFactory(
            cfg.smtp_username.encode() or None, cfg.smtp_password.encode() or None,
            cfg.sender, list(to), io.BytesIO(data), done, retries=0, timeout=self.timeout,
            contextFactory=_tls(host) if cfg.starttls else None, heloFallback=True,
            requireAuthentication=bool(cfg.smtp_username), requireTransportSecurity=cfg.starttls)
        self.reactor.connectTCP(host, port, factory, timeout=self.timeout)

        def sent(_result):
            self.log.info("mail sent to {to}: {subject}", to=", ".join(to), subject=subject)

        def failed(f):
            raise MailError(f"{self.cfg.smtp}: {describe_failure(f)}")

        return done.addCallbacks(sent, failed)


def _tls(host: str):
    """TLS client options that verify the relay's certificate for ``host``."""
    from twisted.internet.ssl import optionsForClientTLS  # noqa: PLC0415 - only with starttls

    return optionsForClientTLS(host)

