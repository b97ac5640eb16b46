"""The consumer's ACK to one MDM → the result its document gets in the MDN sent back to the mail's sender.

The volet "Transmission au LPS de documents CDA provenant d'un courriel MSSanté" (profils-messages,
error-codes, struct-msg-mdn): MSA-1 says accepted or not; on an application error ERR-3 is ``207`` and ERR-5 a
code of the applicationErrorCondition table (900–906); on a technical error ERR-3 carries a
messageErrorCondition code and ERR-5 is empty. The MDN must carry "le code et le libellé de l'erreur
retournés par le CONSOMMATEUR": so a 90x is reported with the table's label word for word, a technical error
with its own code and the volet's label, and what says nothing usable (207 without ERR-5, no ERR at all, no
answer) as 906. One mail may carry several documents, hence several ACKs and one MDN: see ``combine``.
Pure: ER7 in, records out.

Public API (stable):
    read_consumer_ack(er7: str, *, control_id: str | None = None) -> ConsumerAck   # raises ConsumerAckError
    document_result(ack: ConsumerAck) -> DocumentResult
    no_answer(detail: str) -> DocumentResult
    combine(results: Sequence[tuple[str, DocumentResult]]) -> Disposition
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import hl7

from mappers.errors import MappingError
from mappers.mdn import ERROR_LABELS, Disposition

#: The volet's messageErrorCondition table (HL7 0357 as the volet words it), for technical errors.
CONDITION_LABELS: Final[dict[int, str]] = {
    0: "Message accepted",
    100: "Segment sequence error",
    101: "Required field missing",
    102: "Data type error",
    103: "Table value not found",
    198: "Non-conformant cardinality",
    199: "Other HL7 Error",
    200: "Unsupported message type",
    201: "Unsupported event code",
    202: "Unsupported processing",
    203: "Unsupported version",
    207: "Application error",
}
APPLICATION_ERROR: Final = 207
OTHER: Final = 906
#: MSA-1 (HL7 table 0008): original mode AA/AE/AR, enhanced-mode commit CA/CE/CR.
ACCEPTED: Final = frozenset({"AA", "CA"})
_CODES: Final = frozenset({"AA", "AE", "AR", "CA", "CE", "CR"})
_SEVERE: Final = frozenset({"E", "F"})


class ConsumerAckError(MappingError):
    """An answer that is not an ACK to our MDM (no MSA, an unknown MSA-1, another control id)."""


@dataclass(frozen=True, slots=True)
class AckError:
    """One ERR segment: HL7 condition (ERR-3), severity (ERR-4), application code (ERR-5), text (ERR-8)."""

    condition: int | None
    condition_text: str = ""
    severity: str = ""
    application_code: int | None = None
    application_text: str = ""
    text: str = ""
    location: str = ""


@dataclass(frozen=True, slots=True)
class ConsumerAck:
    """What the consumer answered: MSA-1, MSA-2 and its ERR segments (in order)."""

    code: str
    control_id: str
    errors: tuple[AckError, ...] = ()

    @property
    def accepted(self) -> bool:
        return self.code in ACCEPTED

    @property
    def retry_advised(self) -> bool:
        """AR/CR: "rejeté pour une raison circonstancielle. Il peut être réémis plus tard" (the volet)."""
        return self.code in {"AR", "CR"}


@dataclass(frozen=True, slots=True)
class DocumentResult:
    """One document's outcome: ``code`` None when integrated; ``detail`` is what the consumer said."""

    code: int | None
    label: str = ""
    detail: str = ""

    @property
    def integrated(self) -> bool:
        return self.code is None


def read_consumer_ack(er7: str, *, control_id: str | None = None) -> ConsumerAck:
    """Parse an ACK; with ``control_id``, refuse one that acknowledges another message (MSA-2)."""
    try:
        message = hl7.parse(er7)
        message.segment("MSH")
        msa = message.segment("MSA")
    except (hl7.ParseException, KeyError, IndexError, ValueError) as error:
        raise ConsumerAckError(f"not an HL7 ACK with MSH and MSA: {error}") from error
    code = _get(msa, 1).upper()
    if code not in _CODES:
        raise ConsumerAckError(f"MSA-1 {code!r} is not an acknowledgement code (AA, AE, AR, CA, CE, CR)")
    acknowledged = _get(msa, 2)
    if control_id is not None and acknowledged != control_id:
        raise ConsumerAckError(f"MSA-2 {acknowledged!r} acknowledges another message than {control_id!r}")
    errors = tuple(_error(seg) for seg in message if str(seg[0]) == "ERR")
    return ConsumerAck(code, acknowledged, errors)


def document_result(ack: ConsumerAck) -> DocumentResult:
    """The result the MDN reports for this ACK's document (module docstring: which code, which label)."""
    if ack.accepted:
        return DocumentResult(None, detail=f"MSA-1 {ack.code}")
    severe = [error for error in ack.errors if error.severity.upper() in _SEVERE] or list(ack.errors)
    detail = "; ".join([f"MSA-1 {ack.code}", *(_describe(error) for error in severe)])
    applied = next((error for error in severe if error.application_code is not None), None)
    if applied is not None and applied.application_code is not None:
        number = applied.application_code
        label = ERROR_LABELS.get(number) or applied.application_text or applied.text or ERROR_LABELS[OTHER]
        return DocumentResult(number, label, detail)
    technical = next((error for error in severe if error.condition is not None), None)
    if technical is not None and technical.condition in CONDITION_LABELS:
        number = technical.condition
        if number not in {0, APPLICATION_ERROR}:
            return DocumentResult(number, CONDITION_LABELS[number], detail)
    return DocumentResult(OTHER, ERROR_LABELS[OTHER], detail)


def no_answer(detail: str) -> DocumentResult:
    """A consumer that never acknowledged (retries exhausted): 906, never silence."""
    return DocumentResult(OTHER, ERROR_LABELS[OTHER], detail)


def combine(results: Sequence[tuple[str, DocumentResult]]) -> Disposition:
    """One MDN for a mail's documents, each named (title or file) with its result, in package order.

    The volet sends each document in its own MDM and has one MDN per mail, without saying how the results
    meet: the Disposition (and the subject's ``[code]``) carries the first failed document's code and label,
    ``processed`` only when every document was integrated; the human-readable part lists them all.
    """
    if not results:
        raise ValueError("no document result to report")
    lines = tuple(_line(name, result) for name, result in results)
    failed = next((result for _, result in results if not result.integrated), None)
    if failed is None:
        return Disposition(details=lines)
    return Disposition(error_code=failed.code, error_label=failed.label, details=lines)


def _line(name: str, result: DocumentResult) -> str:
    if result.integrated:
        return f"{name} : intégré"
    said = f" ({result.detail})" if result.detail else ""
    return f"{name} : erreur {result.code}^{result.label}{said}"


def _describe(error: AckError) -> str:
    parts = []
    if error.condition is not None:
        parts.append(f"ERR-3 {error.condition} {error.condition_text}".rstrip())
    if error.application_code is not None:
        parts.append(f"ERR-5 {error.application_code} {error.application_text}".rstrip())
    if error.text:
        parts.append(f"ERR-8 {error.text}")
    return ", ".join(parts) or "ERR without code"


def _get(segment: Any, field: int, comp: int = 1) -> str:
    try:
        return str(segment.extract_field(1, field, 1, comp, 1)).strip()
    except (IndexError, KeyError):
        return ""


def _number(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() else None


def _error(err: Any) -> AckError:
    return AckError(
        condition=_number(_get(err, 3)),
        condition_text=_get(err, 3, 2),
        severity=_get(err, 4),
        application_code=_number(_get(err, 5)),
        application_text=_get(err, 5, 2),
        text=_get(err, 8),
        location=str(err[2]) if len(err) > 2 else "",
    )
