"""Received documents for the hospital's software: one MDM per CDA for the consumer serving the mailbox,
and the MDN that reports the consumer's answers (issue #13, docs/hl7-consumers.md).

``hand_over`` runs in the intake's ``finish`` step, so the MDMs are committed with the mail (the store is
the queue); the sender (``gateway.outbound.mdm_sender``) settles them and calls ``consumer_mdn`` when the
mail's last MDM is answered. A package whose METADATA.XML and CDA disagree never reaches the consumer: it
keeps today's 903–905 MDN (``gateway.receipts.answer``), the one MDN builder both paths use.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from email.message import EmailMessage
from email.parser import BytesParser

from gateway.logsetup import log_event
from gateway.receipts.answer import mdn_message, package_disposition, package_in, skip_reason
from gateway.settings import Hl7ConsumerSettings, Hl7Settings, Settings
from gateway.store.mdms import NewMdm
from gateway.store.repository import NewMessage
from mappers.documents import Document
from mappers.folding import READ_POLICY
from mappers.hl7_consumer_ack import DocumentResult, combine
from mappers.hl7_mdm import MdmError, MdmHeader, build_mdm, cda_documents, control_id_for
from mappers.mdn import ERROR_LABELS, original_attachments
from mappers.metadata_read import DocumentAction, MetadataError, document_actions
from mappers.records import MessageRecord

log = logging.getLogger(__name__)

OTHER = 906

SentMasks = Callable[[str, str], "frozenset[str] | None"]
"""(consumer, document id) → the masks of the last MDM that consumer was given for it (None: never)."""


def never_sent(consumer: str, document_id: str) -> frozenset[str] | None:
    """No MDM was ever sent (a store without MDMs): a replacement's MODIF_CONF_CODE stays ``N``."""
    return None


def serving(hl7: Hl7Settings, ours: Sequence[str]) -> list[tuple[Hl7ConsumerSettings, str]]:
    """Each consumer serving one of ``ours`` (our mailboxes the mail was accepted for), with that mailbox."""
    found: list[tuple[Hl7ConsumerSettings, str]] = []
    for consumer in hl7.consumers:
        boxes = {box.casefold() for box in consumer.mailboxes}
        mailbox = next((box for box in ours if box.casefold() in boxes), None)
        if mailbox is not None:
            found.append((consumer, mailbox))
    return found


def document_name(document: Document) -> str:
    """How the MDN's human-readable part names a document: its title, else its file."""
    return document.title or document.filename or document.unique_id


def hand_over(
    settings: Settings,
    new: NewMessage,
    record: MessageRecord,
    ours: Sequence[str],
    now: datetime,
    sent_masks: SentMasks = never_sent,
) -> NewMessage | None:
    """``new`` with one MDM per CDA for each consumer serving ``ours``; ``None`` when the mail goes today's
    way (no consumer, no CDA, or an inconsistent package, answered 903–905 by ``build_answer``).

    A package no MDM can be built from (no INS in the CDA, a replacement naming no parent, an unknown action)
    reaches no consumer; its sender gets the 906 MDN at once, when one was asked.
    """
    served = serving(settings.hl7, ours)
    documents = cda_documents(record)
    if not served or not documents:
        return None
    message = BytesParser(policy=READ_POLICY).parsebytes(new.raw)
    if not isinstance(message, EmailMessage):
        return None
    attachments = original_attachments(message)
    if package_disposition(package_in(attachments)).is_error:
        return None
    requested = record.disposition_notification_to
    mdn_to = None
    if (
        requested is not None
        and settings.channels.answer_mdn
        and not skip_reason(record, new.envelope_from, message)
    ):
        mdn_to = requested.address
    try:
        actions: dict[str, DocumentAction] = {}
        for metadata in record.package_metadata:
            actions |= document_actions(metadata)
        mdms = tuple(
            _mdm(settings.hl7, consumer, mailbox, record, document, actions, now, mdn_to, sent_masks)
            for consumer, mailbox in served
            for document in documents
        )
    except (MdmError, MetadataError) as error:
        log_event(log, "mdm-unbuildable", logging.WARNING, reason=str(error), mdn=mdn_to is not None)
        if mdn_to is None:
            return new
        results = [
            (document_name(d), DocumentResult(OTHER, ERROR_LABELS[OTHER], str(error))) for d in documents
        ]
        answer = mdn_message(
            new.raw, attachments, combine(results), served[0][1], mdn_to, settings.gateway.hostname, now
        )
        return dataclasses.replace(new, follow_ups=(answer,))
    return dataclasses.replace(new, mdms=mdms)


def _mdm(
    hl7: Hl7Settings,
    consumer: Hl7ConsumerSettings,
    mailbox: str,
    record: MessageRecord,
    document: Document,
    actions: dict[str, DocumentAction],
    now: datetime,
    mdn_to: str | None,
    sent_masks: SentMasks,
) -> NewMdm:
    action = actions.get(document.unique_id, DocumentAction.ORIGINAL)
    header = MdmHeader(
        hl7.application,
        hl7.facility,
        consumer.application,
        consumer.facility,
        consumer.processing_id,
        consumer.charset,
    )
    control_id = control_id_for(record, document, action)
    mdm = build_mdm(record, document, header=header, control_id=control_id, now=now, action=action)
    replacing = action is DocumentAction.REPLACEMENT and mdm.replaces
    previous = sent_masks(consumer.name, mdm.replaces) if replacing else None
    if previous is not None:
        # MODIF_CONF_CODE compares with what the consumer was given for the replaced version.
        mdm = build_mdm(
            record,
            document,
            header=header,
            control_id=control_id,
            now=now,
            action=action,
            previous_masks=previous,
        )
    return NewMdm(
        consumer=consumer.name,
        mailbox=mailbox,
        name=document_name(document),
        event=mdm.event,
        control_id=mdm.control_id,
        document_id=mdm.document_id,
        replaces=mdm.replaces,
        payload=mdm.encode(),
        mdn_to=mdn_to,
    )


def consumer_mdn(
    raw: bytes,
    results: Sequence[tuple[str, DocumentResult]],
    mailbox: str,
    recipient: str,
    *,
    hostname: str,
    now: datetime,
) -> NewMessage:
    """The MDN reporting the consumer's results on the documents of ``raw`` (``combine``: processed only
    when every one was integrated, else the first failure's code in the Disposition and the subject)."""
    message = BytesParser(policy=READ_POLICY).parsebytes(raw)
    attachments = original_attachments(message) if isinstance(message, EmailMessage) else ()
    return mdn_message(raw, attachments, combine(results), mailbox, recipient, hostname, now)
