"""Submission instructions: ``X-MSSGW-*`` header fields with which internal software asks the gateway to
build the MSSanté package (patient, document type, masking) for the PDFs it attaches, or name the patient
of a message without documents (for the patient-mail rules). Intake consumes them from internal senders
(the submission listener); they never reach a peer (a message is stored without them). Pure: the caller
gives the clock and host name; a bad or unknown instruction raises ``InstructionError`` naming the field, a
patient the documents contradict ``PatientMismatchError``.

    X-MSSGW-Patient: matricule=1880799999999; oid=1.2.250.1.213.1.4.8; birth-name=DUPONT;
        given-name=Marie; birth-date=1988-07-14; sex=F
    X-MSSGW-Document-Type: 11490-0; label="Lettre de liaison médicale";
        facility-type="SA01^Etablissement public de santé";
        practice-setting="ETABLISSEMENT^Etablissement de santé"; class-code="10^Compte rendu";
        content-type-code="04^Hospitalisation de jour"
    X-MSSGW-Author: rpps=99700367909; family=DOC0036790; given=KIT;
        specialty="G15_10/SM44^Médecin - Radio-diagnostic (SM)^1.2.250.1.213.1.1.4.5";
        role="10^Médecin^1.2.250.1.71.1.2.7"; institution-id=499700367909006; institution-name=BCOM
    X-MSSGW-Confidentiality: INVISIBLE_PATIENT, MASQUE_PS

The CDA R2 N1 built around each PDF needs what the CI-SIS makes mandatory (``cda.HeaderValue``): what the
fields leave unset comes from the ``[documents]`` settings (``HeaderDefaults``); a value missing from both
is refused naming the field parameter and the setting that give it. ``X-MSSGW-Author`` names the whole
person: it takes none of the default author's traits, only the institution when it gives none.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from datetime import date, datetime
from email.parser import BytesHeaderParser
from email.policy import default

from mappers import cda, headers, ins, patient_match, xds
from mappers.documents import Author, Code, HeaderDefaults
from mappers.errors import MappingError
from mappers.mime import build_message
from mappers.patient import Patient, Sex
from mappers.pdf_copies import PDF_MIME_TYPE
from mappers.records import MessageRecord

PATIENT = "X-MSSGW-Patient"
DOCUMENT_TYPE = "X-MSSGW-Document-Type"
CONFIDENTIALITY = "X-MSSGW-Confidentiality"
AUTHOR = "X-MSSGW-Author"
KNOWN_FIELDS = (PATIENT, DOCUMENT_TYPE, CONFIDENTIALITY, AUTHOR)
AUTHOR_PARAMETERS = ("rpps", "family", "given", "specialty", "role", "institution-id", "institution-name")
DOCUMENT_TYPE_PARAMETERS = ("label", "facility-type", "practice-setting", "class-code", "content-type-code")
WRAPPER_SOURCES: dict[cda.HeaderValue, tuple[str, str, str]] = {
    cda.HeaderValue.AUTHOR_RPPS: (AUTHOR, "rpps", "author_rpps"),
    cda.HeaderValue.AUTHOR_FAMILY: (AUTHOR, "family", "author_family"),
    cda.HeaderValue.INSTITUTION_ID: (AUTHOR, "institution-id", "institution_id"),
    cda.HeaderValue.SIGNER_RPPS: (AUTHOR, "rpps", "author_rpps"),
    cda.HeaderValue.SIGNER_FAMILY: (AUTHOR, "family", "author_family"),
    cda.HeaderValue.PRACTICE_SETTING: (DOCUMENT_TYPE, "practice-setting", "practice_setting"),
    cda.HeaderValue.FACILITY_TYPE: (DOCUMENT_TYPE, "facility-type", "facility_type"),
}
"""Where each mandatory header value is given: field, its parameter, and the ``[documents]`` key."""
_PARAMETER = re.compile(r'\s*([A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)\s*(?:;|$)')
_SUBMISSION_HEADER = re.compile(rb"^x-mssgw-[A-Za-z0-9-]*:", re.IGNORECASE)
_MAY_INSTRUCT = re.compile(rb"(?:^|[\r\n])x-mssgw-", re.IGNORECASE)
"""A line of the header block starting as our fields do (the email package ends a line at CR, LF or
CRLF): without one, the message carries no instruction and its header need not be parsed."""


class InstructionError(MappingError):
    """An ``X-MSSGW-*`` field the gateway cannot follow; the message says which and why."""


def apply_instructions(
    raw: bytes,
    record: MessageRecord,
    *,
    nil_reference: str,
    hostname: str,
    now: datetime,
    defaults: HeaderDefaults | None = None,
) -> tuple[bytes, MessageRecord]:
    """The message to store and its record: rebuilt with an IHE_XDM.zip when ``X-MSSGW-Patient`` asks for
    it (and the message carries no package yet), otherwise as submitted without its ``X-MSSGW-*`` fields.

    An instruction is never dropped silently: an unknown ``X-MSSGW-*`` field, or masking with no PDF to
    package, is refused, since the sender believes it was followed (a document meant to be hidden from the
    patient would reach Mon Espace Santé unmasked).
    """
    block = headers.header_block(raw)
    if _MAY_INSTRUCT.search(block) is None:
        # Most mail asks nothing: the header parse below was a tenth of a 1 KiB message's intake (issue 16).
        return raw, record
    fields = BytesHeaderParser(policy=default).parsebytes(block)
    _check_names(fields.keys())
    patient_field, type_field = fields.get(PATIENT), fields.get(DOCUMENT_TYPE)
    author_field = fields.get(AUTHOR)
    masks = _masks(fields.get_all(CONFIDENTIALITY) or [])
    if patient_field is None:
        for name in (DOCUMENT_TYPE, CONFIDENTIALITY, AUTHOR):
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
    if author_field is not None and (record.documents or not pdfs):
        raise InstructionError(
            f"{AUTHOR}: names the author of the PDFs the gateway packages, and this message has none "
            "(a message with its own IHE_XDM.zip names its author in METADATA.XML and the CDA)"
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
    type_values = _parameters(rest, DOCUMENT_TYPE, DOCUMENT_TYPE_PARAMETERS)
    label = type_values.get("label", "")
    if not code.strip() or not label:
        raise InstructionError(f'{DOCUMENT_TYPE}: give the LOINC code and its label (11490-0; label="…")')
    type_code = Code(code.strip(), label, xds.LOINC_OID)
    defaults = defaults or HeaderDefaults()
    author = _author(str(author_field) if author_field is not None else "").filled_from(defaults.author)
    facility = _code(type_values, "facility-type", xds.FACILITY_TYPE_OID) or defaults.facility_type
    setting = _code(type_values, "practice-setting", xds.PRACTICE_SETTING_OID) or defaults.practice_setting
    class_code = _code(type_values, "class-code", xds.CLASS_CODE_OID) or defaults.class_code
    content_type = _code(type_values, "content-type-code", xds.CONTENT_TYPE_OID) or defaults.content_type
    when = record.date or now
    try:
        documents = tuple(
            cda.pdf_document(
                pdf.content,
                patient,
                title=label,
                type_code=type_code,
                effective_time=when,
                document_id=cda.document_id(pdf.content),
                author=author,
                class_code=class_code,
                confidentiality=masks,
                healthcare_facility_type=facility,
                practice_setting=setting,
            )
            for pdf in pdfs
        )
    except cda.IncompleteHeaderError as error:
        raise _incomplete(error) from error
    rebuilt = dataclasses.replace(
        record,
        patient=patient,
        documents=documents,
        attachments=tuple(a for a in record.attachments if a.content_type != PDF_MIME_TYPE),
        problems=(),
    )
    message = build_message(
        rebuilt, nil_reference=nil_reference, hostname=hostname, now=when, content_type=content_type
    )
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


def _incomplete(error: cda.IncompleteHeaderError) -> InstructionError:
    """The refusal naming, for each missing value, the field parameter and the setting that give it;
    short enough for one SMTP reply line (the values' XPaths are in the documentation)."""
    by_field: dict[str, list[str]] = {}
    keys: list[str] = []
    for value in error.missing:
        field, parameter, key = WRAPPER_SOURCES[value]
        if f"{parameter}=" not in by_field.setdefault(field, []):
            by_field[field].append(f"{parameter}=")
        keys.append(key)
    fields = "; ".join(f"{field} {', '.join(parameters)}" for field, parameters in by_field.items())
    return InstructionError(
        "the CDA R2 N1 around the PDF lacks values the CI-SIS makes mandatory (no nullFlavor): give "
        f"{fields} (or the settings documents.{', documents.'.join(dict.fromkeys(keys))})"
    )


def _author(text: str) -> Author:
    """``X-MSSGW-Author: rpps=…; family=…; …`` (empty: no author named, the settings' is used)."""
    values = _parameters(text, AUTHOR, AUTHOR_PARAMETERS)
    try:
        rpps = xds.check_rpps(values["rpps"]) if values.get("rpps") else None
    except MappingError as error:
        raise InstructionError(f"{AUTHOR}: rpps: {error}") from error
    if values.get("given") and not values.get("family"):
        raise InstructionError(f"{AUTHOR}: family required with given (the CDA's name/family)")
    return Author(
        rpps=rpps,
        family_name=values.get("family") or None,
        given_name=values.get("given") or None,
        institution_name=values.get("institution-name") or None,
        institution_id=values.get("institution-id") or None,
        specialty=_code(values, "specialty", None, AUTHOR),
        role=_code(values, "role", None, AUTHOR),
    )


def _code(values: dict[str, str], name: str, scheme: str | None, field: str = DOCUMENT_TYPE) -> Code | None:
    if not values.get(name):
        return None
    try:
        return xds.parse_code_option(values[name], f"{field}: {name}", scheme)
    except MappingError as error:
        raise InstructionError(str(error)) from error


def _parameters(text: str, field: str, known: tuple[str, ...] | None = None) -> dict[str, str]:
    """``a=1; b="x; y"`` → {"a": "1", "b": "x; y"}; a name outside ``known`` (when given) is refused."""
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
    unknown = [name for name in values if known is not None and name not in known]
    if unknown:
        raise InstructionError(f"{field}: unknown parameter {unknown[0]!r} (known: {', '.join(known or ())})")
    return values


def strip_submission_headers(raw: bytes) -> bytes:
    """Remove the ``X-MSSGW-*`` header fields (and their folded lines) from the header block only."""
    return headers.remove_fields(raw, is_submission_field)


def is_submission_field(field: bytes) -> bool:
    """Whether a header field (its raw bytes) is one of ours, ``X-MSSGW-*``."""
    return _SUBMISSION_HEADER.match(field) is not None
