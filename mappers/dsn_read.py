"""Reading received delivery status notifications (RFC 3464, and RFC 6533 global reports).

The inbound counterpart of ``mappers.dsn``: :func:`parse_dsn` turns a peer's report into a
:class:`~mappers.dsn.DeliveryReport` that ``gateway.receipts`` matches to the original by its Message-ID,
ENVID and recipients. Pure: no clock, no DNS, no store.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser, HeaderParser
from email.utils import parsedate_to_datetime

from mappers.dsn import ACTIONS, STATUS_CODE, DeliveryReport, DsnError, RecipientReport
from mappers.folding import READ_POLICY

__all__ = ["parse_dsn"]


# -- the report -------------------------------------------------------------------------------------------

_STATUS_TYPES = ("message/delivery-status", "message/global-delivery-status")
_HEADERS_TYPES = ("text/rfc822-headers", "message/global-headers")
_MESSAGE_TYPES = ("message/rfc822", "message/global")


def parse_dsn(message: EmailMessage) -> DeliveryReport | None:
    """Read a received DSN; ``None`` when ``message`` is not a delivery-status report at all.

    Raises:
        DsnError: a delivery-status report that breaks RFC 3464 (no status part, a recipient without
            Final-Recipient, an unknown action, a malformed status code).
    """
    if message.get_content_type() != "multipart/report":
        return None
    if str(message.get_param("report-type", "", header="content-type")).lower() != "delivery-status":
        return None
    payload = message.get_payload()
    parts = [p for p in payload if isinstance(p, Message)] if isinstance(payload, list) else []
    status_part = next((p for p in parts if p.get_content_type() in _STATUS_TYPES), None)
    if status_part is None:
        raise DsnError("delivery-status report without a message/delivery-status part (RFC 3464 § 2)")
    blocks = _blocks(status_part)
    if len(blocks) < 2:
        raise DsnError("delivery-status part without a per-recipient block (RFC 3464 § 2.1)")
    per_message = blocks[0]
    return DeliveryReport(
        recipients=tuple(_recipient(block) for block in blocks[1:]),
        reporting_mta=_typed(_raw(per_message, "Reporting-MTA")),
        envid=_unfold(_raw(per_message, "Original-Envelope-Id")),
        arrival_date=_parse_date(_raw(per_message, "Arrival-Date")),
        original_message_id=_returned_message_id(parts),
    )


def _blocks(part: Message) -> list[Message]:
    payload = part.get_payload()
    if part.get_content_type() == "message/delivery-status" and isinstance(payload, list):
        # The email parser splits message/delivery-status into one header block per paragraph.
        return [block for block in payload if isinstance(block, Message) and block.keys()]
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        # RFC 6533 message/global-delivery-status is parsed like message/rfc822: the first block
        # became headers and the others a body. Put the text back together and split it ourselves.
        inner = payload[0]
        head = "\n".join(f"{name}: {value}" for name, value in inner.raw_items())
        text = f"{head}\n\n{inner.get_payload()}"
    else:
        raw = part.get_payload(decode=True)
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(payload)
    paragraphs = re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n").strip("\n"))
    parser = HeaderParser(policy=READ_POLICY)
    return [parser.parsestr(p + "\n\n") for p in paragraphs if p.strip()]


def _raw(block: Message, name: str) -> str | None:
    """A field as written, before any RFC 2047 decoding: DSN fields are plain US-ASCII (§ 2.1.1)."""
    for key, value in block.raw_items():
        if key.lower() == name.lower():
            return str(value)
    return None


def _field(value: object) -> str | None:
    if value is None:
        return None
    text = " ".join(str(value).split())
    return text or None


def _unfold(value: object) -> str | None:
    """RFC 5322 § 2.2.3 unfolding only: an envelope id keeps its inner spaces (RFC 3464 § 2.2.1)."""
    if value is None:
        return None
    return re.sub(r"\r?\n", "", str(value)).strip() or None


def _typed(value: object) -> str | None:
    """Drop the ``type;`` prefix of an address, MTA or diagnostic field (RFC 3464 § 2.1.2)."""
    text = _field(value)
    if text is None:
        return None
    kind, semi, rest = text.partition(";")
    if not semi or not kind.strip() or " " in kind.strip():
        return text
    return rest.strip() or None


def _parse_date(value: object) -> datetime | None:
    text = _field(value)
    if text is None:
        return None
    try:
        return parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None


def _recipient(block: Message) -> RecipientReport:
    final = _typed(_raw(block, "Final-Recipient"))
    if final is None:
        raise DsnError("per-recipient block without Final-Recipient (RFC 3464 § 2.3.2)")
    action = (_field(_raw(block, "Action")) or "").lower()
    if action not in ACTIONS:
        raise DsnError(f"{final}: action {action!r} is not one of {sorted(ACTIONS)}")
    # RFC 3464 § 2.3.4 lets a status carry a trailing comment: keep the code only.
    status_text = _field(_raw(block, "Status")) or ""
    found = STATUS_CODE.match(status_text)
    if found is None:
        raise DsnError(f"{final}: status {status_text!r} is not an RFC 3463 code")
    return RecipientReport(
        final_recipient=final,
        action=action,  # type: ignore[arg-type]  # checked against Action's values just above
        status=found.group(),
        original_recipient=_typed(_raw(block, "Original-Recipient")),
        remote_mta=_typed(_raw(block, "Remote-MTA")),
        diagnostic=_typed(_raw(block, "Diagnostic-Code")),
        last_attempt=_parse_date(_raw(block, "Last-Attempt-Date")),
        will_retry_until=_parse_date(_raw(block, "Will-Retry-Until")),
    )


def _returned_message_id(parts: Sequence[Message]) -> str | None:
    for part in parts:
        kind = part.get_content_type()
        if kind in _MESSAGE_TYPES:
            inner = part.get_payload()
            returned = inner[0] if isinstance(inner, list) and inner else None
            if isinstance(returned, Message):
                return _field(returned.get("Message-ID"))
        elif kind in _HEADERS_TYPES:
            raw = part.get_payload(decode=True)
            if isinstance(raw, bytes):
                headers = BytesHeaderParser(policy=READ_POLICY).parsebytes(raw)
                return _field(headers.get("Message-ID"))
    return None
