"""Service and web passwords: generation (``secrets``), salted scrypt hashes, verification.

A stored hash is ``scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>``: the parameters live beside the
hash, so the cost can differ per password. Passwords a person chooses get ``STRONG`` (n=2**14,
r=8: about 45 ms). Passwords the generator draws from ``secrets`` carry 12 * log2(56) = 69.7
bits of entropy: even at a billion guesses a second an exhaustive search takes tens of
thousands of years whatever the hash cost, so they get the cheap ``GENERATED`` cost (n=16,
r=4: well under a millisecond) that lets a batch of 100,000 cards (two passwords each) be
hashed in seconds rather than the hours ``STRONG`` would take. Both are salted scrypt.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from cbserver.billing.validation import ValidationError


@dataclass(frozen=True)
class Cost:
    """scrypt parameters."""

    n: int
    r: int = 8
    p: int = 1


STRONG = Cost(2**14)
GENERATED = Cost(2**4, 4)

#: Letters and digits without the look-alikes 0/O, 1/l/I: easy to read off a printed card.
ALPHABET = "23456789abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ"
GENERATED_LENGTH = 12
MIN_LENGTH = 8
STRONG_MIN_LENGTH = 12


def generate(length: int = GENERATED_LENGTH) -> str:
    """A random password from ``ALPHABET``: one uniform ``secrets.randbelow`` draw written in base 56."""
    base = len(ALPHABET)
    n = secrets.randbelow(base ** length)
    chars = []
    for _ in range(length):
        n, digit = divmod(n, base)
        chars.append(ALPHABET[digit])
    return "".join(chars)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, cost: Cost = STRONG) -> str:
    """A salted scrypt hash of ``password`` in the stored format."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=cost.n, r=cost.r, p=cost.p,
                            dklen=32, maxmem=128 * cost.n * cost.r * 2 + 1024 * 1024)
    return f"scrypt${cost.n}${cost.r}${cost.p}${_b64(salt)}${_b64(digest)}"


_DUMMY: list[str] = []


def dummy_hash() -> str:
    """A hash of a random password at the default cost, made once: verifying against it costs
    what verifying a real account's password costs, so an unknown account is not faster."""
    if not _DUMMY:
        _DUMMY.append(hash_password(secrets.token_urlsafe(24)))
    return _DUMMY[0]


def verify_password(password: str, stored: str | None) -> bool:
    """True when ``password`` matches the stored hash (constant-time compare)."""
    if not stored:
        return False
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = _unb64(digest)
        got = hashlib.scrypt(password.encode("utf-8"), salt=_unb64(salt), n=int(n), r=int(r),
                             p=int(p), dklen=len(expected),
                             maxmem=128 * int(n) * int(r) * 2 + 1024 * 1024)
    except ValueError:
        return False
    return hmac.compare_digest(got, expected)


def check_password(field: str, password: object, *, strong: bool = False, account_id: str = "") -> str:
    """Refuse a password too short to use; ``strong`` (internal accounts) asks for more."""
    if not isinstance(password, str):
        raise ValidationError(field, "must be text")
    if len(password) > 128:
        raise ValidationError(field, "must be at most 128 characters")
    if not strong:
        if len(password) < MIN_LENGTH:
            raise ValidationError(field, f"must be at least {MIN_LENGTH} characters")
        return password
    classes = sum((any(c.islower() for c in password), any(c.isupper() for c in password),
                   any(c.isdigit() for c in password), any(not c.isalnum() for c in password)))
    if len(password) < STRONG_MIN_LENGTH or classes < 3:
        raise ValidationError(field, f"is not strong enough: use at least {STRONG_MIN_LENGTH} "
                                     "characters from 3 of: lower case, upper case, digits, symbols")
    if account_id and account_id.lower() in password.lower():
        raise ValidationError(field, "must not contain the account ID")
    if len(set(password)) < 6:
        raise ValidationError(field, "is not strong enough: too few distinct characters")
    return password
