"""The value types of intake: a message as it arrived, the verdict on each recipient, the intake result.

Shared by the listeners, the pure policy and ``intake`` (which re-exports them), so that protocol code and
policy agree on one shape without importing the store. No behaviour here, only shapes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from gateway.store.repository import Recipient
from mappers.patient import Patient

__all__ = ["Arrival", "Decision", "IntakeResult", "Recipient", "Verdict"]


@dataclass(frozen=True, slots=True)
class Arrival:
    """A message handed to the gateway, with its envelope and who handed it."""

    raw: bytes
    envelope_from: str  # "" for a null sender (bounces)
    recipients: tuple[Recipient, ...]
    source: str  # "submission" | "operator" | "imap" | "cli" | "hl7"
    peer: str | None = None  # "ip:port", IMAP "account/folder", …
    envid: str | None = None
    ret: str | None = None
    authenticated_as: str | None = None  # submission login, client-certificate identity, HL7 producer
    patient: Patient | None = None  # named outside the message (``mssgw send --patient``), for the rules
    hl7_control: tuple[str, str] | None = None  # (producer, MSH-10) of an HL7 message: one mail per pair
    zam_events: str | None = None  # ZAM its producer asked for (mappers.hl7_zam.requested_events)


class Decision(StrEnum):
    """What became of one recipient."""

    ACCEPTED = "accepted"
    TEMPORARY = "temporary"
    PERMANENT = "permanent"


@dataclass(frozen=True, slots=True)
class Verdict:
    """One recipient's answer: SMTP code and the enhanced code + sentence a person can act on."""

    recipient: str
    decision: Decision
    code: int  # 250 / 451 / 550 …
    text: str  # e.g. "5.1.1 <x@y>: no such mailbox here"

    @property
    def reply(self) -> str:
        """The SMTP reply line, ``550 5.1.1 …``."""
        return f"{self.code} {self.text}"


@dataclass(frozen=True, slots=True)
class IntakeResult:
    """What intake did with an arrival."""

    message_pk: int | None  # None when nothing was stored
    duplicate: bool  # same Message-ID + digest already stored
    verdicts: tuple[Verdict, ...]  # one per recipient, in order

    @property
    def accepted(self) -> tuple[Verdict, ...]:
        """The verdicts of the recipients the message was accepted for."""
        return tuple(v for v in self.verdicts if v.decision is Decision.ACCEPTED)
