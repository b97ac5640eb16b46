"""What the sub-commands share: the ``-c`` option, loading settings, opening the store, printing JSON."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from datetime import UTC, date, datetime
from pathlib import Path

from gateway import settings as settings_module
from gateway.errors import ConfigError
from gateway.preflight import material_problems, required_problems
from gateway.settings import Settings
from gateway.store.db import Store, open_store

DEFAULT_CONFIG = "/etc/mssgw/mssgw.toml"
CONFIG_ENV = "MSSGW_CONFIG"


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """``-c FILE``; defaults to $MSSGW_CONFIG, then /etc/mssgw/mssgw.toml (no search path)."""
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        default=Path(os.environ.get(CONFIG_ENV, DEFAULT_CONFIG)),
        help=f"configuration file (default: ${CONFIG_ENV} or {DEFAULT_CONFIG})",
    )


def load_settings(
    args: argparse.Namespace, *, check_material: bool = False, check_required: bool = False
) -> Settings:
    """The validated settings named by ``-c``; raises ConfigError.

    With ``check_material``, the TLS and DKIM files are loaded too (``run`` and ``check-config``); with
    ``check_required``, only the keys a sent message needs are checked (``send``).
    """
    path: Path = args.config
    settings = settings_module.load(path)
    problems = []
    if check_material:
        problems = material_problems(settings)
    elif check_required:
        problems = required_problems(settings)
    if problems:
        raise ConfigError(settings.source, problems)
    return settings


def open_store_of(settings: Settings) -> Store:
    """Open the store the settings name (the embedded SQLite's folder is created if needed)."""
    return open_store(settings.store_url)


def now() -> datetime:
    return datetime.now(UTC)


def to_json(value: object) -> str:
    """Dataclasses, datetimes and tuples as JSON for scripts."""

    def default(item: object) -> object:
        if dataclasses.is_dataclass(item) and not isinstance(item, type):
            return dataclasses.asdict(item)
        if isinstance(item, datetime | date):
            return item.isoformat()
        raise TypeError(f"cannot write {type(item).__name__} as JSON")

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    elif isinstance(value, list):
        value = [
            dataclasses.asdict(v) if dataclasses.is_dataclass(v) and not isinstance(v, type) else v
            for v in value
        ]
    return json.dumps(value, default=default, indent=2, ensure_ascii=False)


def stamp(moment: datetime | None) -> str:
    """A short UTC time for tables."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if moment else "-"
