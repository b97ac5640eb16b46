"""CDA R2 level 1 wrapping of a PDF and reading of CDA headers (MSSANTE.md §5.7)."""

from __future__ import annotations

import base64
import dataclasses
from datetime import UTC, datetime

import defusedxml.ElementTree as DefusedET
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mappers import cda, xdm, xds
from mappers.documents import Author, Code
from mappers.patient import Sex
from mappers.safe_xml import UnsafeXmlError

from .samples import CR_IMAGERIE, NOW, PDF, author, patient

HL7 = "{urn:hl7-org:v3}"
MEDECIN = Code("10", "Médecin", "1.2.250.1.71.1.2.7")
SCANNER = Code("ACQH004", "Scanographie", "1.2.250.1.213.2.5")
FACILITY = Code("SA01", "Etablissement public de santé", xds.FACILITY_TYPE_OID)
SETTING = Code("ETABLISSEMENT", "Etablissement de santé", xds.PRACTICE_SETTING_OID)


def _wrap(**changes: object) -> bytes:
    values: dict[str, object] = {
        "title": "CR d'imagerie - Scanner",
        "type_code": CR_IMAGERIE,
        "effective_time": NOW,
        "document_id": "1.2.250.1.213.1.1.1.45.2^7",
        "author": author(),
        "service_start": datetime(2024, 1, 16, 9, 22, tzinfo=UTC),
        "healthcare_facility_type": FACILITY,
        "practice_setting": SETTING,
    }
    values.update(changes)
    return cda.wrap_pdf(PDF, patient(), **values)  # type: ignore[arg-type]


def test_round_trip_of_identity_code_and_title() -> None:
    header = cda.read_header(_wrap())
    assert header.patient == patient()
    assert header.code == CR_IMAGERIE
    assert header.title == "CR d'imagerie - Scanner"
    assert header.effective_time == NOW
    assert header.unique_id == "1.2.250.1.213.1.1.1.45.2^7"
    assert header.author == author()


def test_structure_of_the_wrapped_document() -> None:
    root = DefusedET.fromstring(_wrap())
    assert root.tag == f"{HL7}ClinicalDocument"
    templates = [t.get("root") for t in root.findall(f"{HL7}templateId")]
    assert templates == ["2.16.840.1.113883.2.8.2.1", "1.2.250.1.213.1.1.1.1", "1.3.6.1.4.1.19376.1.2.20"]
    ins_id = root.find(f"{HL7}recordTarget/{HL7}patientRole/{HL7}id")
    assert (ins_id.get("root"), ins_id.get("extension")) == ("1.2.250.1.213.1.4.10", "279035121518989")
    name = root.find(f"{HL7}recordTarget/{HL7}patientRole/{HL7}patient/{HL7}name")
    assert [(e.tag.removeprefix(HL7), e.get("qualifier"), e.text) for e in name] == [
        ("family", "BR", "PAT-TROIS"),
        ("given", "BR", "DOMINIQUE"),
        ("family", "CL", "MARTIN"),
    ]
    code = root.find(f"{HL7}code")
    assert (code.get("code"), code.get("codeSystem")) == ("18748-4", xds.LOINC_OID)
    assert root.find(f"{HL7}effectiveTime").get("value") == "20240116151112+0000"
    rpps = root.find(f"{HL7}author/{HL7}assignedAuthor/{HL7}id")
    assert (rpps.get("root"), rpps.get("extension")) == ("1.2.250.1.71.4.2.1", "899700367909")
    text = root.find(f"{HL7}component/{HL7}nonXMLBody/{HL7}text")
    assert (text.get("mediaType"), text.get("representation")) == ("application/pdf", "B64")
    assert base64.b64decode(text.text) == PDF


def test_only_pdfs_are_wrapped() -> None:
    with pytest.raises(cda.CdaError, match="not a PDF"):
        cda.wrap_pdf(b"<html/>", patient(), title="x", type_code=CR_IMAGERIE, effective_time=NOW,
                     document_id="1.2.3", author=author())  # fmt: skip


def test_naive_times_are_refused() -> None:
    with pytest.raises(cda.CdaError, match="no time zone"):
        _wrap(effective_time=datetime(2024, 1, 1), service_start=None)


def test_reads_the_ans_example_header() -> None:
    """The identity block of the ANS N1 example (MSSANTE.md §5.7), with its offset time."""
    data = """<?xml version="1.0" encoding="utf-8"?>
<ClinicalDocument xmlns="urn:hl7-org:v3">
  <id root="1.2.250.1.213.1.1.1.45.2"/>
  <code code="18748-4" displayName="CR d’imagerie médicale" codeSystem="2.16.840.1.113883.6.1"/>
  <title>CR d’imagerie médicale</title>
  <effectiveTime value="20210108111700+0100"/>
  <recordTarget><patientRole>
    <id extension="279035121518989" root="1.2.250.1.213.1.4.10"/>
    <id extension="1234567890121" root="1.2.3.4.567.8.9.10" />
    <patient classCode="PSN">
      <name>
        <family qualifier="BR">PAT-TROIS</family>
        <given qualifier="BR">DOMINIQUE</given>
        <given>DOMINIQUE</given>
        <family qualifier="CL">PAT-TROIS</family>
        <given qualifier="CL">DOMINIQUE</given>
      </name>
      <administrativeGenderCode code="F" codeSystem="2.16.840.1.113883.5.1" />
      <birthTime value="19790328"/>
      <birthplace><place><addr><county>63220</county></addr></place></birthplace>
    </patient>
  </patientRole></recordTarget>
</ClinicalDocument>""".encode()
    header = cda.read_header(data)
    assert header.patient is not None
    assert header.patient.matricule == "279035121518989"
    assert header.patient.sex is Sex.FEMALE
    assert header.patient.other_given_names is None
    assert header.patient.local_id == "1234567890121"
    assert header.effective_time == datetime(2021, 1, 8, 10, 17, tzinfo=UTC)
    assert header.unique_id == "1.2.250.1.213.1.1.1.45.2"
    assert header.code is not None and header.code.code == "18748-4"


def test_header_without_ins_has_no_patient() -> None:
    data = b'<ClinicalDocument xmlns="urn:hl7-org:v3"><recordTarget><patientRole>' \
        b'<id root="1.2.3" extension="42"/></patientRole></recordTarget></ClinicalDocument>'  # fmt: skip
    assert cda.read_header(data).patient is None


def test_not_a_cda() -> None:
    with pytest.raises(cda.CdaError, match="not a CDA R2 document"):
        cda.read_header(b"<ClinicalDocument/>")


def test_xml_attacks_are_refused() -> None:
    data = b'<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]><ClinicalDocument>&x;</ClinicalDocument>'
    with pytest.raises(UnsafeXmlError, match="external entity"):
        cda.read_header(data, what="DOC0001.XML")


def test_pdf_document_carries_xds_metadata() -> None:
    event = Code("ACQH004", "Scanographie", "1.2.250.1.213.2.5")
    document = cda.pdf_document(
        PDF, patient(), title="T", type_code=CR_IMAGERIE, effective_time=NOW, document_id="1.2.3^4",
        event_codes=(event,), legal_authenticator=author(), author=author(),
        healthcare_facility_type=FACILITY, practice_setting=SETTING,
    )  # fmt: skip
    assert document.event_codes == (event,) and document.legal_authenticator == author()
    assert document.mime_type == "text/xml"
    assert document.format_code == xds.PDF_FORMAT
    assert document.unique_id == "1.2.3^4"
    assert cda.read_header(document.content).code == CR_IMAGERIE


def _full_wrapper() -> bytes:
    """A wrapper given every header part the CI-SIS "structuration minimale" asks of an N1 document."""
    return _wrap(
        author=dataclasses.replace(author(), role=MEDECIN),
        legal_authenticator=author(),
        event_codes=(SCANNER,),
        service_stop=datetime(2024, 1, 16, 10, 5, tzinfo=UTC),
        healthcare_facility_type=FACILITY,
        practice_setting=SETTING,
    )


def test_wrapper_header_reads_back_as_the_metadata_it_was_given() -> None:
    """What METADATA.XML states of a wrapped PDF is what its CDA header says (apply_header finds it)."""
    header = cda.read_header(_full_wrapper())
    known = header.metadata
    assert known.legal_authenticator == Author(
        rpps="899700367909", family_name="DOC0036790", given_name="KIT"
    )
    assert known.event_codes == (SCANNER,)
    assert known.service_start == datetime(2024, 1, 16, 9, 22, tzinfo=UTC)
    assert known.service_stop == datetime(2024, 1, 16, 10, 5, tzinfo=UTC)
    assert known.healthcare_facility_type == FACILITY
    assert known.practice_setting == SETTING
    assert header.author is not None and header.author.role == MEDECIN
    assert header.author.specialty == author().specialty


def test_wrapper_header_elements_in_cda_r2_order() -> None:
    """POCD_MT000040 is a sequence: custodian, legalAuthenticator, documentationOf, componentOf, component."""
    root = DefusedET.fromstring(_full_wrapper())
    tags = [e.tag.removeprefix(HL7) for e in root]
    wanted = ["author", "custodian", "legalAuthenticator", "documentationOf", "componentOf", "component"]
    assert [t for t in tags if t in wanted] == wanted
    assert [e.tag.removeprefix(HL7) for e in root.find(f"{HL7}author")] == [
        "functionCode",
        "time",
        "assignedAuthor",
    ]
    encounter = root.find(f"{HL7}componentOf/{HL7}encompassingEncounter")
    assert encounter.find(f"{HL7}effectiveTime/{HL7}low").get("value") == "20240116092200+0000"


def test_metadata_of_a_wrapped_pdf_follows_its_header() -> None:
    """apply_header on the wrapper's own header changes nothing: the Document and the CDA agree."""
    document = cda.pdf_document(
        PDF, patient(), title="T", type_code=CR_IMAGERIE, effective_time=NOW, document_id="1.2.3^4",
        author=dataclasses.replace(author(), role=MEDECIN), event_codes=(SCANNER,),
        legal_authenticator=Author(rpps="899700367909", family_name="DOC0036790", given_name="KIT"),
        healthcare_facility_type=FACILITY, practice_setting=SETTING,
    )  # fmt: skip
    assert cda.apply_header(document, cda.read_header(document.content)) == document


def _wrapped(document_id: str, **options: object) -> cda.CdaHeader:
    return cda.read_header(_wrap(document_id=document_id, **options))


def test_a_new_version_names_its_set_version_and_the_document_it_replaces() -> None:
    header = _wrapped("1.2.3^2", set_id="1.2.3^0", version=2, replaces="1.2.3^1")
    assert (header.unique_id, header.set_id, header.version, header.replaces) == (
        "1.2.3^2",
        "1.2.3^0",
        2,
        "1.2.3^1",
    )
    first = _wrapped("1.2.3")
    assert (first.set_id, first.version, first.replaces) == ("1.2.3", 1, None)


def test_a_wrapper_without_mandatory_values_is_refused_listing_each() -> None:
    """No nullFlavor="UNK" in place of what the CI-SIS makes mandatory: every missing value is named."""
    with pytest.raises(cda.IncompleteHeaderError) as raised:
        _wrap(author=Author(given_name="KIT"), healthcare_facility_type=None, practice_setting=None)
    assert raised.value.missing == (
        cda.HeaderValue.AUTHOR_RPPS,
        cda.HeaderValue.AUTHOR_FAMILY,
        cda.HeaderValue.INSTITUTION_ID,
        cda.HeaderValue.PRACTICE_SETTING,
        cda.HeaderValue.FACILITY_TYPE,
    )
    assert "the author's RPPS number" in str(raised.value) and "nullFlavor refused" in str(raised.value)


def test_a_legal_authenticator_other_than_the_author_needs_an_rpps() -> None:
    with pytest.raises(cda.IncompleteHeaderError) as raised:
        _wrap(legal_authenticator=Author(family_name="CHEF"))
    assert raised.value.missing == (cda.HeaderValue.SIGNER_RPPS,)


def test_a_service_that_stops_before_it_starts_is_refused() -> None:
    with pytest.raises(cda.CdaError, match="stops .* before it starts"):
        _wrap(service_stop=datetime(2024, 1, 16, 9, 0, tzinfo=UTC))


def test_service_start_defaults_to_the_document_time() -> None:
    header = cda.read_header(_wrap(service_start=None))
    assert header.metadata.service_start == NOW and header.metadata.service_stop is None


def test_a_bare_rpps_is_written_8_plus_rpps_and_reads_back_the_same_from_cda_and_metadata() -> None:
    """The ANS writes the IdNat_PS under 1.2.250.1.71.4.2.1; CDA header and METADATA.XML agree on it."""
    document = cda.pdf_document(
        PDF, patient(), title="T", type_code=CR_IMAGERIE, effective_time=NOW, document_id="1.2.3^4",
        author=dataclasses.replace(author(), rpps="99700367909"),
        healthcare_facility_type=FACILITY, practice_setting=SETTING,
    )  # fmt: skip
    assert document.author is not None and document.author.rpps == "899700367909"
    header = cda.read_header(document.content)
    assert header.author is not None and header.author.rpps == "899700367909"
    assert header.metadata.legal_authenticator is not None
    assert header.metadata.legal_authenticator.rpps == "899700367909"
    package = xdm.parse_package(xdm.build_package(patient(), [document], now=NOW))
    entry = package.documents[0]
    assert entry.author is not None and entry.author.rpps == header.author.rpps
    assert entry.legal_authenticator is not None and entry.legal_authenticator.rpps == "899700367909"
    assert package.problems == ()


@pytest.mark.parametrize(
    ("typed", "national"),
    [("99700367909", "899700367909"), ("997 003 679 09", "899700367909"), ("899700367909", "899700367909")],
)
def test_rpps_numbers_as_typed_become_the_national_id(typed: str, national: str) -> None:
    assert xds.check_rpps(typed) == national


@pytest.mark.parametrize("typed", ["1234", "099700367909", "8997003679AB", "9997003679099"])
def test_what_is_not_an_rpps_number_is_refused(typed: str) -> None:
    with pytest.raises(xds.MetadataValueError, match="not an RPPS number"):
        xds.check_rpps(typed)


def test_an_xcn_of_a_bare_rpps_carries_the_national_id() -> None:
    assert xds.format_xcn(Author(rpps="99700367909", family_name="D", given_name="K")).startswith(
        "899700367909^D^K^"
    )


def test_a_submission_author_is_taken_whole_and_the_institution_completed() -> None:
    defaults = dataclasses.replace(author(), role=MEDECIN)
    own = Author(rpps="810000000001", family_name="AUTRE")
    filled = own.filled_from(defaults)
    assert (filled.rpps, filled.family_name, filled.given_name, filled.specialty, filled.role) == (
        "810000000001", "AUTRE", None, None, None,
    )  # fmt: skip
    assert (filled.institution_id, filled.institution_name) == ("499700367909006", "BCOM")
    assert Author().filled_from(defaults) == defaults


@given(st.text(alphabet="0123456789", min_size=11, max_size=11))
def test_any_rpps_becomes_8_plus_rpps_and_the_national_id_stays_as_it_is(rpps: str) -> None:
    national = xds.check_rpps(rpps)
    assert national == "8" + rpps
    assert xds.check_rpps(national) == xds.national_ps_id(national) == national
