"""Reading a configuration file that includes others (one shared file, one file per node).

A file may name others with a top-level ``include = "cbserver.toml"`` (or a list of paths,
relative to the including file). The included files are read first, in order, and the
including file's own settings go on top, table by table and key by key: a node file sets
``[server] node`` and its ports while the shared file keeps the database, the trunk and the
applications. An array (``[[application]]``) is replaced as a whole, never merged. Includes
may nest; a file including itself, directly or not, is an error.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from cbserver.configschema import ConfigError

__all__ = ["read_config_data", "merge"]

MAX_DEPTH = 8


def merge(base: dict, top: dict) -> dict:
    """``base`` with ``top`` laid over it: tables merged key by key, anything else replaced."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def _read(path: Path) -> dict:
    """The TOML table of ``path``, or a one-line ConfigError naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("", f"config file {path} does not exist "
                              "(start from: cbserver config example > cbserver.toml)") from None
    except OSError as e:
        raise ConfigError("", f"cannot read config file {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError("", f"config file {path} is not UTF-8 text") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("", f"invalid TOML: {e}", str(path)) from None


def read_config_data(path: Path, _chain: tuple[Path, ...] = ()) -> dict:
    """The settings of ``path`` with its includes resolved (see the module docstring)."""
    real = path.resolve()
    if real in _chain:
        raise ConfigError("include", f"{path} is included by itself "
                                     f"({' -> '.join(str(p) for p in (*_chain, real))})")
    if len(_chain) >= MAX_DEPTH:
        raise ConfigError("include", f"includes nest deeper than {MAX_DEPTH} files", str(path))
    data = _read(path)
    names = data.pop("include", [])
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise ConfigError("include", "expected a file name or a list of file names", str(path))
    merged: dict = {}
    for name in names:
        merged = merge(merged, read_config_data(path.parent / name, (*_chain, real)))
    return merge(merged, data)
