"""ER7 (HL7 v2 pipe-and-hat) writing helpers shared by every message the gateway builds: ACKs to producers,
MDMs to consumers. Parsing is the ``hl7`` library's; writing is this small, so that a value with a
delimiter in it can never shift a field.

Public API (stable):
    escape(text: str) -> str              # ER7 escapes; CR/LF become spaces (one field, one line)
    timestamp(moment: datetime) -> str    # DTM ``YYYYMMDDHHMMSS+ZZZZ``
    segment(name: str, *fields: str) -> str   # fields already escaped; trailing empty fields dropped
"""

from __future__ import annotations

from datetime import datetime

from mappers.errors import MappingError
from mappers.xds import hl7_escape


class Er7Error(MappingError):
    """A value that cannot be written as asked (a naive time …)."""


def escape(text: str) -> str:
    """ER7 escapes (``\\E\\ \\F\\ \\S\\ \\T\\ \\R\\``), and CR/LF as spaces: a CR would end the segment."""
    return hl7_escape(text).replace("\r", " ").replace("\n", " ")


def timestamp(moment: datetime) -> str:
    """An HL7 v2.6 DTM with its UTC offset, so the receiver never guesses the time zone."""
    if moment.utcoffset() is None:
        raise Er7Error(f"time {moment.isoformat()} has no time zone")
    return moment.strftime("%Y%m%d%H%M%S%z")


def segment(name: str, *fields: str) -> str:
    """``NAME|f1|f2…``; the empty fields at the end are left out, as HL7 allows."""
    values = list(fields)
    while values and values[-1] == "":
        values.pop()
    return "|".join([name, *values])
