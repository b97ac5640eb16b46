"""Structured logs: one event per line (logfmt or JSON) on stderr, which journald collects under systemd.

Code logs events, not prose: ``log_event(log, "delivered", queue_id=12, delivery=34, peer="…")``; the
per-message trail goes to the ``gateway.audit`` logger through ``audit``. Values are ids, codes and peers;
a redaction filter on the one handler also masks INS matricules and patient addresses and drops fields that
could carry bodies, subjects, attachment names or credentials, whoever logged them (STYLE.md §5).
"""

from __future__ import annotations

import functools
import json
import logging
import re
import sys
from datetime import UTC, datetime

from gateway.settings import LoggingSettings
from mappers import ins

_FIELDS = "mssgw_fields"

AUDIT = logging.getLogger("gateway.audit")
"""The per-message trail: accepted, queued, delivered, deferred, bounced, held, refused, channel changes."""


def log_event(
    logger: logging.Logger,
    event: str,
    level: int = logging.INFO,
    *,
    exc_info: bool = False,
    **fields: object,
) -> None:
    """Log one event with its fields as separate keys (``exc_info``: with the exception being handled)."""
    _emit(logger, event, level, fields, exc_info)


def audit(event: str, level: int = logging.INFO, **fields: object) -> None:
    """One step of a message's life, with its ids (``queue_id``, ``delivery``, ``channel`` …)."""
    _emit(AUDIT, event, level, fields, False)


def _emit(logger: logging.Logger, event: str, level: int, fields: dict[str, object], exc_info: bool) -> None:
    if logger.isEnabledFor(level):
        logger.log(level, event, exc_info=exc_info, extra={_FIELDS: fields})


# Field names whose values are never written: content, patient-mail subjects, file names, secrets.
_WITHHELD = re.compile(
    r"body|subject|attachment|filename|file_name|content|raw|password|passwd|secret|token|credential|auth",
    re.IGNORECASE,
)
_REDACTED = "[redacted]"
# A matricule INS (NIR): sex digit, year, month 01–12, department (2A/2B for Corsica), commune, order, and
# the optional 2-digit key, written together or in the groups people type (MSSANTE.md §6.2).
_NIR = re.compile(
    r"(?<![0-9A-Za-z])[0-9] ?[0-9]{2} ?(?:0[1-9]|1[0-2]) ?(?:[0-9]{2}|2[ABab])"
    r" ?[0-9]{3} ?[0-9]{3}(?: ?[0-9]{2})?(?![0-9A-Za-z])"
)


def redact(text: str) -> str:
    """``text`` with patient addresses' local parts and INS matricules masked (``2************89``)."""
    return _NIR.sub(lambda m: ins.mask(m.group(0)), ins.mask_addresses(text))


class RedactionFilter(logging.Filter):
    """Applied on the handler, so it sees every record of every logger before it is written."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), None
        fields = getattr(record, _FIELDS, None)
        if fields:
            setattr(record, _FIELDS, {key: _redact_field(key, value) for key, value in fields.items()})
        if record.exc_info:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def _redact_field(key: str, value: object) -> object:
    if value is None or type(value) in _NUMBERS or isinstance(value, bool | int | float):
        return value
    if _withheld(key):
        return _REDACTED
    return redact(str(value))


_NUMBERS = frozenset({bool, int, float})
"""The types of most field values (ids, counts, flags), found without ``isinstance`` walking a union."""


@functools.lru_cache(maxsize=256)
def _withheld(key: str) -> bool:
    """Field names are the keywords of ``log_event`` calls: a few dozen, each looked up once."""
    return _WITHHELD.search(key) is not None


class LogfmtFormatter(logging.Formatter):
    """``ts=… level=… logger=… event=… key=value …``, quoting values that need it."""

    def format(self, record: logging.LogRecord) -> str:
        pairs = _base_fields(record)
        pairs.update(getattr(record, _FIELDS, {}))
        if exception := _exception(self, record):
            pairs["exception"] = exception.replace("\n", " | ")
        # Numbers written as they are without a call each: most values are ids and counts.
        return " ".join(
            [
                f"{key}={value}" if type(value) in _NUMBERS else f"{key}={_logfmt_value(value)}"
                for key, value in pairs.items()
                if value is not None
            ]
        )


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        pairs = _base_fields(record)
        pairs.update(getattr(record, _FIELDS, {}))
        if exception := _exception(self, record):
            pairs["exception"] = exception
        return json.dumps(pairs, default=str, ensure_ascii=False)


def _exception(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    if record.exc_info:
        return formatter.formatException(record.exc_info)
    return record.exc_text


def _base_fields(record: logging.LogRecord) -> dict[str, object]:
    return {
        "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
        "level": record.levelname.lower(),
        "logger": record.name,
        "event": record.getMessage(),
    }


_QUOTED = re.compile(r'[ "=\\]')
"""What makes a logfmt value need quotes (besides being empty or unprintable)."""


def _logfmt_value(value: object) -> str:
    text = "" if value is None else str(value)
    if text and text.isprintable() and not _QUOTED.search(text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


def configure(settings: LoggingSettings) -> None:
    """Install the one redacting stderr handler at the root: the ``gateway`` tree logs at the configured
    level, libraries (aiosmtpd, asyncio …) only their warnings, and nothing escapes the redaction."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.format == "json" else LogfmtFormatter())
    handler.addFilter(RedactionFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    gateway = logging.getLogger("gateway")
    gateway.handlers.clear()
    gateway.setLevel(settings.level.upper())
    gateway.propagate = True
    # Nothing written names a thread, process or source line: ``LogRecord`` need not look them up (the
    # caller's frame walk alone was a fifth of an event's cost, logging's own "Optimization" advice).
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging._srcfile = None  # noqa: SLF001 - the switch logging documents for this
