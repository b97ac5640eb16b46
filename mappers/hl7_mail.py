"""The MSSanté mail one HL7 transmission asks for: recipients, patient, documents, body, flags.

Pure (no store, no socket) so the MLLP listener and an offline tool build the same record; the listener
then gives it to ``build_message`` and the intake like any other internal sender (``mssgw send``).

Public API (stable):
    transmission_record(transmission, author, when, defaults=None) -> MessageRecord  # MappingError
"""

from __future__ import annotations

import dataclasses
from datetime import datetime

from mappers import cda, ins, patient_match, xds
from mappers.documents import Code, Document, DocumentAction, HeaderDefaults
from mappers.errors import MappingError
from mappers.hl7_transmission import Route, Transmission
from mappers.records import Mailbox, MessageRecord

#: The body of a replacement or deletion sent without CORPSMAIL_* text (profils-messages, "A défaut").
_DEFAULT_BODIES = {
    DocumentAction.REPLACEMENT: (
        "Le document joint remplace une version transmise précédemment : "
        "merci de ne plus utiliser l'ancienne version."
    ),
    DocumentAction.DELETION: (
        "Un document transmis précédemment est retiré par son auteur : merci de ne plus l'utiliser."
    ),
}


class Hl7MailError(MappingError):
    """A transmission that reads well but cannot become a truthful mail (a replacement naming nothing)."""


def transmission_record(
    transmission: Transmission, author: Mailbox, when: datetime, defaults: HeaderDefaults | None = None
) -> MessageRecord:
    """The record of the mail: one message to every RCT (and the patient when the route says so).

    The documents take their metadata from their CDA header (as ``mssgw send`` does), plus the masking
    codes the MetaDMPMSS flags set and the XDS-only classCode and structured-CDA formatCode of
    ``defaults`` (the ``[documents]`` settings: no header part carries them); the PID patient must be the
    one every CDA names.
    """
    defaults = defaults or HeaderDefaults()
    t = transmission
    to = [Mailbox(address) for address in t.recipients]
    if t.route is not Route.PROFESSIONALS_ONLY:
        to.append(Mailbox(ins.citizen_address(t.patient.matricule)))
    masks = tuple(code for name, code in xds.MASKING_CODES.items() if t.flags.get(name))
    documents = tuple(
        _document(number, content, when, masks, t.action, defaults)
        for number, content in enumerate(t.cdas, 1)
    )
    record = MessageRecord(
        author=author,
        to=tuple(to),
        subject=documents[0].title,
        body=_body(t),
        patient=t.patient,
        documents=documents,
        reply_to=Mailbox(t.reply_to) if t.reply_to else None,
        disposition_notification_to=author if t.flags.get("ACK_LECTURE_MSS") else None,
        end_of_exchange=t.patient_reply_closed,
    )
    settled = patient_match.settle_patient(record, t.patient, "PID-3")
    return dataclasses.replace(record, patient=settled)


def _body(t: Transmission) -> str:
    """The mail's text: CORPSMAIL_PS for professionals, CORPSMAIL_PATIENT for the patient.

    The guide means each text for its readers. A transmission to both is one mail here (one commit, one
    (producer, MSH-10), one set of ZAM), so its body carries both texts, the professionals' first, rather
    than dropping the patient's; the same text given twice is written once. Without a text, a replacement
    or deletion gets the default body the guide asks the GESTIONNAIRE to write (the package's metadata
    alone says it to no human reader).
    """
    texts: tuple[str | None, ...]
    if t.route is Route.PATIENT_ONLY:
        texts = (t.body_patient,)
    elif t.route is Route.PROFESSIONALS_ONLY:
        texts = (t.body_professionals,)
    else:
        texts = (t.body_professionals, t.body_patient)
    return "\n\n".join(dict.fromkeys(text for text in texts if text)) or _DEFAULT_BODIES.get(t.action, "")


def _document(
    number: int,
    content: bytes,
    when: datetime,
    masks: tuple[Code, ...],
    action: DocumentAction,
    defaults: HeaderDefaults,
) -> Document:
    """A CDA of the message as a package document; its header says type, title, author and dates.

    A replacement must name the version it replaces (``relatedDocument`` RPLC): without it no recipient
    could tell which document to set aside, so the mail is refused rather than sent as a second original.
    """
    what = f"CDA {number} (OBX ED)"
    header = cda.read_header(content, what=what)
    if action is DocumentAction.REPLACEMENT and not header.replaces:
        raise Hl7MailError(
            f"{what}: a replacement (MDM^T10, OBX-11 = C) must name the document it replaces "
            "(relatedDocument typeCode RPLC / parentDocument id)"
        )
    given = Document(
        filename=f"DOC{number:04}.XML",
        content=content,
        mime_type="text/xml",
        title="",
        type_code=Code("", "", xds.LOINC_OID),
        creation_time=when,
        unique_id=cda.document_id(content),
        confidentiality=masks,
        action=action,
        class_code=defaults.class_code,
        format_code=defaults.format_code,  # an N1's header says XDS-SD PDF, which wins
    )
    return cda.apply_header(given, header)
