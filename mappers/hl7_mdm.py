"""One received mail's document → the MDM (HL7 v2.6) the hospital's software (DPI, RIS) is handed.

The ANS volet "Transmission au LPS de documents CDA provenant d'un courriel MSSanté" (flux 6): the PFI
unpacks the IHE_XDM.zip of a mail received on a BAL applicative and sends each CDA on its own, as
``MDM^T02`` (original), ``MDM^T10`` (replacement) or ``MDM^T04`` (deletion), with the patient of the CDA
header, the mail's sender, recipients, subject and body, and the MetaDMPMSS masks of the package. What the
package asks (``DocumentAction``) is read by ``mappers.metadata_read.document_actions``. The field mapping is
in docs/hl7-consumers.md. Pure: no clock, no socket; the caller gives the time and the control id.

Public API (stable):
    build_mdm(mail: MessageRecord, document: Document, *, header: MdmHeader, control_id: str,
              now: datetime, action: DocumentAction = ORIGINAL,
              previous_masks: frozenset[str] | None = None) -> Mdm
    masks_sent(payload) -> frozenset[str]
    cda_documents(mail: MessageRecord) -> tuple[Document, ...]     # the documents that become MDMs
    control_id_for(mail: MessageRecord, document: Document, action: DocumentAction) -> str
    MdmHeader(sending_application, sending_facility, receiving_application, receiving_facility,
              processing_id="P", charset="UNICODE UTF-8")
    Mdm(.control_id, .event, .document_id, .text, .replaces, .encode() -> bytes)
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Final

from mappers import cda, ins, xds
from mappers.documents import Code, Document
from mappers.er7 import escape, segment, timestamp
from mappers.errors import MappingError
from mappers.hl7_transmission import CHARSETS
from mappers.metadata_read import DocumentAction
from mappers.patient import Patient, Sex
from mappers.records import MessageRecord
from mappers.safe_xml import XmlSyntaxError

VERSION: Final = "2.6"
#: MSH-21, as the volet gives it: entity identifier 1.1, namespace CISIS_CDA_HL7_LPS.
PROFILE: Final = "1.1^CISIS_CDA_HL7_LPS"
#: MSH-18 values the volet allows.
ALLOWED_CHARSETS: Final = ("UNICODE UTF-8", "8859/15")
#: event (MSH-9.2), ORC-1 order control, OBX-11 result status (HL7 tables 0119 and 0085).
_EVENTS: Final = {
    DocumentAction.ORIGINAL: ("T02", "NW", "F"),
    DocumentAction.REPLACEMENT: ("T10", "RO", "C"),
    DocumentAction.DELETION: ("T04", "CA", "D"),
}
#: The MetaDMPMSS OBX the volet requires, in its order, with its labels.
MASK_FLAGS: Final = (
    ("MASQUE_PS", "Masqué aux professionnels de Santé"),
    ("INVISIBLE_PATIENT", "Document Non Visible par le patient"),
    ("INVISIBLE_REP_LEGAUX", "Non visible par les représentants Légaux du patient"),
)
_MODIFIED: Final = ("MODIF_CONF_CODE", "Modification Confidentiality Code")
#: OBR-4.3 / OBX-3.3: the coding system names the volet uses for document types (else the OID itself).
_CODING_SYSTEMS: Final = {xds.LOINC_OID: "LN", "1.2.250.1.213.1.1.4.12": "TRE_A05"}


class MdmError(MappingError):
    """A document that cannot become an MDM (not a CDA, no INS, a replacement that names no parent …)."""


@dataclass(frozen=True, slots=True)
class MdmHeader:
    """MSH-3/4 (this gateway), MSH-5/6 (the consumer), MSH-11 and MSH-18, as configured."""

    sending_application: str
    sending_facility: str
    receiving_application: str
    receiving_facility: str
    processing_id: str = "P"
    charset: str = "UNICODE UTF-8"


@dataclass(frozen=True, slots=True)
class Mdm:
    """One MDM: ER7 text (segments ended by CR) and what the store and the ACK matching need."""

    control_id: str
    event: str
    document_id: str
    text: str
    charset: str = "UNICODE UTF-8"
    replaces: str = ""
    """TXA-13, the replaced document's id (empty for a T02): the store keeps a T10 behind its original."""

    def encode(self) -> bytes:
        """The bytes of the MLLP block, in the MSH-18 character set (8859/15: what it lacks becomes ``?``).

        Only names, subject and addresses can lose characters: the CDA and the body travel in base64.
        """
        return self.text.encode(CHARSETS[self.charset], errors="replace")


def cda_documents(mail: MessageRecord) -> tuple[Document, ...]:
    """The package's CDA documents, in package order: each becomes one MDM (PDF copies stay in the mail)."""
    return tuple(d for d in mail.documents if d.content and cda.is_clinical_document(d.content))


def control_id_for(mail: MessageRecord, document: Document, action: DocumentAction) -> str:
    """A 20-character MSH-10 derived from the mail and the document, the same when the MDM is sent again,
    so a consumer that keeps control ids can recognise a resend after a crash."""
    seed = "|".join([mail.message_id or "", document.unique_id, action.value, mail.subject])
    return hashlib.sha256(seed.encode("utf-8", "surrogatepass")).hexdigest()[:20].upper()


def build_mdm(
    mail: MessageRecord,
    document: Document,
    *,
    header: MdmHeader,
    control_id: str,
    now: datetime,
    action: DocumentAction = DocumentAction.ORIGINAL,
    previous_masks: frozenset[str] | None = None,
) -> Mdm:
    """The MDM for ``document`` of ``mail``; ``previous_masks`` are the MASQUE_PS … flags set on the version
    this one replaces, when the caller knows them (MODIF_CONF_CODE is ``Y`` when they changed).

    Raises:
        MdmError: the document is not a readable CDA, names no INS, or is a replacement without the
            replaced document's id (TXA-13 is required for T10).
    """
    if header.charset not in ALLOWED_CHARSETS:
        raise MdmError(f"MSH-18 {header.charset!r} is not one of {', '.join(ALLOWED_CHARSETS)}")
    if not control_id:
        raise MdmError("MSH-10 (message control id) is empty")
    cda_header = _cda_header(document)
    patient = _patient(cda_header, mail.patient)
    document_id = cda_header.unique_id or document.unique_id
    if not document_id:
        raise MdmError(f"{document.filename}: the CDA has no id (TXA-12)")
    if action is DocumentAction.REPLACEMENT and not cda_header.replaces:
        raise MdmError(f"{document.filename}: a replacement must name the document it replaces (CDA RPLC)")
    event, order_control, status = _EVENTS[action]
    kind = document.type_code if document.type_code.code else (cda_header.code or Code("", "", ""))
    coded = _coded(kind)
    e = escape
    when = timestamp(now)
    segments = [
        segment(
            "MSH", "^~\\&", e(header.sending_application), e(header.sending_facility),
            e(header.receiving_application), e(header.receiving_facility), when, "",
            f"MDM^{event}^MDM_T02", e(control_id), e(header.processing_id), VERSION,
            "", "", "", "", "FRA", header.charset, "", "", PROFILE,
        ),
        segment("EVN", "", when),
        _pid(patient),
        segment("PV1", "1", "N"),
        segment("ORC", order_control),
        segment("OBR", "1", "", "", coded),
        segment(
            "TXA", "1", e(kind.code), "TEXT", *[""] * 8, _document_number(document_id),
            _document_number(cda_header.replaces or ""), "", "", "", "AU",
        ),
        _obx(1, "ED", coded, "^text^XML^Base64^" + _base64(document.content), status),
        *_participants(mail),
        _obx(
            2, "ED", f"{e(mail.message_id or '')}^{e(mail.subject)}",
            "^text^^Base64^" + _base64(mail.body_text.encode("utf-8")), "F",
        ),
        *_masks(document, action, previous_masks),
    ]  # fmt: skip
    text = "\r".join(segments) + "\r"
    return Mdm(control_id, event, document_id, text, header.charset, cda_header.replaces or "")


def _base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _cda_header(document: Document) -> cda.CdaHeader:
    try:
        return cda.read_header(document.content, what=document.filename or "the document")
    except (XmlSyntaxError, cda.CdaError) as error:
        raise MdmError(f"{document.filename}: not a CDA the consumer can be given: {error}") from error


def _patient(cda_header: cda.CdaHeader, declared: Patient | None) -> Patient:
    """The CDA's patient (PID-3 must be the CDA's ids), its missing traits taken from METADATA.XML."""
    named = cda_header.patient
    if named is None or not named.matricule:
        raise MdmError("the CDA header names no INS: PID-3 cannot be written")
    if declared is None or declared.matricule != named.matricule or declared.oid != named.oid:
        return named
    return replace(
        named,
        birth_name=named.birth_name or declared.birth_name,
        given_name=named.given_name or declared.given_name,
        birth_date=named.birth_date or declared.birth_date,
        sex=named.sex if named.sex is not Sex.UNKNOWN else declared.sex,
        used_name=named.used_name or declared.used_name,
        other_given_names=named.other_given_names or declared.other_given_names,
        birth_place_code=named.birth_place_code or declared.birth_place_code,
    )


def _pid(patient: Patient) -> str:
    """PID per PAM FR and the CI-SIS INS annex: INS (type INS) then the local id (PI), L and D names."""
    e = escape
    authority = "ASIP-SANTE-" + (ins.oid_name(patient.oid) or "INS")
    ids = [f"{e(patient.matricule)}^^^{e(authority)}&{e(patient.oid)}&ISO^INS"]
    if patient.local_id and patient.local_id_root:
        ids.append(f"{e(patient.local_id)}^^^&{e(patient.local_id_root)}&ISO^PI")
    names = [f"{e(patient.birth_name)}^{e(patient.given_name)}^{e(patient.other_given_names or '')}^^^^L"]
    if patient.used_name:
        names.append(f"{e(patient.used_name)}^{e(patient.given_name)}^^^^^D")
    birth_place = f"^^^^^^BDL^^{e(patient.birth_place_code)}" if patient.birth_place_code else ""
    return segment(
        "PID", "", "", "~".join(ids), "", "~".join(names), "",
        xds.format_date(patient.birth_date) if patient.birth_date else "", patient.sex.value,
        "", "", birth_place,
    )  # fmt: skip


def _coded(code: Code) -> str:
    """CWE code^label^system, the system named as the volet names it (LN, TRE_A05)."""
    system = _CODING_SYSTEMS.get(code.scheme, code.scheme)
    return f"{escape(code.code)}^{escape(code.label)}^{escape(system)}"


def _document_number(identifier: str) -> str:
    """TXA-12/13 (EI): ``extension^^root^ISO`` when the CDA id has an extension, else the root alone."""
    root, _, extension = identifier.partition("^")
    if not root:
        return ""
    return f"{escape(extension)}^^{escape(root)}^ISO" if extension else escape(root)


def _obx(number: int, value_type: str, identifier: str, value: str, status: str) -> str:
    return segment("OBX", str(number), value_type, identifier, "", value, "", "", "", "", "", status)


def _prt(role: str, label: str, address: str) -> str:
    """A PRT (pre-adopted from v2.9) whose only known part is the mail address in PRT-15."""
    return segment(
        "PRT", "", "UC", "", f"{role}^{label}^participation", *[""] * 10, f"^^X.400^{escape(address)}"
    )


def _participants(mail: MessageRecord) -> list[str]:
    """Sender (SB), each recipient of the mail (RCT), and the reply-to address (REPLY), as the mail says."""
    prts = [_prt("SB", "Send by", mail.author.address)]
    prts += [_prt("RCT", "Result Copies To", box.address) for box in (*mail.to, *mail.cc)]
    if mail.reply_to is not None:
        prts.append(_prt("REPLY", "Reply To", mail.reply_to.address))
    return prts


def masks_sent(payload: bytes) -> frozenset[str]:
    """The MASQUE_PS … flags an MDM we built set to ``Y``: what a later replacement's MODIF_CONF_CODE is
    judged against. Only the flag OBX are read; their names and values are ASCII in every MSH-18 set."""
    text = payload.decode("latin-1")
    names = {name for name, _ in MASK_FLAGS}
    found = set()
    for line in text.split("\r"):
        fields = line.split("|")
        if fields[0] == "OBX" and len(fields) > 5:
            name = fields[3].split("^")[0]
            if name in names and fields[5].split("^")[0] == "Y":
                found.add(name)
    return frozenset(found)


def _masks(document: Document, action: DocumentAction, previous: frozenset[str] | None) -> list[str]:
    """OBX 3–6: MASQUE_PS, INVISIBLE_PATIENT, INVISIBLE_REP_LEGAUX from the confidentiality codes, then
    MODIF_CONF_CODE (``Y`` only for a replacement whose masks differ from the replaced version's)."""
    masks = frozenset(c.code for c in document.confidentiality if c.code in xds.MASKING_CODES)
    changed = action is DocumentAction.REPLACEMENT and previous is not None and previous != masks
    flags = [(name, label, name in masks) for name, label in MASK_FLAGS] + [(*_MODIFIED, changed)]
    return [
        _obx(
            number,
            "CWE",
            f"{name}^{escape(label)}^MetaDMPMSS",
            f"{'Y' if value else 'N'}^^expandedYes-NoIndicator",
            "F",
        )
        for number, (name, label, value) in enumerate(flags, start=3)
    ]
