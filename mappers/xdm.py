"""IHE XDM packages (IHE_XDM.zip): build one for a patient's documents, read any one back and check it.

Outbound, ``build_package`` turns a record's patient and documents into the ZIP attached to the mail;
inbound, ``parse_package`` vets the archive (``mappers.archive``), reads every ``IHE_XDM/*/METADATA.XML`` and
reports inconsistencies (hash, size, patient) as ``problems`` instead of refusing: XDM expects a person to
reconcile them (MSSANTE.md §5.1, §5.8). Pure: bytes in, bytes or records out; never writes to disk.

Public API (stable):
    build_package(patient: Patient, documents: Sequence[Document], *, now: datetime | None = None,
                  source_id: str = DEFAULT_SOURCE_ID, unique_id: str | None = None,
                  author: Author | None = None, content_type: Code | None = None,
                  title: str | None = None, comments: str | None = None,
                  sender: str = "", application: str = "mssgw") -> bytes
    parse_package(data: bytes, *, limits: ArchiveLimits | None = None) -> XdmPackage
    XdmPackage(.patient, .documents, .submission, .problems, .cda_patient, .cda_codes, .cda_headers,
               .ins_qualified)
    package_cda_codes(package: XdmPackage) -> tuple[str, ...]
    package_filenames(documents: Sequence[Document]) -> tuple[str, ...]     # DOC0001.XML, DOC0002.PDF …
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Final

from mappers import cda, identity, ins, xds
from mappers.archive import ArchiveLimits, read_members, write_archive
from mappers.documents import Author, Code, Document, SubmissionSet
from mappers.errors import MappingError
from mappers.metadata import Entry, build_metadata, parse_metadata
from mappers.packagetext import index_htm, readme_txt
from mappers.patient import Patient, Sex
from mappers.safe_xml import XmlSyntaxError

SUBSET: Final = "SUBSET01"
PACKAGE_FILENAME: Final = "IHE_XDM.zip"
# A valid OID (2.25 = UUID arc) so that an unconfigured gateway still writes well-formed metadata;
# deployments should set their own sourceId OID.
DEFAULT_SOURCE_ID: Final = "2.25." + str(uuid.uuid5(uuid.NAMESPACE_URL, "urn:mssgw:source").int)

_METADATA = re.compile(r"^IHE_XDM/([^/]+)/METADATA\.XML$", re.IGNORECASE)
_XML_TYPES: Final = frozenset({"text/xml", "application/xml", "application/hl7-v3+xml"})
_EXTENSIONS: Final = {"application/pdf": "PDF", **dict.fromkeys(_XML_TYPES, "XML")}


class XdmError(MappingError):
    """A package that cannot be read as IHE XDM at all (no METADATA.XML, wrong root …)."""


class XdmBuildError(MappingError):
    """Records that cannot be packaged (no document, no patient id, naive times …)."""


@dataclass(frozen=True, slots=True)
class XdmPackage:
    """What a received IHE_XDM.zip says, and what is inconsistent in it.

    ``patient`` comes from METADATA.XML (patientId + sourcePatientInfo), ``cda_patient`` from the first CDA
    header. Documents carry their file name in the package (``DOC0001.XML``) as ``filename``. ``metadata``
    holds each subset's METADATA.XML as received, for readers that want the XDS metadata itself.
    """

    patient: Patient | None
    documents: tuple[Document, ...]
    submission: SubmissionSet | None
    problems: tuple[str, ...] = ()
    cda_patient: Patient | None = None
    cda_codes: tuple[str, ...] = field(default_factory=tuple)
    cda_headers: tuple[cda.CdaHeader, ...] = field(default_factory=tuple)
    metadata: tuple[bytes, ...] = field(default_factory=tuple)

    @property
    def ins_qualified(self) -> bool:
        """``X-MSS-INS: O``: every CDA holds a qualified INS (ECO.2.4.2); without CDA, the metadata does."""
        if self.cda_headers:
            return all(ins.is_qualified(header.patient) for header in self.cda_headers)
        return ins.is_qualified(self.patient)


def _extension(document: Document) -> str:
    known = _EXTENSIONS.get(document.mime_type.lower())
    if known:
        return known
    suffix = document.filename.rpartition(".")[2] if "." in document.filename else ""
    cleaned = "".join(ch for ch in suffix.upper() if ch.isascii() and ch.isalnum())[:3]
    return cleaned or "BIN"


def package_filenames(documents: Sequence[Document]) -> tuple[str, ...]:
    """ISO 9660 level 1 style names (8.3, upper case) used inside the package (MSSANTE.md §5.2)."""
    return tuple(f"DOC{n:04d}.{_extension(d)}" for n, d in enumerate(documents, start=1))


def _submission_unique_id(source_id: str, patient: Patient, documents: Sequence[Document], when: str) -> str:
    """A 2.25 OID derived from the inputs, so the same package built twice has the same id."""
    seed = "|".join([source_id, patient.oid, patient.matricule, when, *(d.unique_id for d in documents)])
    digest = hashlib.sha1(seed.encode("utf-8", "surrogatepass"), usedforsecurity=False).digest()
    return "2.25." + str(uuid.UUID(bytes=digest[:16], version=5).int)


def build_package(
    patient: Patient,
    documents: Sequence[Document],
    *,
    now: datetime | None = None,
    source_id: str = DEFAULT_SOURCE_ID,
    unique_id: str | None = None,
    author: Author | None = None,
    content_type: Code | None = None,
    title: str | None = None,
    comments: str | None = None,
    sender: str = "",
    application: str = "mssgw",
) -> bytes:
    """The IHE_XDM.zip bytes for one patient's documents (README.TXT, INDEX.HTM, SUBSET01/…).

    ``now`` (timezone-aware; default: the current time) is the submission time and the ZIP time stamp;
    given ``now``, the output is byte-for-byte reproducible. ``author`` defaults to the first document's.
    """
    if not documents:
        raise XdmBuildError("an XDM package needs at least one document")
    if not patient.matricule or not patient.oid:
        raise XdmBuildError("the patient has no INS matricule or no OID: patientId cannot be written")
    when = now or datetime.now(UTC)
    for document in documents:
        for label, moment in (
            ("creation_time", document.creation_time),
            ("service_start", document.service_start),
            ("service_stop", document.service_stop),
        ):
            if moment is not None and moment.tzinfo is None:
                raise XdmBuildError(f"{label} of {document.title!r} has no time zone")
        if not document.unique_id:
            raise XdmBuildError(f"document {document.title!r} has no unique id")
    if when.tzinfo is None:
        raise XdmBuildError("the submission time has no time zone")
    stamp = when.astimezone(UTC).strftime("%Y%m%d%H%M%S")
    submission = SubmissionSet(
        unique_id=unique_id or _submission_unique_id(source_id, patient, documents, stamp),
        source_id=source_id,
        submission_time=when,
        author=author or next((d.author for d in documents if d.author), None),
        content_type=content_type,
        title=title,
        comments=comments,
    )
    names = package_filenames(documents)
    metadata = build_metadata(patient, list(zip(documents, names, strict=True)), submission)
    folder = f"IHE_XDM/{SUBSET}/"
    members = [
        ("README.TXT", readme_txt(documents, names, when=when, sender=sender, application=application)),
        ("INDEX.HTM", index_htm(documents, names, folder=folder)),
        (folder + "METADATA.XML", metadata),
        *((folder + name, d.content) for name, d in zip(names, documents, strict=True)),
    ]
    return write_archive(members, when=when)


def _lookup(members: dict[str, bytes]) -> dict[str, str]:
    return {name.casefold(): name for name in members}


def _resolve(uri: str, subset: str, index: dict[str, str]) -> str | None:
    """The member a DocumentEntry URI names: relative to its subset, to IHE_XDM/, or to the root."""
    cleaned = uri.strip().replace("\\", "/").lstrip("./")
    for candidate in (f"IHE_XDM/{subset}/{cleaned}", f"IHE_XDM/{cleaned}", cleaned):
        found = index.get(candidate.casefold())
        if found:
            return found
    return None


def _check_entry(entry: Entry, content: bytes, where: str) -> list[str]:
    problems = []
    actual = hashlib.sha1(content, usedforsecurity=False).hexdigest()
    if entry.sha1 is None:
        problems.append(f"{where}: METADATA.XML gives no hash")
    elif entry.sha1 != actual:
        problems.append(f"{where}: SHA-1 in METADATA.XML is {entry.sha1}, the file's is {actual}")
    if entry.size is None:
        problems.append(f"{where}: METADATA.XML gives no size")
    elif entry.size != len(content):
        problems.append(f"{where}: size in METADATA.XML is {entry.size} bytes, the file has {len(content)}")
    return problems


def _identity(patient: Patient | None) -> str:
    if patient is None:
        return "no patient"
    return f"{ins.mask(patient.matricule)} ({ins.oid_name(patient.oid) or patient.oid})"


def _compare_traits(
    reference: Patient, other: Patient, where: str, *, present_only: bool = False
) -> list[str]:
    """Trait differences, named but not shown: problems may end up in logs (DESIGN.md §3.4)."""
    return [
        f"{where}: {d.item} differs from METADATA.XML"
        for d in identity.differences(reference, other, present_only=present_only)
        if d.item not in identity.INS_ITEMS
    ]


def _read_cda(document: Document, where: str, problems: list[str]) -> cda.CdaHeader | None:
    if document.mime_type.lower() not in _XML_TYPES:
        return None
    try:
        return cda.read_header(document.content, what=where)
    except XmlSyntaxError as error:
        problems.append(str(error))
    except cda.NotCdaError:
        pass  # other XML (a signature …): not a CDA, and nothing wrong with it
    except cda.CdaError as error:
        problems.append(f"{where}: {error}")
    return None


@dataclass(slots=True)
class _Reading:
    """What ``parse_package`` has gathered so far across subsets."""

    members: dict[str, bytes]
    index: dict[str, str]
    problems: list[str] = field(default_factory=list)
    documents: list[Document] = field(default_factory=list)
    headers: list[cda.CdaHeader] = field(default_factory=list)
    patient: Patient | None = None
    submission: SubmissionSet | None = None
    reference_id: str | None = None

    def add_subset(self, metadata_name: str, subset: str) -> None:
        metadata = parse_metadata(self.members[metadata_name])
        self.problems.extend(metadata.problems)
        self.submission = self.submission or metadata.submission
        if metadata.patient_id is None:
            self.problems.append(f"{metadata_name}: the SubmissionSet has no patientId")
        # ECO.2.1.2: the SubmissionSet patientId (of the first subset) names the patient.
        self.reference_id = self.reference_id or metadata.patient_id
        for entry in metadata.entries:
            self.add_entry(entry, subset)

    def add_entry(self, entry: Entry, subset: str) -> None:
        where = entry.uri or entry.document.unique_id or "a DocumentEntry"
        same_id = self.reference_id is None or (
            entry.patient_id is not None and entry.patient_id.strip() == self.reference_id.strip()
        )
        if entry.patient_id is None:
            self.problems.append(f"{where}: the DocumentEntry has no patientId")
        elif not same_id:
            self.problems.append(f"{where}: patientId differs from the SubmissionSet's")
        elif entry.patient and self.patient:
            # An entry may describe the patient less (a signature has no sourcePatientInfo): not another one.
            self.problems.extend(_compare_traits(self.patient, entry.patient, where, present_only=True))
        if same_id and self.patient is None:
            self.patient = entry.patient
        if entry.uri is None:
            self.problems.append(f"{where}: the DocumentEntry has no URI")
            return
        member = _resolve(entry.uri, subset, self.index)
        if member is None:
            self.problems.append(f"{where}: listed in METADATA.XML but missing from the archive")
            return
        content = self.members[member]
        self.problems.extend(_check_entry(entry, content, where))
        document = replace(entry.document, content=content)
        self.documents.append(document)
        header = _read_cda(document, where, self.problems)
        if header is not None:
            self.headers.append(header)
            self.problems.extend(_check_cda(header, document, self.patient, where))


def parse_package(data: bytes, *, limits: ArchiveLimits | None = None) -> XdmPackage:
    """Vet, read and cross-check an IHE_XDM.zip; raises only for unsafe or unreadable input.

    Unsafe archives raise ``UnsafeArchiveError``, unsafe XML ``UnsafeXmlError`` (also in a CDA), a package
    without METADATA.XML ``XdmError``; everything else inconsistent is listed in ``problems``.
    """
    members = read_members(data, limits=limits)
    found = sorted((name, match.group(1)) for name in members if (match := _METADATA.match(name)))
    if not found:
        raise XdmError("the archive has no IHE_XDM/<subset>/METADATA.XML: it is not an XDM package")
    reading = _Reading(members, _lookup(members))
    for metadata_name, subset in found:
        reading.add_subset(metadata_name, subset)
    patient = reading.patient
    if patient is None and reading.reference_id:
        patient = _bare_patient(reading.reference_id)
    problems = reading.problems
    if patient is not None:
        complaint = ins.check_patient_id(patient.matricule, patient.oid)
        if complaint:
            problems.append(f"METADATA.XML: {complaint}")
    headers = reading.headers
    return XdmPackage(
        patient=patient,
        documents=tuple(reading.documents),
        submission=reading.submission,
        problems=tuple(problems),
        cda_patient=next((h.patient for h in headers if h.patient), None),
        cda_codes=_unique(h.code.code for h in headers if h.code and h.code.code),
        cda_headers=tuple(headers),
        metadata=tuple(members[name] for name, _ in found),
    )


def _bare_patient(patient_id: str) -> Patient | None:
    """The patient of a SubmissionSet patientId when no DocumentEntry describes the traits."""
    try:
        matricule, oid, _ = xds.parse_cx(patient_id)
    except xds.MetadataValueError:
        return None
    return Patient(matricule, oid, "", "", None, Sex.UNKNOWN)


def _check_cda(header: cda.CdaHeader, document: Document, patient: Patient | None, where: str) -> list[str]:
    """ECO.2.1.2 / MSSANTE.md §5.4, §5.8: the CDA names the patient and type METADATA.XML names."""
    problems = []
    if header.code and header.code.code and header.code.code != document.type_code.code:
        problems.append(
            f"{where}: typeCode {document.type_code.code or '(none)'} in METADATA.XML, "
            f"code {header.code.code} in the CDA header"
        )
    if header.patient is None:
        return [*problems, f"{where}: the CDA header has no INS identifier"]
    if patient is None:
        return problems
    if any(d.item in identity.INS_ITEMS for d in identity.differences(patient, header.patient)):
        return [
            *problems,
            f"{where}: the CDA names patient {_identity(header.patient)}, METADATA.XML {_identity(patient)}",
        ]
    return [*problems, *_compare_traits(patient, header.patient, f"{where} (CDA header)")]


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def package_cda_codes(package: XdmPackage) -> tuple[str, ...]:
    """``X-MSS-CODECDA`` values of a parsed package: the header ``code`` of each CDA, never a typeCode."""
    return package.cda_codes
