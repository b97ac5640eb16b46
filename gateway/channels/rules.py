"""Rules on outgoing mail to patient addresses (``<matricule>@patient.mssante.fr``), as pure verdicts.

Checked before a message to a patient is committed, by ``mssgw send``, the store API and the SMTP
submission listener alike: the address must be a valid citizen address; the message must carry the
patient's qualified INS (ECO.2.2.6, ECO.2.4.2) matching that address; test and demonstration INS are for
test mode only; a document hidden from the patient (INVISIBLE_PATIENT, MSSANTE.md §7.14) never goes; a
PDF or CDA goes in IHE_XDM.zip, never bare (ECO.2.1.1); Mon Espace Santé takes 25 MB at most (§9). Each
refusal is a sentence naming what is missing, with the SMTP code to answer it; sentences never show a
full INS.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mappers import ins, xds
from mappers.patient import Sex
from mappers.records import Attachment, MessageRecord


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a message is refused: the SMTP reply code, the RFC 3463 code and a sentence to act on."""

    code: int
    enhanced: str
    text: str

    @property
    def smtp_reply(self) -> str:
        return f"{self.code} {self.enhanced} {self.text}"


def patient_recipients(recipients: Sequence[str]) -> list[str]:
    """The recipients on the citizen domain, whatever their local part."""
    return [address for address in recipients if ins.is_citizen_address(address)]


def _missing_traits(record: MessageRecord) -> list[str]:
    patient = record.patient
    if patient is None:
        return ["the patient's identity (matricule, OID, birth name, first given name, birth date, sex)"]
    checks = (
        ("INS matricule", bool(patient.matricule)),
        ("INS OID", bool(patient.oid)),
        ("birth name", bool(patient.birth_name)),
        ("first given name", bool(patient.given_name)),
        ("birth date", patient.birth_date is not None),
        ("sex", patient.sex is not Sex.UNKNOWN),
    )
    return [name for name, present in checks if not present]


_HEALTH_DOCUMENT_TYPES = frozenset(
    {"application/pdf", "text/xml", "application/xml", "application/hl7-v3+xml"}
)


def _is_health_document(attachment: Attachment) -> bool:
    """A PDF or a CDA: what a professional sends a patient as a document, never a bare file (ECO.2.1.1)."""
    return attachment.content_type.lower() in _HEALTH_DOCUMENT_TYPES


def check_patient_mail(
    record: MessageRecord, recipients: Sequence[str], size: int, *, test_mode: bool, max_size: int
) -> Refusal | None:
    """The first rule a message to patient addresses breaks, or ``None`` when it may go."""
    citizens = patient_recipients(recipients)
    if not citizens:
        return None
    matricules = []
    for address in citizens:
        try:
            matricules.append(ins.parse_citizen_address(address).value)
        except ins.InsError as error:
            return Refusal(
                553,
                "5.1.3",
                f"recipient {ins.mask_address(address)} is not a valid patient address: {error}",
            )
    patient = record.patient
    missing = _missing_traits(record)
    if patient is None or missing:
        return Refusal(
            550,
            "5.7.1",
            "mail to a patient address needs the patient's qualified INS; missing: " + ", ".join(missing),
        )
    complaint = ins.check_patient_id(patient.matricule, patient.oid)
    if complaint:
        return Refusal(550, "5.7.1", f"mail to a patient address needs a qualified INS: {complaint}")
    for address, matricule in zip(citizens, matricules, strict=True):
        if ins.normalize(patient.matricule) != matricule:
            return Refusal(
                550,
                "5.7.1",
                f"recipient {ins.mask_address(address)} is not the patient of this message "
                f"(INS {ins.mask(patient.matricule)}): one patient per message",
            )
    if ins.is_test_oid(patient.oid) and not test_mode:
        return Refusal(
            550,
            "5.7.1",
            f"the patient's INS comes from the {ins.oid_name(patient.oid)} authority "
            f"({patient.oid.strip()}), which is for test data only; refused unless gateway.test_mode = true",
        )
    for document in record.documents:
        if any(code.code == xds.INVISIBLE_PATIENT.code for code in document.confidentiality):
            return Refusal(
                550,
                "5.7.1",
                f"document {document.title!r} ({document.filename}) is marked INVISIBLE_PATIENT (not "
                "visible to the patient) and is never sent to a patient address",
            )
    bare = [a.filename for a in record.attachments if _is_health_document(a)]
    if bare and not record.documents:
        return Refusal(
            554,
            "5.6.0",
            f"{', '.join(bare)}: a health document to a patient travels in IHE_XDM.zip with its metadata "
            "(ECO.2.1.1); give it as a document with its type (mssgw send --doc FILE --type-code "
            "--type-label, or X-MSSGW-Document-Type on submission), not as a bare attachment",
        )
    if size > max_size:
        return Refusal(
            552,
            "5.3.4",
            f"message of {size} bytes is larger than the {max_size} bytes accepted for a patient address "
            "(Mon Espace Santé limit, channels.patient_max_size)",
        )
    return None
