"""What every console screen shares: its URLs, reading forms, and refusals as exceptions."""

from __future__ import annotations

from urllib.parse import urlencode

from cbserver.billing.validation import ValidationError

PREFIX = "/ui"


class Refused(Exception):
    """A request the console refuses with ``status`` and a message (401, 403...)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def url(path: str = "/", **query) -> str:
    """A console URL: ``/ui`` + ``path`` with the non-empty ``query`` arguments."""
    q = {k: v for k, v in query.items() if v not in (None, "")}
    return PREFIX + path + (("?" + urlencode(q)) if q else "")


def form_fields(request) -> dict[str, str]:
    """A POST's fields (url-encoded or multipart), last value of each, as text.

    Uploaded files are left out (``form_file``); a field that is not UTF-8 is a
    ``ValidationError`` on that field.
    """
    out = {}
    for k, vs in (request.args or {}).items():
        key = k.decode("utf-8", "replace")
        if key == "file":
            continue
        try:
            out[key] = vs[-1].decode("utf-8") if vs else ""
        except UnicodeDecodeError:
            raise ValidationError(key, "is not UTF-8 text") from None
    return out


def form_list(request, name: str) -> list[str]:
    """Every value of a repeated field (``services``), decoded."""
    return [v.decode("utf-8", "replace") for v in (request.args or {}).get(name.encode(), [])]


def form_file(request) -> bytes:
    """The bytes of the uploaded ``file`` field (empty without one)."""
    return b"".join((request.args or {}).get(b"file", [])[:1])
