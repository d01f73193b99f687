"""TLS for the web endpoints: a self-signed certificate generated on first run.

An endpoint given as plain ``ssl:PORT`` gets ``privateKey``/``certKey`` options pointing at
``<state_dir>/tls/``, where a key and a self-signed certificate are created once (owner-only
permissions) so that the page is HTTPS from the first start. Operators replace them by their
own by naming the files in the endpoint string.

``EndpointService`` listens on such an endpoint. The certificate is written, and the endpoint
string parsed (which reads the key and certificate), when the service starts, never while the
service tree is built: building the tree does no I/O.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.application import service, strports


def ensure_self_signed(folder: Path, hostnames: tuple[str, ...] = ()) -> tuple[Path, Path]:
    """Create ``key.pem`` and ``cert.pem`` in ``folder`` unless they exist; return both paths."""
    folder.mkdir(parents=True, exist_ok=True)
    key_path, cert_path = folder / "key.pem", folder / "cert.pem"
    if key_path.exists() and cert_path.exists():
        return key_path, cert_path
    key = ec.generate_private_key(ec.SECP256R1())
    names = sorted({"localhost", socket.gethostname(), *hostnames})
    alt: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    alt += [x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1"))]
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0]),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cbserver self-signed")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=825))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .sign(key, hashes.SHA256()))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM,
                                   serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def complete_endpoint(endpoint: str, state_dir: Path) -> str:
    """Add the self-signed key/cert to an ``ssl:`` endpoint that names none."""
    if not endpoint.startswith("ssl:") or "privateKey=" in endpoint:
        return endpoint
    key, cert = ensure_self_signed(state_dir / "tls")
    # Colons and backslashes in endpoint option values must be escaped.
    esc = [str(p).replace("\\", "\\\\").replace(":", "\\:") for p in (key, cert)]
    return f"{endpoint}:privateKey={esc[0]}:certKey={esc[1]}"


class EndpointService(service.Service):
    """Listens with ``factory`` on a strports ``description``, completed and parsed at start.

    ``ssl:`` endpoints that name no key get the self-signed pair of ``<state_dir>/tls/`` (made
    on first start). The listening itself is a ``strports.service`` made at that moment, so a
    port that cannot be opened still fails the start synchronously, as twistd expects.
    """

    def __init__(self, description: str, state_dir: Path, factory, reactor):
        self.description = description
        self.state_dir = Path(state_dir)
        self.factory = factory
        self.reactor = reactor
        self.listening: service.Service | None = None  # the strports service, once started

    def _listen(self, privileged: bool) -> None:
        """Complete the endpoint (writing the certificate if needed) and start listening once."""
        if self.listening is not None:
            if not privileged:
                self.listening.startService()  # marks it running; the port is already open
            return
        endpoint = complete_endpoint(self.description, self.state_dir)
        self.listening = strports.service(endpoint, self.factory, reactor=self.reactor)
        if privileged:
            self.listening.privilegedStartService()
        else:
            self.listening.startService()

    def privilegedStartService(self) -> None:
        """Open the port before privileges are dropped (twistd's ``--uid``), as strports does."""
        super().privilegedStartService()
        self._listen(privileged=True)

    def startService(self) -> None:
        """Write the self-signed certificate if needed and listen."""
        super().startService()
        self._listen(privileged=False)

    def stopService(self):
        """Stop listening (a Deferred firing once the port is closed)."""
        super().stopService()
        listening, self.listening = self.listening, None
        if listening is not None:  # also after privilegedStartService alone: its port is open
            return listening.stopService()
        return None
