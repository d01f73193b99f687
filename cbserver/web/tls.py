"""TLS for the web endpoints: a self-signed certificate generated on first run.

An endpoint given as plain ``ssl:PORT`` gets ``privateKey``/``certKey`` options pointing at
``<state_dir>/tls/``, where a key and a self-signed certificate are created once (owner-only
permissions) so that the page is HTTPS from the first start. Operators replace them by their
own by naming the files in the endpoint string.
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
