"""IHE XDM packages: round trip, golden METADATA.XML, §5.3 UUIDs, inconsistencies flagged, XML attacks."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from datetime import UTC, datetime
from pathlib import Path

import defusedxml.ElementTree as DefusedET
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mappers import archive, ins, xdm, xds
from mappers.documents import Code, Document
from mappers.errors import MappingError
from mappers.patient import Patient, Sex
from mappers.safe_xml import UnsafeXmlError, XmlSyntaxError

from .samples import BILLION_LAUGHS, NOW, author, cda_document, patient, pdf_document

GOLDEN = Path(__file__).parents[2] / "data" / "xdm" / "expected_METADATA.XML"
METADATA = "IHE_XDM/SUBSET01/METADATA.XML"
RIM = "{urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0}"


def _package() -> bytes:
    return xdm.build_package(
        patient(),
        [cda_document(), pdf_document()],
        now=NOW,
        source_id="1.2.250.1.999.1.1.8121",
        sender="Hopital A - Imagerie",
        title="Envoi de documents",
        content_type=Code("04", "Hospitalisation de jour", xds.CONTENT_TYPE_OID),
    )


def _rebuild(data: bytes, changes: dict[str, bytes]) -> bytes:
    """The same package with some members replaced (name → content)."""
    members = archive.read_members(data)
    members.update(changes)
    return archive.write_archive(list(members.items()), when=NOW)


def _without_filename(document: Document) -> Document:
    return dataclasses.replace(document, filename="")


def test_round_trip_gives_the_same_patient_documents_and_metadata() -> None:
    documents = [cda_document(), pdf_document()]
    package = xdm.parse_package(_package())
    assert package.problems == ()
    assert package.patient == patient()
    assert package.cda_patient == patient()
    assert [d.filename for d in package.documents] == ["DOC0001.XML", "DOC0002.PDF"]
    assert [_without_filename(d) for d in package.documents] == [_without_filename(d) for d in documents]
    for parsed, original in zip(package.documents, documents, strict=True):
        assert hashlib.sha256(parsed.content).digest() == hashlib.sha256(original.content).digest()
    assert package.submission is not None
    assert package.submission.source_id == "1.2.250.1.999.1.1.8121"
    assert package.submission.submission_time == NOW
    assert package.submission.author == author()
    assert package.submission.title == "Envoi de documents"
    assert package.submission.content_type == Code("04", "Hospitalisation de jour", "1.2.250.1.213.2.2")
    assert package.ins_qualified
    assert xdm.package_cda_codes(package) == ("18748-4",)


def test_building_is_deterministic_and_ids_derive_from_inputs() -> None:
    assert _package() == _package()
    other = xdm.build_package(patient(), [cda_document()], now=NOW)
    first = xdm.parse_package(_package()).submission
    second = xdm.parse_package(other).submission
    assert first is not None and second is not None
    assert first.unique_id != second.unique_id
    assert first.unique_id.startswith("2.25.")


def test_layout_of_the_zip() -> None:
    members = archive.read_members(_package())
    assert list(members) == [
        "README.TXT",
        "INDEX.HTM",
        METADATA,
        "IHE_XDM/SUBSET01/DOC0001.XML",
        "IHE_XDM/SUBSET01/DOC0002.PDF",
    ]
    readme = members["README.TXT"].decode()
    assert "Hopital A - Imagerie" in readme and "\r\n" in readme
    index = members["INDEX.HTM"].decode()
    assert 'href="IHE_XDM/SUBSET01/DOC0001.XML"' in index
    assert "CR d&#x27;imagerie - Scanner" in index


def test_metadata_matches_the_golden_file() -> None:
    assert archive.read_members(_package())[METADATA].decode() == GOLDEN.read_text(encoding="utf-8")


def test_metadata_is_well_formed_and_uses_the_ihe_uuids() -> None:
    root = DefusedET.fromstring(archive.read_members(_package())[METADATA])
    assert root.tag == "{urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0}SubmitObjectsRequest"
    schemes = {e.get("classificationScheme") for e in root.iter(f"{RIM}Classification")}
    assert {
        "urn:uuid:a7058bb9-b4e4-4307-ba5b-e3f0ab85e12d",
        "urn:uuid:aa543740-bdda-424e-8c96-df4873be8500",
        "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d",
        "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a",
        "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983",
        "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f",
        "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d",
        "urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1",
        "urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead",
    } <= schemes
    nodes = {e.get("classificationNode") for e in root.iter(f"{RIM}Classification")}
    assert "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd" in nodes
    identifiers = {
        e.get("identificationScheme"): e.get("value") for e in root.iter(f"{RIM}ExternalIdentifier")
    }
    cx = "279035121518989^^^&1.2.250.1.213.1.4.10&ISO^NH"
    assert identifiers["urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446"] == cx
    assert identifiers["urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"] == cx
    assert "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832" in identifiers
    assert "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8" in identifiers
    assert "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab" in identifiers
    entries = list(root.iter(f"{RIM}ExtrinsicObject"))
    assert {e.get("objectType") for e in entries} == {"urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"}
    associations = list(root.iter(f"{RIM}Association"))
    assert len(associations) == 2
    assert {a.get("associationType") for a in associations} == {
        "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember"
    }
    confidentiality = {
        (e.get("nodeRepresentation"), e.find(f"{RIM}Slot/{RIM}ValueList/{RIM}Value").text)
        for e in root.iter(f"{RIM}Classification")
        if e.get("classificationScheme") == "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f"
    }
    assert {
        ("N", "2.16.840.1.113883.5.25"),
        ("MASQUE_PS", "1.2.250.1.213.1.1.4.13"),
        ("INVISIBLE_PATIENT", "1.2.250.1.213.1.1.4.13"),
    } <= confidentiality


def test_hash_mismatch_is_kept_and_flagged() -> None:
    data = _rebuild(_package(), {"IHE_XDM/SUBSET01/DOC0002.PDF": b"%PDF-1.4 tampered\n"})
    package = xdm.parse_package(data)
    assert len(package.documents) == 2
    assert any("DOC0002.PDF: SHA-1 in METADATA.XML is" in p for p in package.problems)
    assert any("DOC0002.PDF: size in METADATA.XML is" in p for p in package.problems)


def test_patient_id_disagreeing_is_kept_and_flagged() -> None:
    members = archive.read_members(_package())
    metadata = members[METADATA].decode()
    other = "146026322000196^^^&amp;1.2.250.1.213.1.4.10&amp;ISO^NH"
    # Only the second DocumentEntry names someone else.
    head, _, tail = metadata.rpartition("279035121518989^^^&amp;1.2.250.1.213.1.4.10&amp;ISO^NH")
    members[METADATA] = (head + other + tail).encode()
    package = xdm.parse_package(archive.write_archive(list(members.items()), when=NOW))
    assert len(package.documents) == 2
    assert "DOC0002.PDF: patientId differs from the SubmissionSet's" in package.problems


def test_cda_naming_another_patient_is_flagged_with_masked_ins() -> None:
    stranger = patient(matricule="146026322000196", birth_name="PAT-UN", sex=Sex.MALE)
    documents = [cda_document(stranger)]
    data = xdm.build_package(patient(), documents, now=NOW)
    package = xdm.parse_package(data)
    assert package.problems == (
        "DOC0001.XML: the CDA names patient 1************96 (INS-NIR-TEST), "
        "METADATA.XML 2************89 (INS-NIR-TEST)",
    )
    assert "146026322000196" not in " ".join(package.problems)


def test_cda_traits_disagreeing_are_named_not_shown() -> None:
    data = xdm.build_package(patient(), [cda_document(patient(birth_name="AUTRE"))], now=NOW)
    (problem,) = xdm.parse_package(data).problems
    assert problem == "DOC0001.XML (CDA header): birth name differs from METADATA.XML"
    assert "AUTRE" not in problem


def test_missing_document_file_is_flagged() -> None:
    members = archive.read_members(_package())
    del members["IHE_XDM/SUBSET01/DOC0002.PDF"]
    package = xdm.parse_package(archive.write_archive(list(members.items()), when=NOW))
    assert [d.filename for d in package.documents] == ["DOC0001.XML"]
    assert "DOC0002.PDF: listed in METADATA.XML but missing from the archive" in package.problems


def test_any_subset_name_and_case_are_found() -> None:
    members = archive.read_members(_package())
    renamed = [
        (name.replace("IHE_XDM/SUBSET01/", "ihe_xdm/SS000001/").replace("METADATA.XML", "metadata.xml"), c)
        for name, c in members.items()
    ]
    package = xdm.parse_package(archive.write_archive(renamed, when=NOW))
    assert package.problems == ()
    assert len(package.documents) == 2


def test_an_entry_describing_the_patient_less_upper_case_hashes_and_local_ids_are_no_problem() -> None:
    """What valid packages from other PFIs do: an entry with no sourcePatientInfo (as a signature has), hashes
    in upper case, and the IPP beside the INS in PID-3 (``^PI``)."""
    members = archive.read_members(_package())
    metadata = members[METADATA].decode()
    first, second = metadata.split("<ExtrinsicObject", 2)[1:]
    bare = re.sub(r'<Slot name="sourcePatientInfo">.*?</Slot>', "", second, count=1, flags=re.S)
    metadata = metadata.replace(second, bare)
    metadata = re.sub(
        r"<Value>([0-9a-f]{40})</Value>", lambda m: f"<Value>{m.group(1).upper()}</Value>", metadata
    )
    metadata = metadata.replace(
        "<Value>PID-5|PAT-TROIS", "<Value>PID-3|1234567890121^^^&amp;1.2.3.4.567.8.9.10&amp;ISO^PI</Value>"
        "<Value>PID-5|PAT-TROIS", 1,
    )  # fmt: skip
    assert "sourcePatientInfo" in first and "PID-3|" in metadata and re.search("[0-9A-F]{40}", metadata)
    members[METADATA] = metadata.encode()
    package = xdm.parse_package(archive.write_archive(list(members.items()), when=NOW))
    assert package.problems == ()
    assert package.patient is not None and package.patient.birth_name == "PAT-TROIS"


def test_a_zip_without_metadata_is_not_xdm() -> None:
    data = archive.write_archive([("README.TXT", b"hi")], when=NOW)
    with pytest.raises(xdm.XdmError, match="no IHE_XDM/<subset>/METADATA.XML"):
        xdm.parse_package(data)


EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<lcm:SubmitObjectsRequest xmlns:lcm="urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
 >&secret;</lcm:SubmitObjectsRequest>
"""


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        (BILLION_LAUGHS, "METADATA.XML declares the entity 'lol'.*billion laughs"),
        (EXTERNAL_ENTITY, "METADATA.XML declares the external entity 'secret'"),
    ],
)
def test_xml_attacks_in_metadata_are_refused(metadata: bytes, message: str, tmp_path: Path) -> None:
    data = _rebuild(_package(), {METADATA: metadata})
    with pytest.raises(UnsafeXmlError, match=message):
        xdm.parse_package(data)
    assert list(tmp_path.iterdir()) == []


def test_xml_attack_in_a_cda_document_is_refused() -> None:
    data = _rebuild(_package(), {"IHE_XDM/SUBSET01/DOC0001.XML": BILLION_LAUGHS})
    with pytest.raises(UnsafeXmlError, match="DOC0001.XML declares the entity"):
        xdm.parse_package(data)


def test_malformed_metadata_is_a_syntax_error() -> None:
    data = _rebuild(_package(), {METADATA: b"<lcm:SubmitObjectsRequest"})
    with pytest.raises(XmlSyntaxError, match="METADATA.XML is not well-formed"):
        xdm.parse_package(data)


def test_build_refuses_what_it_cannot_package() -> None:
    with pytest.raises(xdm.XdmBuildError, match="at least one document"):
        xdm.build_package(patient(), [], now=NOW)
    with pytest.raises(xdm.XdmBuildError, match="no INS matricule"):
        xdm.build_package(patient(matricule=""), [pdf_document()], now=NOW)
    naive = dataclasses.replace(pdf_document(), creation_time=datetime(2024, 1, 1))
    with pytest.raises(xdm.XdmBuildError, match="has no time zone"):
        xdm.build_package(patient(), [naive], now=NOW)


def test_cda_codes_come_from_cda_headers_only() -> None:
    bio = cda_document(type_code=Code("11502-2", "CR d'examens biologiques", xds.LOINC_OID))
    signature = dataclasses.replace(
        cda_document(), content=b'<Signature xmlns="http://www.w3.org/2000/09/xmldsig#"/>', filename="SIG.XML"
    )
    data = xdm.build_package(patient(), [cda_document(), pdf_document(), bio, signature], now=NOW)
    package = xdm.parse_package(data)
    assert xdm.package_cda_codes(package) == ("18748-4", "11502-2")
    assert package.problems == ()  # the signature is other XML, nothing wrong with it


def test_unqualified_identity_is_reported() -> None:
    incomplete = patient(birth_date=None)
    package = xdm.parse_package(xdm.build_package(incomplete, [cda_document(incomplete)], now=NOW))
    assert not package.ins_qualified


names = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=20
).filter(lambda s: s.strip() == s and " " not in s)


@settings(max_examples=40, deadline=None)
@given(
    birth_name=names,
    given_name=names,
    sex=st.sampled_from(Sex),
    content=st.binary(max_size=200),
    title=st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=40),
    when=st.datetimes(
        min_value=datetime(1990, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)
    ).map(lambda d: d.replace(microsecond=0)),
)
def test_round_trip_property(
    birth_name: str, given_name: str, sex: Sex, content: bytes, title: str, when: datetime
) -> None:
    person = Patient("279035121518989", "1.2.250.1.213.1.4.8", birth_name, given_name, None, sex)
    document = dataclasses.replace(
        pdf_document(), content=content, title=title, creation_time=when, filename="DOC0001.PDF"
    )
    package = xdm.parse_package(xdm.build_package(person, [document], now=when))
    assert package.problems == ()
    assert package.patient == person
    assert package.documents == (document,)


def test_characters_xml_cannot_carry_are_replaced_not_fatal() -> None:
    document = dataclasses.replace(pdf_document(), title="CR\x08 \ud800 final")
    package = xdm.parse_package(xdm.build_package(patient(), [document], now=NOW))
    assert package.documents[0].title == "CR\ufffd \ufffd final"


def test_white_space_and_case_in_names_are_not_problems() -> None:
    spaced = patient(given_name="Dominique ", birth_name="pat-trois")
    data = xdm.build_package(patient(), [cda_document(spaced)], now=NOW)
    assert xdm.parse_package(data).problems == ()


def test_invalid_ins_in_metadata_is_flagged_masked() -> None:
    wrong = patient(matricule="279035121518988")
    package = xdm.parse_package(xdm.build_package(wrong, [pdf_document()], now=NOW))
    assert package.problems == (
        "METADATA.XML: INS 2************88 is not a valid matricule: key 89 expected, got 88",
    )
    assert not package.ins_qualified


def test_patient_from_submission_set_when_entries_have_no_traits() -> None:
    members = archive.read_members(_package())
    text = members[METADATA].decode()
    start = text.index('<Slot name="sourcePatientInfo">')
    while start >= 0:
        end = text.index("</Slot>", start) + len("</Slot>")
        text = text[:start] + text[end:]
        start = text.find('<Slot name="sourcePatientInfo">')
    members[METADATA] = text.encode()
    package = xdm.parse_package(archive.write_archive(list(members.items()), when=NOW))
    assert package.patient is not None
    assert package.patient.matricule == "279035121518989"
    assert package.patient.birth_name == ""


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_damaged_packages_raise_only_mapping_errors(data: st.DataObject) -> None:
    """Flipped bytes anywhere (headers, deflate streams, XML) give a package or a MappingError."""
    original = bytearray(_package())
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(original) - 1))
        original[position] = data.draw(st.integers(0, 255))
    try:
        xdm.parse_package(bytes(original))
    except MappingError as error:
        assert str(error)


_xml_fragments = st.sampled_from(
    [
        "²", "-1", "", "abc", "1.2.3", "^^^&&^", "PID-5|", "PID-7|1979", "PID-7|19791399", "PID-8|X",
        "PID-11|^", "2024", "20241399", "0" * 20, "&amp;", "\u00e9",
    ]
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_odd_metadata_values_become_problems_not_crashes(data: st.DataObject) -> None:
    """Every <Value> and attribute value replaced by odd strings: a package or a MappingError."""
    members = archive.read_members(_package())
    text = members[METADATA].decode()
    for marker in ("<Value>", 'value="', 'nodeRepresentation="', 'mimeType="'):
        pieces = text.split(marker)
        text = pieces[0] + "".join(
            marker + (data.draw(_xml_fragments) + piece if data.draw(st.booleans()) else piece)
            for piece in pieces[1:]
        )
    members[METADATA] = text.encode()
    try:
        package = xdm.parse_package(archive.write_archive(list(members.items()), when=NOW))
    except MappingError as error:
        assert str(error)
    else:
        assert isinstance(package.problems, tuple)


def test_type_code_differing_from_the_cda_code_is_flagged() -> None:
    document = dataclasses.replace(
        cda_document(), type_code=Code("11490-0", "Lettre de liaison", xds.LOINC_OID)
    )
    package = xdm.parse_package(xdm.build_package(patient(), [document], now=NOW))
    assert package.problems == (
        "DOC0001.XML: typeCode 11490-0 in METADATA.XML, code 18748-4 in the CDA header",
    )
    assert xdm.package_cda_codes(package) == ("18748-4",)


ANS_STYLE_METADATA = b"""<?xml version="1.0" encoding="UTF-8"?>
<ns3:SubmitObjectsRequest xmlns:ns3="urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
    xmlns="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0">
 <RegistryObjectList>
  <RegistryPackage id="SubmissionSet01">
   <Slot name="submissionTime"><ValueList><Value>20240116151112</Value></ValueList></Slot>
   <ExternalIdentifier id="ei1" identificationScheme="urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446"
     registryObject="SubmissionSet01" value="162018885045327^^^&amp;1.2.250.1.213.1.4.10&amp;ISO^NH"/>
   <ExternalIdentifier id="ei3" identificationScheme="urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8"
     registryObject="SubmissionSet01" value="1.2.250.1.999.1.1.8121.4.9618"/>
  </RegistryPackage>
  <Classification classificationNode="urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"
    classifiedObject="SubmissionSet01" id="cla3"/>
  <ExtrinsicObject id="DocumentKOS" mimeType="application/dicom"
    objectType="urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1">
   <Slot name="creationTime"><ValueList><Value>20240116151112</Value></ValueList></Slot>
   <Slot name="sourcePatientId"><ValueList>
     <Value>162018885045327^^^&amp;1.2.250.1.213.1.4.10&amp;ISO^PI</Value></ValueList></Slot>
   <Slot name="hash"><ValueList><Value>5a4009cca445f28810fd34dc8e3526cbe9814664</Value></ValueList></Slot>
   <Slot name="size"><ValueList><Value>5164</Value></ValueList></Slot>
   <Slot name="sourcePatientInfo"><ValueList>
     <Value>PID-5|PAT-SIX^Alain^^^^^L</Value><Value>PID-7|19960124</Value><Value>PID-8|M</Value>
   </ValueList></Slot>
   <Name><LocalizedString charset="UTF8" value="Reference d'Objets d'un Examen d'Imagerie"
     xml:lang="FR"/></Name>
   <Classification classificationScheme="urn:uuid:f0306f51-975f-434e-a61c-c59651d33983"
     classifiedObject="DocumentKOS" id="c1" nodeRepresentation="IMG-KOS">
    <Slot name="codingScheme"><ValueList><Value>1.2.250.1.213.1.1.4.12</Value></ValueList></Slot>
   </Classification>
   <ExternalIdentifier id="ei4" identificationScheme="urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
     registryObject="DocumentKOS" value="162018885045327^^^&amp;1.2.250.1.213.1.4.10&amp;ISO^NH"/>
   <ExternalIdentifier id="ei5" identificationScheme="urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"
     registryObject="DocumentKOS" value="1.3.2.751468943.3.1234.99352.240116151112.1.1.1"/>
   <Slot name="URI"><ValueList><Value>SS000001/KOS_1_1.DCM</Value></ValueList></Slot>
  </ExtrinsicObject>
 </RegistryObjectList>
</ns3:SubmitObjectsRequest>
"""


def test_reads_a_package_laid_out_like_the_ans_drimbox_sample() -> None:
    """MSSANTE.md §5.5: ns3 prefix, subset SS000001, URI relative to IHE_XDM/, slots after identifiers."""
    data = archive.write_archive(
        [
            ("IHE_XDM/SS000001/METADATA.XML", ANS_STYLE_METADATA),
            ("IHE_XDM/SS000001/KOS_1_1.DCM", b"DICM not the real file"),
        ],
        when=NOW,
    )
    package = xdm.parse_package(data)
    assert package.patient is not None
    assert (package.patient.matricule, package.patient.oid) == ("162018885045327", ins.TEST_OID)
    assert (package.patient.birth_name, package.patient.given_name) == ("PAT-SIX", "Alain")
    assert package.patient.sex is Sex.MALE
    assert package.submission is not None
    assert package.submission.unique_id == "1.2.250.1.999.1.1.8121.4.9618"
    assert package.documents[0].title == "Reference d'Objets d'un Examen d'Imagerie"
    (document,) = package.documents
    assert document.filename == "SS000001/KOS_1_1.DCM"
    assert document.type_code == Code("IMG-KOS", "", "1.2.250.1.213.1.1.4.12")
    assert document.content == b"DICM not the real file"
    assert any("SHA-1 in METADATA.XML is 5a4009cc" in p for p in package.problems)
    assert any("size in METADATA.XML is 5164 bytes" in p for p in package.problems)
    assert package.ins_qualified  # no CDA: the metadata traits are complete


def test_second_subset_about_another_patient_is_flagged() -> None:
    first = archive.read_members(_package())
    stranger = patient(matricule="146026322000196", birth_name="PAT-UN", sex=Sex.MALE)
    second = archive.read_members(xdm.build_package(stranger, [cda_document(stranger)], now=NOW))
    members = dict(first)
    members["IHE_XDM/SUBSET02/METADATA.XML"] = second[METADATA]
    members["IHE_XDM/SUBSET02/DOC0001.XML"] = second["IHE_XDM/SUBSET01/DOC0001.XML"]
    package = xdm.parse_package(archive.write_archive(list(members.items()), when=NOW))
    assert len(package.documents) == 3
    assert package.patient == patient()
    assert "DOC0001.XML: patientId differs from the SubmissionSet's" in package.problems


def test_cda_without_ins_is_flagged() -> None:
    document = cda_document()
    without_ins = document.content.replace(b'root="1.2.250.1.213.1.4.10"', b'root="1.2.3.4"')
    changed = dataclasses.replace(document, content=without_ins)
    package = xdm.parse_package(xdm.build_package(patient(), [changed], now=NOW))
    assert package.problems == ("DOC0001.XML: the CDA header has no INS identifier",)
    assert package.cda_patient is None
    assert len(package.cda_headers) == 1
    assert not package.ins_qualified  # the metadata has it, but ECO.2.4.2 asks the CDA


@given(st.text(alphabet=st.sampled_from("\\EFSTR^&~|a "), max_size=20))
def test_hl7_escaping_round_trips_even_text_that_looks_escaped(text: str) -> None:
    # Regression: "\R\" escaped to "\E\R\E\" used to read back as "\E~E\".
    assert xds.hl7_unescape(xds.hl7_escape(text)) == text
