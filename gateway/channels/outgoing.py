"""The outbound intake step for citizen channels and receipts: what a message about to be committed for
delivery must become.

``admit_outgoing`` is called on every outgoing message just before it is committed (``mssgw send``, the
store API, the SMTP submission listener): it applies the patient rules (``gateway.channels.rules``),
adds ``X-MSS-MES: FIN`` when the subject carries ``[FIN]`` (so Mon Espace Santé closes its side too),
attaches the channel change the store makes in the same transaction, and asks for DSNs by default.
It never touches the store or the network.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

from gateway.channels.rules import Refusal, check_patient_mail, patient_recipients
from gateway.errors import GatewayError
from gateway.settings import Settings
from gateway.store.channels import ChannelIntent, IntentAction
from gateway.store.repository import NewMessage
from mappers import headers, ins
from mappers.records import MessageRecord

DEFAULT_NOTIFY = "SUCCESS,FAILURE"
"""RFC 3461 NOTIFY asked for every recipient unless the submitter chose otherwise (MSSANTE.md §8.2)."""

_HEADER_END = re.compile(rb"\r?\n\r?\n")
_MES_FIELD = re.compile(rb"^x-mss-mes[ \t]*:", re.IGNORECASE | re.MULTILINE)


class PatientMailRefused(GatewayError):
    """An outgoing message to a patient address breaks a rule; ``refusal`` says which and how to answer."""

    def __init__(self, refusal: Refusal) -> None:
        self.refusal = refusal
        super().__init__(refusal.text)


def closes_exchange(record: MessageRecord) -> bool:
    """True when the message ends the exchange: ``X-MSS-MES: FIN``, or ``[FIN]`` in its subject."""
    return record.end_of_exchange or headers.subject_closes_exchange(record.subject)


def channel_intent(
    record: MessageRecord, recipients: Sequence[str], message_id: str | None
) -> ChannelIntent | None:
    """The channel change an outgoing message makes; ``None`` when it goes to no patient.

    The channel belongs to the Reply-To mailbox when there is one (the patient answers there,
    MSSANTE.md §7.8), else to the From mailbox; closing closes the channels of both.
    """
    matricules = tuple(
        dict.fromkeys(ins.parse_citizen_address(a).value for a in patient_recipients(recipients))
    )
    if not matricules:
        return None
    author = record.author.address
    mailboxes = (record.reply_to.address, author) if record.reply_to else (author,)
    action: IntentAction = "close" if closes_exchange(record) else "send"
    return ChannelIntent(mailboxes, matricules, action, message_id)


def with_end_of_exchange(raw: bytes) -> bytes:
    """``raw`` with ``X-MSS-MES: FIN`` as its first header field, unless it already has the field."""
    end = _HEADER_END.search(raw)
    head = raw[: end.start()] if end else raw
    if _MES_FIELD.search(head):
        return raw
    newline = b"\r\n" if b"\r\n" in head else b"\n"
    return f"{headers.X_MSS_MES}: {headers.MES_END}".encode("ascii") + newline + raw


def admit_outgoing(new: NewMessage, record: MessageRecord, settings: Settings) -> NewMessage:
    """``new`` ready to commit: checked, marked FIN when it closes, with its channel change and DSN request.

    Raises:
        PatientMailRefused: a rule on patient mail is broken; nothing must be committed.
    """
    addresses = [r.address for r in new.recipients]
    refusal = check_patient_mail(
        record,
        addresses,
        len(new.raw),
        test_mode=settings.gateway.test_mode,
        max_size=settings.channels.patient_max_size,
    )
    if refusal is not None:
        raise PatientMailRefused(refusal)
    raw = new.raw
    intent = channel_intent(record, addresses, new.message_id)
    if intent is not None and intent.action == "close":
        raw = with_end_of_exchange(raw)
    recipients = tuple(
        r if r.notify else dataclasses.replace(r, notify=DEFAULT_NOTIFY) for r in new.recipients
    )
    return dataclasses.replace(new, raw=raw, recipients=recipients, channel=intent)
