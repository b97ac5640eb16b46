"""One patient per message: the patient a message is sent for against the patients its documents name.

MSSanté allows one patient per message (ECO.2.1.2) and a receiver files every CDA under the INS it reads
in the header, whatever the envelope says. Outbound, the patient the sender declares (a patient file,
``X-MSSGW-Patient``, the package's METADATA.XML) must therefore be the one each CDA names: same INS
matricule and OID, same four traits (``mappers.identity``, the rule the inbound checks use too). Pure;
INS values appear masked only, since the sentences end up in replies and logs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from mappers import cda, xdm
from mappers.documents import Document
from mappers.errors import MappingError
from mappers.headers import CDA_MIME_TYPES
from mappers.headers import is_cda as is_cda_document
from mappers.identity import Difference, differences
from mappers.patient import Patient
from mappers.records import Attachment, MessageRecord
from mappers.safe_xml import XmlSyntaxError


class PatientMismatchError(MappingError):
    """A message whose documents name another patient than the one it is sent for (or than each other)."""


@dataclass(frozen=True, slots=True)
class NamedPatient:
    """A patient as one part of a message names it: ``where`` is the file, ``patient`` None without INS."""

    where: str
    patient: Patient | None


def _read(where: str, content: bytes) -> NamedPatient:
    try:
        header = cda.read_header(content, what=where)
    except MappingError as error:
        raise PatientMismatchError(f"{where}: {error}") from error
    return NamedPatient(where, header.patient)


def document_patients(documents: Sequence[Document]) -> list[NamedPatient]:
    """The patient each CDA among ``documents`` names (PDFs and other formats name none)."""
    return [_read(d.filename or d.unique_id, d.content) for d in documents if is_cda_document(d)]


def _attachment_patients(attachment: Attachment) -> list[NamedPatient]:
    name = attachment.filename
    if name.casefold() == xdm.PACKAGE_FILENAME.casefold():
        package = xdm.parse_package(attachment.content)
        inside = document_patients(package.documents)
        return [
            NamedPatient(f"{name} METADATA.XML", package.patient),
            *(NamedPatient(f"{name} {n.where}", n.patient) for n in inside),
        ]
    if attachment.content_type.lower() not in CDA_MIME_TYPES:
        return []
    try:
        header = cda.read_header(attachment.content, what=name)
    except (cda.CdaError, XmlSyntaxError):
        # XML that is no CDA (another root, or not even well-formed): it names no patient to a receiver.
        # Unsafe XML still refuses the message.
        return []
    return [NamedPatient(name, header.patient)]


def message_patients(record: MessageRecord) -> list[NamedPatient]:
    """Every patient a message names by itself: its package's METADATA.XML and CDAs, bare CDA attachments.

    A record parsed from MIME has its package's documents in ``documents`` and the METADATA.XML patient in
    ``patient``; a record being built (``mssgw send``) may still carry an ``IHE_XDM.zip`` attachment.
    """
    named: list[NamedPatient] = []
    if record.documents and record.patient is not None:
        named.append(NamedPatient(xdm.PACKAGE_FILENAME + " METADATA.XML", record.patient))
    named.extend(document_patients(record.documents))
    for attachment in record.attachments:
        named.extend(_attachment_patients(attachment))
    return named


def describe(named: NamedPatient, declared_as: str, found: Sequence[Difference]) -> str:
    """``cr.xml: birth name DUPONT in X-MSSGW-Patient, MARTIN in the document; …``: both values."""
    return f"{named.where}: " + "; ".join(
        f"{d.item} {d.declared} in {declared_as}, {d.named} in the document" for d in found
    )


def one_patient(declared: Patient | None, declared_as: str, named: Sequence[NamedPatient]) -> Patient | None:
    """The message's one patient: ``declared``, else the first document's; every other must be the same.

    Raises ``PatientMismatchError`` listing, for each document that disagrees, every item and both values;
    a CDA with no INS identifier cannot be matched and is refused too.
    """
    reference, reference_as = declared, declared_as
    problems: list[str] = []
    for item in named:
        if item.patient is None:
            problems.append(f"{item.where}: the document names no patient (no INS identifier)")
            continue
        if reference is None:
            reference, reference_as = item.patient, item.where
            continue
        found = differences(reference, item.patient)
        if found:
            problems.append(describe(item, reference_as, found))
        else:
            reference = _completed(reference, item.patient)
    if problems:
        raise PatientMismatchError("one patient per message: " + " | ".join(problems))
    return reference


def _completed(patient: Patient, same: Patient) -> Patient:
    """``patient`` with the IPP and birth place a document about the same patient gives and it lacks:
    the receiver's METADATA.XML (sourcePatientId, PID-11) then says what the CDA says."""
    take_ipp = not patient.local_id and bool(same.local_id)
    return replace(
        patient,
        local_id=same.local_id if take_ipp else patient.local_id,
        local_id_root=same.local_id_root if take_ipp else patient.local_id_root,
        birth_place_code=patient.birth_place_code or same.birth_place_code,
    )


def settle_patient(record: MessageRecord, declared: Patient | None, declared_as: str) -> Patient | None:
    """``one_patient`` of everything ``record`` carries; ``declared`` defaults to nothing declared."""
    return one_patient(declared, declared_as, message_patients(record))
