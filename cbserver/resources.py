"""Locates the files cbserver ships beside its code: SQL migrations, prompts, example config.

In a checkout (or an editable install) they are the top-level ``sql/`` and ``prompts/``
folders; in a regular install ``setup.py`` puts them under ``<prefix>/share/cbserver/``.
"""

import sys
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parent.parent
_SHARE = Path(sys.prefix) / "share" / "cbserver"


def _locate(name: str) -> Path:
    """Return the folder ``name`` from the checkout if present, else from the install prefix."""
    for base in (_CHECKOUT, _SHARE):
        candidate = base / name
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"cbserver resource folder {name!r} not found in {_CHECKOUT} or {_SHARE}")


def sql_dir() -> Path:
    """The folder of numbered SQL migrations (``001_*.sql`` ...)."""
    return _locate("sql")


def reports_dir() -> Path:
    """The folder of report queries (``sql/reports/*.sql``)."""
    return sql_dir() / "reports"


def prompts_dir() -> Path:
    """The folder holding one sub-folder of WAV prompts per language."""
    return _locate("prompts")


def checkout_dir() -> Path:
    """The source checkout when running from one (it has setup.py), else the working folder."""
    if (_CHECKOUT / "setup.py").exists():
        return _CHECKOUT
    return Path.cwd()


def sipp_dir() -> Path:
    """The folder of sipp scenarios and audio for the stand-in carrier (``scripts/sipp``)."""
    candidate = _CHECKOUT / "scripts" / "sipp"
    if candidate.is_dir():
        return candidate
    return _SHARE / "scripts" / "sipp"
