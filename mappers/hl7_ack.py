"""Build the technical ACK a producer gets for each ORU/MDM, in the producer's own HL7 version.

AA means "committed" (the listener calls this only after the store commit); AE/AR always carry an ERR with the
table 0357 code and a readable ERR-8, so a refusal is never silent.

Public API (stable):
    build_ack(request_msh: RequestHeader, code: AckCode, error: tuple[int, str] | None, now: datetime,
              control_id: str) -> str
    escape(text: str) -> str                              # mappers.er7.escape, re-exported
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final

from mappers.er7 import escape

__all__ = ["AckCode", "RequestHeader", "build_ack", "escape"]

_TABLE_0357: Final = {
    0: "Message accepted",
    100: "Segment sequence error",
    101: "Required field missing",
    102: "Data type error",
    103: "Table value not found",
    198: "Non-Sequential Continuation",
    199: "Other error",
    200: "Unsupported message type",
    201: "Unsupported event code",
    202: "Unsupported processing id",
    203: "Unsupported version id",
    207: "Application internal error",
}


class AckCode(StrEnum):
    """MSA-1: AA accepted and committed, AE error in the content, AR rejected (producer, type, version)."""

    ACCEPTED = "AA"
    ERROR = "AE"
    REJECTED = "AR"


@dataclass(frozen=True, slots=True)
class RequestHeader:
    """The MSH fields of the request an ACK echoes or swaps."""

    sending_application: str
    sending_facility: str
    receiving_application: str
    receiving_facility: str
    control_id: str
    processing_id: str
    version: str
    trigger: str


def build_ack(
    request: RequestHeader, code: AckCode, error: tuple[int, str] | None, now: datetime, control_id: str
) -> str:
    """One ACK message, segments separated by CR; ``error`` is (table 0357 code, ERR-8 text)."""
    if code is not AckCode.ACCEPTED and error is None:
        raise ValueError("an AE/AR acknowledgement needs its error")
    e = escape
    msh = "|".join(
        [
            "MSH",
            "^~\\&",
            e(request.receiving_application),
            e(request.receiving_facility),
            e(request.sending_application),
            e(request.sending_facility),
            now.strftime("%Y%m%d%H%M%S"),
            "",
            f"ACK^{e(request.trigger)}^ACK",
            e(control_id),
            e(request.processing_id or "P"),
            e(request.version),
            "",
            "",
            "",
            "",
            "FRA",
            "UNICODE UTF-8",
        ]
    )
    segments = [msh, f"MSA|{code.value}|{e(request.control_id)}"]
    if error is not None:
        number, text = error
        label = _TABLE_0357.get(number, _TABLE_0357[199])
        severity = "W" if code is AckCode.ACCEPTED else "E"
        segments.append(f"ERR|||{number}^{e(label)}^HL70357|{severity}||||{e(text)}")
    return "\r".join(segments) + "\r"
