"""CDA R2 level 1 documents: wrap a PDF with its patient and metadata, and read a CDA header back.

Outbound, an application that only hands a PDF still gets a complete XDM package (DESIGN.md §6); inbound,
the header's INS, traits and ``code`` are checked against METADATA.XML and feed ``X-MSS-CODECDA``.
Header template ids: HL7 France, CI-SIS and IHE XDS-SD only, as the ANS N1 example (MSSANTE.md §5.7). Pure;
parsing only through ``mappers.safe_xml``.

Public API (stable):
    wrap_pdf(pdf: bytes, patient: Patient, *, title: str, type_code: Code, effective_time: datetime,
             document_id: str, author: Author | None = None, set_id: str | None = None, version: int = 1,
             replaces: str | None = None,
             service_start: datetime | None = None, service_stop: datetime | None = None,
             language: str = "fr-FR", event_codes=(), legal_authenticator=None,
             healthcare_facility_type=None, practice_setting=None) -> bytes
    pdf_document(pdf: bytes, patient: Patient, *, title, type_code, effective_time, document_id,
                 author=None, class_code=None, confidentiality=(), service_start=None, service_stop=None,
                 healthcare_facility_type=None, practice_setting=None, event_codes=(),
                 legal_authenticator=None, set_id=None, version=1, replaces=None) -> Document
    read_header(data: bytes, *, what: str = "CDA document") -> CdaHeader
    HeaderValue, IncompleteHeaderError(missing), signer_of(author) -> Author
    N1_SCHEMA: Traversable      # mssgw's own XSD of the wrapper (mappers/schemas/cda_n1.xsd)

The wrapper refuses (``IncompleteHeaderError``) rather than write a nullFlavor where the CI-SIS
"structuration minimale" makes a value mandatory: the author's RPPS and family name, the custodian's
national id, the practice setting (main serviceEvent's performer) and the facility type (encounter).
What it writes is described by ``N1_SCHEMA``, an XML Schema written for mssgw (not HL7's CDA.xsd, which is
not shipped): the tests validate every wrapper against it; the gateway needs no XML Schema processor.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
import xml.etree.ElementTree as ET  # noqa: S405 - only builds XML; parsing goes through defusedxml
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone
from enum import Enum
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Final

from mappers import ins, xds
from mappers.documents import Author, Code, Document
from mappers.errors import MappingError
from mappers.patient import Patient, Sex
from mappers.safe_xml import parse_xml, root_tag, sanitize_tree

HL7_NS: Final = "urn:hl7-org:v3"
CLINICAL_DOCUMENT: Final = f"{{{HL7_NS}}}ClinicalDocument"
TEMPLATE_IDS: Final = ("2.16.840.1.113883.2.8.2.1", "1.2.250.1.213.1.1.1.1", "1.3.6.1.4.1.19376.1.2.20")
GENDER_OID: Final = "2.16.840.1.113883.5.1"
_GENDERS: Final = {Sex.FEMALE: ("F", "Féminin"), Sex.MALE: ("M", "Masculin"), Sex.UNKNOWN: ("UN", "Inconnu")}
_N: Final = {"h": HL7_NS}
N1_SCHEMA: Final[Traversable] = resources.files("mappers").joinpath("schemas", "cda_n1.xsd")
"""mssgw's own XML Schema of the CDA R2 N1 ``wrap_pdf`` builds (package data; see docs/cda-n1.md)."""


class CdaError(MappingError):
    """A document that is not a usable CDA R2 (wrong root, not a PDF to wrap …)."""


class NotCdaError(CdaError):
    """Well-formed XML whose root is not a ClinicalDocument (an XML signature, a KOS in XML): not a CDA."""


def is_clinical_document(data: bytes) -> bool:
    """Whether ``data`` is a CDA R2 document by its root element, as ECO.2.4.1 understands "a CDA"."""
    return root_tag(data) == CLINICAL_DOCUMENT


@dataclass(frozen=True, slots=True)
class HeaderMetadata:
    """The header parts METADATA.XML repeats, as the CI-SIS annex "lien entre l'en-tête CDA et les
    métadonnées XDS" maps them; ``apply_header`` writes them into a Document."""

    confidentiality: Code | None = None
    language: str | None = None
    event_codes: tuple[Code, ...] = ()
    service_start: datetime | None = None
    service_stop: datetime | None = None
    legal_authenticator: Author | None = None
    healthcare_facility_type: Code | None = None
    practice_setting: Code | None = None
    format_code: Code | None = None


@dataclass(frozen=True, slots=True)
class CdaHeader:
    """What the header of a CDA says; ``patient`` is ``None`` when no INS identifier is present.

    Ids are in the XDS uniqueId form (``root`` or ``root^extension``). ``replaces`` is the id of the document
    this version replaces (``relatedDocument[@typeCode='RPLC']/parentDocument/id``), what HL7 TXA-13 names.
    """

    patient: Patient | None
    code: Code | None
    title: str | None
    effective_time: datetime | None
    unique_id: str | None
    author: Author | None
    metadata: HeaderMetadata = field(default_factory=HeaderMetadata)
    version: int | None = None
    set_id: str | None = None
    replaces: str | None = None


def _ts(moment: datetime) -> str:
    """CDA TS with an explicit UTC offset, so the reader needs no guess."""
    if moment.tzinfo is None:
        raise CdaError(f"time {moment.isoformat()} has no time zone")
    return moment.astimezone(UTC).strftime("%Y%m%d%H%M%S+0000")


def _parse_ts(value: str | None) -> datetime | None:
    """A CDA TS (``AAAAMMJJ[hhmm[ss]][±zzzz]``); without an offset it is read as UTC."""
    if not value:
        return None
    text, offset = value.strip(), timedelta(0)
    for sign in "+-":
        if sign in text:
            text, _, zone = text.partition(sign)
            if len(zone) == 4 and zone.isascii() and zone.isdigit():
                minutes = int(zone[:2]) * 60 + int(zone[2:])
                offset = timedelta(minutes=minutes if sign == "+" else -minutes)
    text = text.split(".")[0]
    try:
        moment = xds.parse_time(text)
    except xds.MetadataValueError:
        return None
    return moment.replace(tzinfo=timezone(offset)).astimezone(UTC)


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attributes: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attributes)
    element.text = text
    return element


def _ii(parent: ET.Element, tag: str, identifier: str) -> None:
    """An II from ``root`` or ``root^extension`` (the XDS uniqueId form)."""
    root, _, extension = identifier.partition("^")
    element = _sub(parent, tag, root=root)
    if extension:
        element.set("extension", extension)


def _record_target(parent: ET.Element, patient: Patient) -> None:
    role = _sub(_sub(parent, "recordTarget"), "patientRole")
    _sub(role, "id", root=patient.oid, extension=patient.matricule)
    if patient.local_id and patient.local_id_root:
        _sub(role, "id", root=patient.local_id_root, extension=patient.local_id)
    person = _sub(role, "patient", classCode="PSN")
    name = _sub(person, "name")
    _sub(name, "family", patient.birth_name, qualifier="BR")
    _sub(name, "given", patient.given_name, qualifier="BR")
    if patient.other_given_names:
        _sub(name, "given", patient.other_given_names)
    if patient.used_name:
        _sub(name, "family", patient.used_name, qualifier="CL")
    code, label = _GENDERS[patient.sex]
    _sub(person, "administrativeGenderCode", code=code, displayName=label, codeSystem=GENDER_OID)
    if patient.birth_date:
        _sub(person, "birthTime", value=xds.format_date(patient.birth_date))
    if patient.birth_place_code:
        place = _sub(_sub(person, "birthplace"), "place")
        _sub(_sub(place, "addr"), "county", patient.birth_place_code)


class HeaderValue(Enum):
    """A value the CI-SIS "structuration minimale" (ANS IG-document-core, header cardinalities) makes
    mandatory without nullFlavor in every CDA header, that only the sender can give: the wrapper refuses
    without it rather than write ``nullFlavor="UNK"``. Callers map each to the option or field to give."""

    AUTHOR_RPPS = "the author's RPPS number (author/assignedAuthor/id)"
    AUTHOR_FAMILY = "the author's family name (assignedPerson/name/family)"
    INSTITUTION_ID = (
        "the national id of the author's organisation (custodian/assignedCustodian/"
        "representedCustodianOrganization/id)"
    )
    FACILITY_TYPE = (
        "the healthcare facility type (componentOf/encompassingEncounter/location/healthCareFacility/code)"
    )
    PRACTICE_SETTING = (
        "the practice setting (documentationOf/serviceEvent/performer/assignedEntity/"
        "representedOrganization/standardIndustryClassCode)"
    )
    SIGNER_RPPS = "the legal authenticator's RPPS number (legalAuthenticator/assignedEntity/id)"
    SIGNER_FAMILY = "the legal authenticator's family name"


class IncompleteHeaderError(CdaError):
    """A wrapper that would lack a mandatory header value; ``missing`` lists every one, in header order."""

    def __init__(self, missing: tuple[HeaderValue, ...]) -> None:
        self.missing = missing
        wanted = "; ".join(value.value for value in missing)
        super().__init__(f"a CDA R2 N1 header needs {wanted} (CI-SIS: mandatory, nullFlavor refused)")


def signer_of(author: Author) -> Author:
    """The legal authenticator the wrapper names by default: the author (the person, not the place)."""
    return Author(rpps=author.rpps, family_name=author.family_name, given_name=author.given_name)


def _missing(
    author: Author, signer: Author, facility_type: Code | None, practice_setting: Code | None
) -> tuple[HeaderValue, ...]:
    checks = (
        (HeaderValue.AUTHOR_RPPS, author.rpps),
        (HeaderValue.AUTHOR_FAMILY, author.family_name),
        (HeaderValue.INSTITUTION_ID, author.institution_id),
        (HeaderValue.SIGNER_RPPS, signer.rpps),
        (HeaderValue.SIGNER_FAMILY, signer.family_name),
        (HeaderValue.PRACTICE_SETTING, practice_setting),
        (HeaderValue.FACILITY_TYPE, facility_type),
    )
    missing = [value for value, given in checks if not (given.strip() if isinstance(given, str) else given)]
    if signer == signer_of(author):  # the author answers: one sentence per value, not two
        missing = [v for v in missing if v not in (HeaderValue.SIGNER_RPPS, HeaderValue.SIGNER_FAMILY)]
    return tuple(missing)


def _national(person: Author) -> Author:
    """``person`` with the RPPS in the national form both the CDA and METADATA.XML carry."""
    return replace(person, rpps=xds.national_ps_id(person.rpps)) if person.rpps else person


def _code(parent: ET.Element, tag: str, code: Code) -> None:
    _sub(parent, tag, code=code.code, displayName=code.label, codeSystem=code.scheme)


def _organization(parent: ET.Element, tag: str, author: Author, practice_setting: Code | None = None) -> None:
    """The institution of ``author`` (CDA R2 Organization order: id, name, standardIndustryClassCode)."""
    organization = _sub(parent, tag)
    if author.institution_id:
        _sub(organization, "id", root=xds.STRUCTURE_OID, extension=author.institution_id)
    if author.institution_name:
        _sub(organization, "name", author.institution_name)
    if practice_setting is not None:
        _code(organization, "standardIndustryClassCode", practice_setting)


def _professional(entity: ET.Element, person: Author, code: Code | None = None) -> None:
    """The id (IdNat_PS under the RPPS OID), profession code and name of an assignedAuthor/assignedEntity."""
    _sub(entity, "id", root=xds.RPPS_OID, extension=person.rpps or "")
    if code is not None:
        _code(entity, "code", code)  # JDV_J01 profession/specialty: XDS authorSpecialty
    name = _sub(_sub(entity, "assignedPerson"), "name")
    if person.given_name:
        _sub(name, "given", person.given_name)
    _sub(name, "family", person.family_name or "")


def _author(parent: ET.Element, author: Author, when: str) -> None:
    element = _sub(parent, "author")
    if author.role:
        _code(element, "functionCode", author.role)  # JDV_J47 functional role: XDS authorRole
    _sub(element, "time", value=when)
    assigned = _sub(element, "assignedAuthor")
    _professional(assigned, author, author.specialty)
    if author.institution_name or author.institution_id:
        _organization(assigned, "representedOrganization", author)


def _legal_authenticator(parent: ET.Element, person: Author, when: str) -> None:
    """The person who answers for the document (CI-SIS: mandatory); signatureCode S as the N1 sample."""
    element = _sub(parent, "legalAuthenticator")
    _sub(element, "time", value=when)
    _sub(element, "signatureCode", code="S")
    _professional(_sub(element, "assignedEntity"), person)


def _service_events(
    parent: ET.Element,
    codes: tuple[Code, ...],
    start: datetime,
    stop: datetime | None,
    performer: Author,
    practice_setting: Code,
) -> None:
    """One ``documentationOf/serviceEvent`` per act code (XDS eventCodeList), at least one (CI-SIS
    [1..*]). The first is the main event: it carries the times (serviceStartTime/serviceStopTime) and the
    performer, whose organisation's standardIndustryClassCode is where the CI-SIS annex reads the
    practiceSettingCode; the CI-SIS asks both of the main event, without nullFlavor."""
    for index, code in enumerate(codes or (None,)):
        event = _sub(_sub(parent, "documentationOf"), "serviceEvent")
        if code is not None:
            _code(event, "code", code)
        if index:
            continue
        period = _sub(event, "effectiveTime")
        _sub(period, "low", value=_ts(start))
        if stop:
            _sub(period, "high", value=_ts(stop))
        entity = _sub(_sub(event, "performer", typeCode="PRF"), "assignedEntity")
        _professional(entity, performer)
        _organization(entity, "representedOrganization", performer, practice_setting)


def _encounter(parent: ET.Element, facility_type: Code, start: datetime) -> None:
    """``componentOf/encompassingEncounter``: where the care took place (XDS healthcareFacilityTypeCode).
    CDA R2 makes its effectiveTime mandatory: the service start."""
    encounter = _sub(_sub(parent, "componentOf"), "encompassingEncounter")
    _sub(_sub(encounter, "effectiveTime"), "low", value=_ts(start))
    facility = _sub(_sub(encounter, "location"), "healthCareFacility")
    _code(facility, "code", facility_type)


def wrap_pdf(
    pdf: bytes,
    patient: Patient,
    *,
    title: str,
    type_code: Code,
    effective_time: datetime,
    document_id: str,
    author: Author | None = None,
    set_id: str | None = None,
    version: int = 1,
    replaces: str | None = None,
    service_start: datetime | None = None,
    service_stop: datetime | None = None,
    language: str = "fr-FR",
    event_codes: tuple[Code, ...] = (),
    legal_authenticator: Author | None = None,
    healthcare_facility_type: Code | None = None,
    practice_setting: Code | None = None,
) -> bytes:
    """A CDA R2 level 1 document whose non-structured body is the PDF (base64).

    The header parts METADATA.XML repeats (legal authenticator, service events, facility type, practice
    setting, author role) are written into the CDA too, so that reading the wrapper back
    (``read_header``/``apply_header``) gives the same metadata the package states. A new version of a
    document keeps ``set_id``, counts ``version`` up and names the id it ``replaces`` (relatedDocument RPLC).
    Every part the CI-SIS
    makes mandatory is written with a value or refused (``IncompleteHeaderError`` lists what is missing):
    the legal authenticator is the author unless given, the service starts at the document's time unless
    given. The author's RPPS number is written in its national form ("8" + RPPS).
    """
    if not pdf.startswith(b"%PDF-"):
        raise CdaError("the content to wrap is not a PDF (it does not start with %PDF-)")
    if not patient.matricule or not patient.oid:
        raise CdaError("the patient has no INS matricule or OID")
    if not title.strip():
        raise CdaError("the document has no title (ClinicalDocument/title is mandatory)")
    author = _national(author or Author())
    signer = _national(legal_authenticator or signer_of(author))
    missing = _missing(author, signer, healthcare_facility_type, practice_setting)
    if missing or healthcare_facility_type is None or practice_setting is None:
        raise IncompleteHeaderError(missing)
    start = service_start or effective_time
    if service_stop is not None and service_stop < start:
        raise CdaError(
            f"the service stops ({service_stop.isoformat()}) before it starts ({start.isoformat()})"
        )
    when = _ts(effective_time)
    root = ET.Element("ClinicalDocument", {"xmlns": HL7_NS})
    _sub(root, "realmCode", code="FR")
    _sub(root, "typeId", root="2.16.840.1.113883.1.3", extension="POCD_HD000040")
    for template in TEMPLATE_IDS:
        _sub(root, "templateId", root=template)
    _ii(root, "id", document_id)
    _sub(root, "code", code=type_code.code, displayName=type_code.label, codeSystem=type_code.scheme)
    _sub(root, "title", title)
    _sub(root, "effectiveTime", value=when)
    normal = xds.NORMAL
    _sub(root, "confidentialityCode", code=normal.code, displayName=normal.label)
    root[-1].set("codeSystem", normal.scheme)
    _sub(root, "languageCode", code=language)
    _ii(root, "setId", set_id or document_id)
    _sub(root, "versionNumber", value=str(version))
    _record_target(root, patient)
    _author(root, author, when)
    custodian = _sub(_sub(root, "custodian"), "assignedCustodian")
    _organization(custodian, "representedCustodianOrganization", author)
    _legal_authenticator(root, signer, when)
    _service_events(root, event_codes, start, service_stop, author, practice_setting)
    if replaces:
        _ii(_sub(_sub(root, "relatedDocument", typeCode="RPLC"), "parentDocument"), "id", replaces)
    _encounter(root, healthcare_facility_type, start)
    body = _sub(_sub(root, "component"), "nonXMLBody")
    text = _sub(body, "text", base64.b64encode(pdf).decode("ascii"))
    text.set("mediaType", "application/pdf")
    text.set("representation", "B64")
    sanitize_tree(root)
    ET.indent(root, space="  ")
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode").encode()


def pdf_document(
    pdf: bytes,
    patient: Patient,
    *,
    title: str,
    type_code: Code,
    effective_time: datetime,
    document_id: str,
    author: Author | None = None,
    class_code: Code | None = None,
    confidentiality: tuple[Code, ...] = (),
    service_start: datetime | None = None,
    service_stop: datetime | None = None,
    healthcare_facility_type: Code | None = None,
    practice_setting: Code | None = None,
    event_codes: tuple[Code, ...] = (),
    legal_authenticator: Author | None = None,
    set_id: str | None = None,
    version: int = 1,
    replaces: str | None = None,
) -> Document:
    """The PDF wrapped in a CDA, as a ``Document`` ready for ``xdm.build_package`` (format XDS-SD PDF),
    whose metadata is what the wrapper's header says (defaults filled in, the RPPS in national form)."""
    author = _national(author or Author())
    legal_authenticator = _national(legal_authenticator or signer_of(author))
    service_start = service_start or effective_time
    content = wrap_pdf(
        pdf,
        patient,
        title=title,
        type_code=type_code,
        effective_time=effective_time,
        document_id=document_id,
        author=author,
        set_id=set_id,
        version=version,
        replaces=replaces,
        service_start=service_start,
        service_stop=service_stop,
        event_codes=event_codes,
        legal_authenticator=legal_authenticator,
        healthcare_facility_type=healthcare_facility_type,
        practice_setting=practice_setting,
    )
    return Document(
        filename="DOC0001.XML",
        content=content,
        mime_type="text/xml",
        title=title,
        type_code=type_code,
        creation_time=effective_time,
        unique_id=document_id,
        class_code=class_code,
        format_code=xds.PDF_FORMAT,
        service_start=service_start,
        service_stop=service_stop,
        author=author,
        confidentiality=confidentiality,
        healthcare_facility_type=healthcare_facility_type,
        practice_setting=practice_setting,
        event_codes=event_codes,
        legal_authenticator=legal_authenticator,
    )


def _text(element: ET.Element | None) -> str:
    return (element.text or "").strip() if element is not None else ""


def _read_patient(root: ET.Element) -> Patient | None:
    role = root.find("h:recordTarget/h:patientRole", _N)
    if role is None:
        return None
    ins_id = local = None
    for ident in role.findall("h:id", _N):
        if ins.is_ins_oid(ident.get("root", "")) and ins_id is None:
            ins_id = ident
        elif local is None and ident.get("extension") and ident.get("root") != "1.2.250.1.213.1.4.2":
            local = ident
    if ins_id is None:
        return None
    person = role.find("h:patient", _N)
    name = person.find("h:name", _N) if person is not None else None
    families = name.findall("h:family", _N) if name is not None else []
    givens = name.findall("h:given", _N) if name is not None else []

    def pick(items: list[ET.Element], qualifier: str) -> str:
        chosen = [e for e in items if e.get("qualifier") == qualifier] or items[:1]
        return _text(chosen[0]) if chosen else ""

    given = pick(givens, "BR")
    others = " ".join(_text(g) for g in givens if g.get("qualifier") is None)
    used = [_text(f) for f in families if f.get("qualifier") == "CL"]
    gender = person.find("h:administrativeGenderCode", _N) if person is not None else None
    sex = {"F": Sex.FEMALE, "M": Sex.MALE}.get(gender.get("code", "") if gender is not None else "")
    birth = person.find("h:birthTime", _N) if person is not None else None
    born = _parse_ts(birth.get("value")) if birth is not None else None
    county = person.find("h:birthplace/h:place/h:addr/h:county", _N) if person is not None else None
    return Patient(
        matricule=ins_id.get("extension", ""),
        oid=ins_id.get("root", ""),
        birth_name=pick(families, "BR"),
        given_name=given,
        birth_date=born.date() if born else None,
        sex=sex or Sex.UNKNOWN,
        used_name=used[0] if used else None,
        other_given_names=others if others and others != given else None,
        birth_place_code=_text(county) or None,
        local_id=local.get("extension") if local is not None else None,
        local_id_root=local.get("root") if local is not None else None,
    )


def _read_code(element: ET.Element | None) -> Code | None:
    if element is None or not element.get("code"):
        return None
    return Code(element.get("code", ""), element.get("displayName", ""), element.get("codeSystem", ""))


def _read_person(entity: ET.Element | None, person_tag: str) -> Author | None:
    """The RPPS and name of an ``assignedEntity``/``assignedAuthor``."""
    if entity is None:
        return None
    rpps = next(
        (i.get("extension") for i in entity.findall("h:id", _N) if i.get("root") == xds.RPPS_OID),
        None,
    )
    family = _text(entity.find(f"h:{person_tag}/h:name/h:family", _N)) or None
    given = _text(entity.find(f"h:{person_tag}/h:name/h:given", _N)) or None
    if not (rpps or family or given):
        return None
    return Author(rpps=rpps, family_name=family, given_name=given)


def _read_metadata(root: ET.Element) -> HeaderMetadata:
    event = root.find("h:documentationOf/h:serviceEvent", _N)
    period = event.find("h:effectiveTime", _N) if event is not None else None
    low = period.find("h:low", _N) if period is not None else None
    high = period.find("h:high", _N) if period is not None else None
    confidentiality = _read_code(root.find("h:confidentialityCode", _N))
    language = root.find("h:languageCode", _N)
    setting = _read_code(
        root.find(
            "h:documentationOf/h:serviceEvent/h:performer/h:assignedEntity/h:representedOrganization/"
            "h:standardIndustryClassCode",
            _N,
        )
    ) or _read_code(
        root.find("h:author/h:assignedAuthor/h:representedOrganization/h:standardIndustryClassCode", _N)
    )
    pdf_body = root.find("h:component/h:nonXMLBody/h:text[@mediaType='application/pdf']", _N)
    return HeaderMetadata(
        confidentiality=confidentiality,
        language=(language.get("code") or None) if language is not None else None,
        event_codes=tuple(
            c
            for e in root.findall("h:documentationOf/h:serviceEvent", _N)
            if (c := _read_code(e.find("h:code", _N)))
        ),
        service_start=_parse_ts(low.get("value")) if low is not None else None,
        service_stop=_parse_ts(high.get("value")) if high is not None else None,
        legal_authenticator=_read_person(
            root.find("h:legalAuthenticator/h:assignedEntity", _N), "assignedPerson"
        ),
        healthcare_facility_type=_read_code(
            root.find("h:componentOf/h:encompassingEncounter/h:location/h:healthCareFacility/h:code", _N)
        ),
        practice_setting=setting,
        format_code=xds.PDF_FORMAT if pdf_body is not None else None,
    )


def _read_author(root: ET.Element) -> Author | None:
    assigned = root.find("h:author/h:assignedAuthor", _N)
    if assigned is None:
        return None
    rpps = next(
        (i.get("extension") for i in assigned.findall("h:id", _N) if i.get("root") == xds.RPPS_OID),
        None,
    )
    code = assigned.find("h:code", _N)
    organization = assigned.find("h:representedOrganization", _N)
    org_id = organization.find("h:id", _N) if organization is not None else None
    return Author(
        rpps=rpps,
        family_name=_text(assigned.find("h:assignedPerson/h:name/h:family", _N)) or None,
        given_name=_text(assigned.find("h:assignedPerson/h:name/h:given", _N)) or None,
        institution_name=_text(organization.find("h:name", _N)) or None if organization is not None else None,
        institution_id=org_id.get("extension") if org_id is not None else None,
        specialty=Code(code.get("code", ""), code.get("displayName", ""), code.get("codeSystem", ""))
        if code is not None
        else None,
        role=_read_code(root.find("h:author/h:functionCode", _N)),
    )


def read_header(data: bytes, *, what: str = "CDA document") -> CdaHeader:
    """Identity, ``code``, title, date, id and author of a CDA R2 document (body ignored)."""
    root = parse_xml(data, what=what)
    if root.tag != CLINICAL_DOCUMENT:
        raise NotCdaError(f"{what} is not a CDA R2 document (root {root.tag!r})")
    code = root.find("h:code", _N)
    effective = root.find("h:effectiveTime", _N)
    version = root.find("h:versionNumber", _N)
    version_text = (version.get("value") or "").strip() if version is not None else ""
    return CdaHeader(
        patient=_read_patient(root),
        code=Code(code.get("code", ""), code.get("displayName", ""), code.get("codeSystem", ""))
        if code is not None
        else None,
        title=_text(root.find("h:title", _N)) or None,
        effective_time=_parse_ts(effective.get("value")) if effective is not None else None,
        unique_id=_read_ii(root.find("h:id", _N)),
        author=_read_author(root),
        metadata=_read_metadata(root),
        version=int(version_text) if version_text.isascii() and version_text.isdigit() else None,
        set_id=_read_ii(root.find("h:setId", _N)),
        replaces=_read_ii(root.find("h:relatedDocument[@typeCode='RPLC']/h:parentDocument/h:id", _N)),
    )


def _read_ii(ident: ET.Element | None) -> str | None:
    """An II as the XDS uniqueId writes it: ``root^extension``, or ``root`` alone."""
    if ident is None or not ident.get("root"):
        return None
    extension = ident.get("extension")
    return f"{ident.get('root')}^{extension}" if extension else ident.get("root")


def apply_header(document: Document, header: CdaHeader) -> Document:
    """``document`` with the metadata its CDA header states, so METADATA.XML says what the CDA says.

    What the header gives wins, except the masking codes (XDS only: MASQUE_PS …), which are kept beside a
    restricted CDA confidentialityCode; what it leaves out keeps the document's value.
    """
    masks = document.confidentiality
    known = header.metadata
    restricted = known.confidentiality
    if restricted is not None and restricted.code != xds.NORMAL.code and restricted not in masks:
        masks = (*masks, restricted)
    return replace(
        document,
        type_code=header.code or document.type_code,
        title=header.title or document.title,
        creation_time=header.effective_time or document.creation_time,
        unique_id=header.unique_id or document.unique_id,
        author=header.author or document.author,
        confidentiality=masks,
        language=known.language or document.language,
        event_codes=known.event_codes or document.event_codes,
        service_start=known.service_start or document.service_start,
        service_stop=known.service_stop or document.service_stop,
        legal_authenticator=known.legal_authenticator or document.legal_authenticator,
        healthcare_facility_type=known.healthcare_facility_type or document.healthcare_facility_type,
        practice_setting=known.practice_setting or document.practice_setting,
        format_code=known.format_code or document.format_code,
    )


def document_id(content: bytes) -> str:
    """A 2.25 OID derived from the document's bytes, so the same document always gets the same id."""
    digest = hashlib.sha1(content, usedforsecurity=False).digest()
    return "2.25." + str(uuid.UUID(bytes=digest[:16], version=5).int)
