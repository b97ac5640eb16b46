"""Exceptions of the gateway, as one tree so each boundary can catch exactly what it handles.

GatewayError
├── ConfigError          the configuration file is wrong (exit 78); lists every problem at once
├── InputError           a command-line or API input is refused (exit 65); names the field
├── StoreError           the database failed; nothing half-written (SMTP answers 451)
│   └── SchemaMismatch   the store was made by another mssgw version: waiting will not help
└── NotFoundError        a queue id, channel or message that does not exist
"""

from __future__ import annotations

from collections.abc import Sequence


class GatewayError(Exception):
    """Root of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """The configuration is invalid; ``problems`` holds one sentence per mistake, each naming its key."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = tuple(problems)
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        count = len(self.problems)
        super().__init__(f"{source}: {count} configuration problem{'s' if count != 1 else ''}:\n{lines}")


class InputError(GatewayError):
    """An input was refused; the message names the field at fault."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class StoreError(GatewayError):
    """The store could not complete an operation; the transaction was rolled back."""


class SchemaMismatch(StoreError):
    """The store's schema version is not this program's."""


class NotFoundError(GatewayError):
    """The thing asked for does not exist."""
