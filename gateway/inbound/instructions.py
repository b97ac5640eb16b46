"""Submission instructions: ``X-MSSGW-*`` header fields with which internal software asks the gateway to
build the MSSanté package (patient, document type, masking) for the PDFs it attaches, or name the patient
of a message without documents (for the patient-mail rules). Intake consumes them from internal senders
(the submission listener); they never reach a peer (a message is stored without them). Pure: the caller
gives the clock and host name; a bad or unknown instruction raises ``InstructionError`` naming the field, a
patient the documents contradict ``PatientMismatchError``.

    X-MSSGW-Patient: matricule=1880799999999; oid=1.2.250.1.213.1.4.8; birth-name=DUPONT;
        given-name=Marie; birth-date=1988-07-14; sex=F
    X-MSSGW-Document-Type: 11490-0; label="Lettre de liaison médicale"
    X-MSSGW-Confidentiality: INVISIBLE_PATIENT, MASQUE_PS
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from datetime import date, datetime
from email.parser import BytesHeaderParser
from email.policy import default

from mappers import cda, headers, ins, patient_match, xds
from mappers.documents import Code
from mappers.errors import MappingError
from mappers.mime import build_message
from mappers.patient import Patient, Sex
from mappers.pdf_copies import PDF_MIME_TYPE
from mappers.records import MessageRecord

PATIENT = "X-MSSGW-Patient"
DOCUMENT_TYPE = "X-MSSGW-Document-Type"
CONFIDENTIALITY = "X-MSSGW-Confidentiality"
KNOWN_FIELDS = (PATIENT, DOCUMENT_TYPE, CONFIDENTIALITY)
_PARAMETER = re.compile(r'\s*([A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)\s*(?:;|$)')
_SUBMISSION_HEADER = re.compile(rb"^x-mssgw-[A-Za-z0-9-]*:", re.IGNORECASE)


class InstructionError(MappingError):
    """An ``X-MSSGW-*`` field the gateway cannot follow; the message says which and why."""


def apply_instructions(
    raw: bytes, record: MessageRecord, *, nil_reference: str, hostname: str, now: datetime
) -> tuple[bytes, MessageRecord]:
    """The message to store and its record: rebuilt with an IHE_XDM.zip when ``X-MSSGW-Patient`` asks for
    it (and the message carries no package yet), otherwise as submitted without its ``X-MSSGW-*`` fields.

    An instruction is never dropped silently: an unknown ``X-MSSGW-*`` field, or masking with no PDF to
    package, is refused, since the sender believes it was followed (a document meant to be hidden from the
    patient would reach Mon Espace Santé unmasked).
    """
    fields = BytesHeaderParser(policy=default).parsebytes(headers.header_block(raw))
    _check_names(fields.keys())
    patient_field, type_field = fields.get(PATIENT), fields.get(DOCUMENT_TYPE)
    masks = _masks(fields.get_all(CONFIDENTIALITY) or [])
    if patient_field is None:
        for name in (DOCUMENT_TYPE, CONFIDENTIALITY):
            if fields.get(name) is not None:
                raise InstructionError(f"{name}: only with {PATIENT} (the patient of the documents)")
        return strip_submission_headers(raw), record
    patient = _patient(str(patient_field))
    # One patient per message: every CDA the message carries must name the patient of the field.
    patient_match.settle_patient(record, patient, PATIENT)
    pdfs = [a for a in record.attachments if a.content_type == PDF_MIME_TYPE]
    if masks and (record.documents or not pdfs):
        raise InstructionError(
            f"{CONFIDENTIALITY}: masks the PDFs the gateway packages, and this message has none "
            "(a message with its own IHE_XDM.zip carries its codes in METADATA.XML)"
        )
    if record.documents or not pdfs:
        # A message about a patient with no document to package (a text to Mon Espace Santé): the patient
        # is what the patient-mail rules check and what the store links the message to.
        return strip_submission_headers(raw), (
            record if record.documents else dataclasses.replace(record, patient=patient)
        )
    if type_field is None:
        raise InstructionError(f'{DOCUMENT_TYPE}: required with {PATIENT} (e.g. 11490-0; label="…")')
    code, _, rest = str(type_field).partition(";")
    label = _parameters(rest, DOCUMENT_TYPE).get("label", "")
    if not code.strip() or not label:
        raise InstructionError(f'{DOCUMENT_TYPE}: give the LOINC code and its label (11490-0; label="…")')
    type_code = Code(code.strip(), label, xds.LOINC_OID)
    when = record.date or now
    documents = tuple(
        cda.pdf_document(
            pdf.content,
            patient,
            title=label,
            type_code=type_code,
            effective_time=when,
            document_id=cda.document_id(pdf.content),
            confidentiality=masks,
        )
        for pdf in pdfs
    )
    rebuilt = dataclasses.replace(
        record,
        patient=patient,
        documents=documents,
        attachments=tuple(a for a in record.attachments if a.content_type != PDF_MIME_TYPE),
        problems=(),
    )
    message = build_message(rebuilt, nil_reference=nil_reference, hostname=hostname, now=when)
    # Boundaries derived from what was submitted: the same submission sent twice (a client that lost our
    # 250) is rebuilt into the same bytes, so de-duplication by Message-ID and digest still holds.
    seed = hashlib.sha256(raw).hexdigest()[:32]
    for index, part in enumerate(message.walk()):
        if part.is_multipart():
            part.set_boundary(f"=_mssgw_{seed}_{index}")
    return message.as_bytes(), rebuilt


def _check_names(names: list[str]) -> None:
    known = {name.casefold() for name in KNOWN_FIELDS}
    for name in names:
        if name.casefold().startswith("x-mssgw-") and name.casefold() not in known:
            raise InstructionError(f"{name}: unknown field (known: {', '.join(KNOWN_FIELDS)})")


def _masks(values: list[str]) -> tuple[Code, ...]:
    """``INVISIBLE_PATIENT, MASQUE_PS`` → the codes, in order, without repeats."""
    names = [n for value in values for n in re.split(r"[\s,;]+", str(value).strip()) if n]
    unknown = [n for n in names if n.upper() not in xds.MASKING_CODES]
    if unknown:
        raise InstructionError(
            f"{CONFIDENTIALITY}: {unknown[0]!r} is not one of {', '.join(sorted(xds.MASKING_CODES))}"
        )
    return tuple(xds.MASKING_CODES[n] for n in dict.fromkeys(n.upper() for n in names))


def _patient(text: str) -> Patient:
    values = _parameters(text, PATIENT)
    missing = [k for k in ("matricule", "birth-name", "given-name") if not values.get(k)]
    if missing:
        raise InstructionError(f"{PATIENT}: {', '.join(missing)} required")
    oid = values.get("oid", ins.NIR_OID)
    try:
        if oid != ins.NIA_OID:
            ins.parse_matricule(values["matricule"])
        birth = date.fromisoformat(values["birth-date"]) if values.get("birth-date") else None
        sex = Sex(values.get("sex", "U").upper())
    except (MappingError, ValueError) as error:
        raise InstructionError(f"{PATIENT}: {error} (birth-date is AAAA-MM-JJ, sex M/F/U)") from error
    if not ins.is_ins_oid(oid):
        raise InstructionError(f"{PATIENT}: oid {oid} is not an INS assigning authority")
    matricule = ins.normalize(values["matricule"])  # a Corsican 2a/2b travels upper case
    return Patient(matricule, oid, values["birth-name"], values["given-name"], birth, sex)


def _parameters(text: str, field: str) -> dict[str, str]:
    """``a=1; b="x; y"`` → {"a": "1", "b": "x; y"}."""
    values: dict[str, str] = {}
    position, text = 0, text.strip()
    while position < len(text):
        match = _PARAMETER.match(text, position)
        if match is None or match.end() == position:
            raise InstructionError(f"{field}: cannot read {text[position:][:30]!r} (write name=value; …)")
        value = match.group(2).strip()
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        values[match.group(1).lower()] = value
        position = match.end()
    return values


def strip_submission_headers(raw: bytes) -> bytes:
    """Remove the ``X-MSSGW-*`` header fields (and their folded lines) from the header block only."""
    return headers.remove_fields(raw, is_submission_field)


def is_submission_field(field: bytes) -> bool:
    """Whether a header field (its raw bytes) is one of ours, ``X-MSSGW-*``."""
    return _SUBMISSION_HEADER.match(field) is not None
