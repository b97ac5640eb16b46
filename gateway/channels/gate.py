"""The inbound gate for patient mail: a patient writes only while a professional's channel is open.

``decide`` is the pure rule (MSSANTE.md §7.2: only a professional opens an exchange; DESIGN.md §6): mail
from ``<matricule>@patient.mssante.fr`` to a mailbox whose channel with that patient is closed, expired or
unknown is refused, with a sentence saying why and since when. ``ChannelGate`` is the hook the intake
calls: ``check`` answers an SMTP recipient (``550 5.7.1 …``), ``admit`` marks a message that arrived by
IMAP as ``refused`` (kept, never delivered, never deleted: it gets no queue row) or files an accepted
reply in its thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from datetime import datetime

from gateway.channels.rules import Refusal
from gateway.logsetup import audit
from gateway.store.channels import ChannelIntent, ChannelStore, ChannelView
from gateway.store.repository import NewMessage
from gateway.store.states import ChannelState
from mappers import ins
from mappers.records import MessageRecord

REFUSED = "refused"  # one of gateway.store.states.KEPT_ASIDE
"""Message state of patient mail kept aside by the gate (``mssgw channels refused`` lists it)."""


def patient_matricule(*senders: str | None) -> str | None:
    """The matricule of the first sender that is a patient (envelope, then From), if any.

    A citizen address with a broken key still names a patient: it is returned normalised, and no
    channel will match it.
    """
    for sender in senders:
        if sender and ins.is_citizen_address(sender):
            local = ins.normalize(sender.strip().strip("<>").rpartition("@")[0])
            # MAILER-DAEMON@patient.mssante.fr and the like are the service writing, not a patient.
            if len(local) == ins.MATRICULE_LENGTH:
                return local
    return None


def decide(channel: ChannelView | None) -> Refusal | None:
    """``None`` when the patient may write on ``channel``; otherwise the refusal to give."""
    if channel is None:
        return Refusal(
            550,
            "5.7.1",
            "No citizen channel: this mailbox has not written to this patient, and only a professional "
            "can open an exchange with Mon Espace Santé",
        )
    if channel.state == ChannelState.OPEN:
        return None
    closed = f"{channel.closed_at:%Y-%m-%d}" if channel.closed_at else "date unknown"
    if channel.state == ChannelState.EXPIRED:
        return Refusal(
            550,
            "5.7.1",
            "Citizen channel expired: the patient can no longer reply to this mailbox "
            f"(no exchange since {channel.last_activity_at:%Y-%m-%d}, expired {closed})",
        )
    how = f"[FIN] sent {closed}"
    if (channel.closed_by or "").startswith("admin:"):
        how = f"closed by the hospital {closed}"
    return Refusal(
        550, "5.7.1", f"Citizen channel closed: the patient can no longer reply to this mailbox ({how})"
    )


class ChannelGate:
    """The intake's hook for mail from patients (store reads run in a worker thread)."""

    def __init__(self, channels: ChannelStore, clock: Callable[[], datetime]) -> None:
        self.channels = channels
        self.clock = clock

    async def check(self, sender: str | None, recipient: str) -> Refusal | None:
        """The refusal for one recipient of mail from ``sender``; ``None`` when it is not patient mail
        or the channel is open."""
        matricule = patient_matricule(sender)
        if matricule is None:
            return None
        channel = await asyncio.to_thread(self.channels.latest, recipient, matricule)
        refusal = decide(channel)
        if refusal is not None:
            audit("patient-mail-refused", channel=channel.id if channel else None, mailbox=recipient)
            await asyncio.to_thread(
                self.channels.note_refusal,
                None if channel is None else channel.id,
                recipient,
                ins.mask(matricule),
                refusal.text,
                self.clock(),
            )
        return refusal

    async def admit(self, new: NewMessage, record: MessageRecord, recipients: Sequence[str]) -> NewMessage:
        """``new`` as it must be committed: unchanged when not from a patient; ``refused`` with its reason
        when no recipient has an open channel; otherwise an activity on the channel, in its thread."""
        matricule = patient_matricule(new.envelope_from, record.author.address)
        if matricule is None or not recipients:
            return new
        refusals = [await self._check(matricule, r) for r in recipients]
        open_to = [r for r, refusal in zip(recipients, refusals, strict=True) if refusal is None]
        # A refusal is a refusal on every path: no queue row may carry refused mail to a drop folder or
        # an internal MTA, whatever the message's state.
        deliverable = tuple(r for r in new.recipients if r.address not in recipients or r.address in open_to)
        if not open_to:
            # Kept aside for a person, handed to no mailbox: no queue row (drop folder, forward host).
            first = next(r for r in refusals if r is not None)
            return dataclasses.replace(new, state=REFUSED, state_reason=first.text, recipients=deliverable)
        thread = record.in_reply_to, *record.references
        related = await asyncio.to_thread(self.channels.thread_of, [m for m in thread if m])
        return dataclasses.replace(
            new,
            recipients=deliverable,
            related_message_pk=new.related_message_pk or related,
            channel=ChannelIntent(tuple(open_to), (matricule,), "reply", new.message_id),
        )

    async def _check(self, matricule: str, recipient: str) -> Refusal | None:
        return decide(await asyncio.to_thread(self.channels.latest, recipient, matricule))
