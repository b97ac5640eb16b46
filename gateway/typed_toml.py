"""Reading TOML tables into annotated frozen dataclasses, collecting every problem with its key.

The settings module declares *what* the configuration is (dataclasses whose field types say how a value is
read: ``Seconds``, ``ReadableFile``, ``SecretFile``, ``Literal`` choices, nested sections and lists); this
module does the walking and the converting. It never raises on bad input: each problem becomes a sentence.
A value it refuses is left out (its default stands in; a file keeps its path) and the rest is still read,
so the rules spanning several keys can run too and ``check-config`` lists every problem in one go.
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal


class _Marker:
    """Tags an annotated type with how its value is read and checked."""

    def __init__(self, name: str) -> None:
        self.name = name


_DURATION = _Marker("duration")
_READABLE_FILE = _Marker("readable file")
_SECRET_FILE = _Marker("secret file")

Seconds = Annotated[float, _DURATION]
"""A duration written ``30s``, ``5m``, ``1h``, ``5d`` (or a number of seconds)."""
ReadableFile = Annotated[Path, _READABLE_FILE]
SecretFile = Annotated[Path, _SECRET_FILE]
"""A file holding a secret (private key, password): it must not be readable by group or others."""


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class TomlReader:
    """Converts TOML values to the annotated types, appending a sentence per problem."""

    def __init__(self, problems: list[str], base: Path) -> None:
        self.problems = problems
        self.base = base
        self.unsure: set[str] = set()
        """Tables with a refused choice (``mode``, ``auth``…): their other rules depend on it."""

    def fail(self, key: str, message: str) -> None:
        self.problems.append(f"{key}: {message}")

    def read_dataclass(
        self, cls: type[Any], raw: object, prefix: str, skip: frozenset[str] | set[str] = frozenset()
    ) -> object | None:
        if not isinstance(raw, dict):
            self.fail(prefix or "(top level)", f"expected a table, got {_kind(raw)}")
            return None
        hints = typing.get_type_hints(cls, include_extras=True)
        known = {f.name for f in dataclasses.fields(cls)} - set(skip)
        for key in sorted(set(raw) - known):
            self.fail(_join(prefix, key), "unknown key (misspelt, or in the wrong section?)")
        kwargs: dict[str, Any] = {}
        for item in dataclasses.fields(cls):
            if item.name not in known:
                continue
            key = _join(prefix, item.name)
            if item.name in raw:
                value = self.convert(raw[item.name], hints[item.name], key)
                if value is _INVALID:
                    value = _stand_in(raw[item.name], hints[item.name], self.base)
                if value is not _INVALID:
                    kwargs[item.name] = value
            elif item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING:
                self.fail(key, "required key is missing")
        try:
            instance: object = cls(**kwargs)
        except TypeError:
            # A required key was missing; it has been reported above.
            return None
        return instance

    def convert(self, value: object, hint: Any, key: str) -> Any:
        marker = None
        if typing.get_origin(hint) is Annotated:
            hint, marker = typing.get_args(hint)[0], typing.get_args(hint)[1]
        origin = typing.get_origin(hint)
        if origin in (types.UnionType, typing.Union):
            options = [a for a in typing.get_args(hint) if a is not type(None)]
            return self.convert(value, options[0], key)
        if origin is Literal:
            allowed = typing.get_args(hint)
            if value not in allowed:
                choices = ", ".join(repr(a) for a in allowed)
                self.fail(key, f"{value!r} is not one of {choices}")
                self.unsure.add(key.rpartition(".")[0])
                return _INVALID
            return value
        if origin is tuple:
            item_hint = typing.get_args(hint)[0]
            if not isinstance(value, list):
                self.fail(key, f"expected a list, got {_kind(value)}")
                return _INVALID
            items = [self.convert(v, item_hint, f"{key}[{i}]") for i, v in enumerate(value)]
            return tuple(item for item in items if item is not _INVALID)
        if dataclasses.is_dataclass(hint):
            result = self.read_dataclass(typing.cast(type[Any], hint), value, key)
            return _INVALID if result is None else result
        if isinstance(marker, _Marker):
            return self.convert_marked(value, marker, key)
        return self.convert_plain(value, hint, key)

    def convert_plain(self, value: object, hint: Any, key: str) -> Any:
        if hint is bool:
            if isinstance(value, bool):
                return value
        elif hint is int:
            if isinstance(value, int) and not isinstance(value, bool):
                if value < 0:
                    self.fail(key, f"{value} must not be negative")
                    return _INVALID
                return value
        elif hint is float:
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
        elif hint is str:
            if isinstance(value, str):
                return value
        elif hint is Path and isinstance(value, str) and value:
            return Path(os.path.normpath(self.base / value))
        expected = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}
        self.fail(key, f"expected {expected.get(hint, 'a path')}, got {_kind(value)}")
        return _INVALID

    def convert_marked(self, value: object, marker: _Marker, key: str) -> Any:
        if marker is _DURATION:
            return self.duration(value, key)
        if not isinstance(value, str) or not value:
            self.fail(key, f"expected a file path, got {_kind(value)}")
            return _INVALID
        path = Path(os.path.normpath(self.base / value))
        if not path.is_file():
            self.fail(key, f"file {path} does not exist")
            return _INVALID
        if not os.access(path, os.R_OK):
            self.fail(key, f"file {path} is not readable by this user")
            return _INVALID
        if marker is _SECRET_FILE:
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o077:
                self.fail(
                    key,
                    f"secret file {path} has mode {mode:04o}: it must not be accessible to "
                    "group or others (chmod 600)",
                )
                return _INVALID
        return path

    def duration(self, value: object, key: str) -> float | object:
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
            return float(value)
        match = _DURATION_RE.match(value) if isinstance(value, str) else None
        if match is None:
            self.fail(key, f"{value!r} is not a duration (write e.g. 30s, 5m, 1h, 5d)")
            return _INVALID
        return float(match.group(1)) * _DURATION_UNITS[match.group(2) or "s"]


_INVALID = object()


def _stand_in(value: object, hint: Any, base: Path) -> object:
    """What a refused value leaves for the cross-key rules: a file path that was given is still given
    (so "certificate and key go together" is not said of a key file that is only missing); anything
    else is left out, and its default applies."""
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    files = (_READABLE_FILE, _SECRET_FILE)
    marked = typing.get_origin(hint) is Annotated and typing.get_args(hint)[1] in files
    if marked and isinstance(value, str) and value:
        return Path(os.path.normpath(base / value))
    return _INVALID


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _kind(value: object) -> str:
    names = {dict: "a table", list: "a list", str: "a string", bool: "a boolean", int: "a number"}
    return f"{names.get(type(value), type(value).__name__)} ({value!r})"
