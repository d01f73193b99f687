"""A small typed loader that turns parsed TOML into frozen dataclasses.

The schema is the dataclasses themselves: each field's annotation says what type is expected
and an optional ``check`` in the field's metadata validates the value. Every error names the
key path (``application[1].access_code``) and what was expected; an unknown key is an error
that suggests the nearest valid one, because a typo silently ignored is an outage later.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Callable
from typing import Any


class ConfigError(ValueError):
    """A configuration problem, with the key path it concerns and how to fix it."""

    def __init__(self, path: str, problem: str, source: str | None = None):
        self.path = path
        self.problem = problem
        self.source = source
        where = f"{source}: " if source else ""
        key = f"[{path}] " if path else ""
        super().__init__(f"{where}{key}{problem}")


def setting(default: Any = dataclasses.MISSING, *, check: Callable[[Any], Any] | None = None,
            doc: str = "") -> Any:
    """Declare a config field: ``check`` may raise ``ValueError`` or return a normalised value."""
    meta = {"check": check, "doc": doc}
    if isinstance(default, list | dict | set):
        raise TypeError("use an immutable default (tuple) for config fields")
    return dataclasses.field(default=default, metadata=meta)


def _join(path: str, key: str | int) -> str:
    """Build a key path such as ``sip.trunk.address`` or ``application[0].name``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _type_name(tp: Any) -> str:
    """A human name for an expected type, used in error messages."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    if origin is tuple:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if dataclasses.is_dataclass(tp):
        return "a table"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _coerce(tp: Any, value: Any, path: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert it (lists become tuples)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None and type(None) in typing.get_args(tp):
            return None
        errors = []
        for arg in args:
            try:
                return _coerce(arg, value, path)
            except ConfigError as e:
                errors.append(e)
        raise ConfigError(path, f"expected {_type_name(tp)}, got {value!r}")
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(path, f"expected {_type_name(tp)}, got {value!r}")
        (item,) = typing.get_args(tp)[:1]
        return tuple(_coerce(item, v, _join(path, i)) for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(path, f"expected a table, got {value!r}")
        return build(tp, value, path)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(path, f"expected a number, got {value!r}")
        return float(value)
    if tp is int and isinstance(value, bool):
        raise ConfigError(path, f"expected an integer, got {value!r}")
    if tp in (str, int, bool):
        if not isinstance(value, tp):
            raise ConfigError(path, f"expected {_type_name(tp)}, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp!r} at {path}")


def build(cls: type, data: dict, path: str = "") -> Any:
    """Build the dataclass ``cls`` from the TOML table ``data``, validating every key."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            valid = ", ".join(sorted(fields))
            raise ConfigError(_join(path, key), f"unknown key{hint} (valid keys: {valid})")
    kwargs = {}
    for name, f in fields.items():
        key_path = _join(path, name)
        if name in data:
            value = _coerce(hints[name], data[name], key_path)
        elif f.default is not dataclasses.MISSING:
            value = f.default
        elif dataclasses.is_dataclass(hints[name]):
            value = build(hints[name], {}, key_path)
        else:
            raise ConfigError(key_path, "is required but missing")
        check = f.metadata.get("check")
        if check is not None and value is not None:
            try:
                checked = check(value)
            except ValueError as e:
                raise ConfigError(key_path, str(e)) from None
            if checked is not None:
                value = checked
        kwargs[name] = value
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        try:
            validate()
        except ConfigError as e:
            raise ConfigError(_join(path, e.path) if e.path else path, e.problem) from None
    return obj


def describe(cls: type, path: str = "") -> list[tuple[str, str, Any, str]]:
    """List (key path, expected type, default, doc) for every field, for documentation."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        key = _join(path, f.name)
        inner = typing.get_args(tp)[0] if typing.get_origin(tp) is tuple else tp
        if dataclasses.is_dataclass(inner):
            rows.extend(describe(inner, key + ("[]" if inner is not tp else "")))
            continue
        default = None if f.default is dataclasses.MISSING else f.default
        rows.append((key, _type_name(tp), default, f.metadata.get("doc", "")))
    return rows
