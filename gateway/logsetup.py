"""Structured logs: one event per line (logfmt or JSON) on stderr, which journald collects under systemd.

Code logs events, not prose: ``log_event(log, "delivered", queue_id=12, delivery=34, peer="…")``. Values are
ids, codes and peers; never bodies, subjects, attachment names or full INS (STYLE.md §5).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from gateway.settings import LoggingSettings

_FIELDS = "mssgw_fields"


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: object) -> None:
    """Log one event with its fields as separate keys."""
    if logger.isEnabledFor(level):
        logger.log(level, event, extra={_FIELDS: fields})


class LogfmtFormatter(logging.Formatter):
    """``ts=… level=… logger=… event=… key=value …``, quoting values that need it."""

    def format(self, record: logging.LogRecord) -> str:
        pairs = _base_fields(record)
        pairs.update(getattr(record, _FIELDS, {}))
        if record.exc_info:
            pairs["exception"] = self.formatException(record.exc_info).replace("\n", " | ")
        return " ".join(f"{key}={_logfmt_value(value)}" for key, value in pairs.items() if value is not None)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        pairs = _base_fields(record)
        pairs.update(getattr(record, _FIELDS, {}))
        if record.exc_info:
            pairs["exception"] = self.formatException(record.exc_info)
        return json.dumps(pairs, default=str, ensure_ascii=False)


def _base_fields(record: logging.LogRecord) -> dict[str, object]:
    return {
        "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
        "level": record.levelname.lower(),
        "logger": record.name,
        "event": record.getMessage(),
    }


def _logfmt_value(value: object) -> str:
    text = "" if value is None else str(value)
    if text and not any(c in text for c in ' "=\\') and text.isprintable():
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


def configure(settings: LoggingSettings) -> None:
    """Install the one stderr handler on the ``gateway`` logger tree."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.format == "json" else LogfmtFormatter())
    root = logging.getLogger("gateway")
    root.handlers[:] = [handler]
    root.setLevel(settings.level.upper())
    root.propagate = False
