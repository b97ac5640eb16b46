"""``mssgw xdm build --doc cr.xml``: METADATA.XML says everything the CDA header says (the CI-SIS annex "lien
entre l'en-tête CDA et les métadonnées XDS"), each value read back and checked, without --type-code; and the
XDS-only values no header part carries (classCode, a structured CDA's formatCode, the SubmissionSet's
contentTypeCode) from their options."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.cli import main
from mappers import archive, xds
from mappers.documents import Author, Code
from mappers.metadata_read import parse_metadata

LOINC = "2.16.840.1.113883.6.1"
# A CR de biologie written for this test from the CI-SIS header profile: every part METADATA.XML repeats.
CDA = """<?xml version="1.0" encoding="UTF-8"?>
<ClinicalDocument xmlns="urn:hl7-org:v3">
  <realmCode code="FR"/>
  <typeId root="2.16.840.1.113883.1.3" extension="POCD_HD000040"/>
  <id root="1.2.250.1.999.1.2" extension="CRBIO-2026-0042"/>
  <code code="11502-2" displayName="CR d'examens biologiques" codeSystem="2.16.840.1.113883.6.1"/>
  <title>Bilan sanguin du 3 décembre</title>
  <effectiveTime value="20261203101500+0100"/>
  <confidentialityCode code="R" displayName="Restreint" codeSystem="2.16.840.1.113883.5.25"/>
  <languageCode code="fr-FR"/>
  <recordTarget><patientRole>
    <id root="1.2.250.1.213.1.4.8" extension="279035121518989"/>
    <patient>
      <name><family qualifier="BR">PAT-TROIS</family><given qualifier="BR">DOMINIQUE</given></name>
      <administrativeGenderCode code="F" codeSystem="2.16.840.1.113883.5.1"/>
      <birthTime value="19790328"/>
    </patient>
  </patientRole></recordTarget>
  <author>
    <functionCode code="AUTHOR" displayName="Auteur" codeSystem="1.2.250.1.213.1.1.4.2.282"/>
    <time value="20261203101500+0100"/>
    <assignedAuthor>
      <id root="1.2.250.1.71.4.2.1" extension="810002345678"/>
      <code code="G15_10/SM05" displayName="Médecin - Biologie médicale" codeSystem="1.2.250.1.213.1.1.4.5"/>
      <assignedPerson><name><family>BIOLO</family><given>Claire</given></name></assignedPerson>
      <representedOrganization>
        <id root="1.2.250.1.71.4.2.2" extension="1750000123"/>
        <name>Laboratoire du CH Exemple</name>
        <standardIndustryClassCode code="ETABLISSEMENT" displayName="Etablissement de santé"
                                   codeSystem="1.2.250.1.213.1.1.4.9"/>
      </representedOrganization>
    </assignedAuthor>
  </author>
  <legalAuthenticator>
    <time value="20261203110000+0100"/>
    <signatureCode code="S"/>
    <assignedEntity>
      <id root="1.2.250.1.71.4.2.1" extension="810009876543"/>
      <assignedPerson><name><family>SIGNE</family><given>Paul</given></name></assignedPerson>
    </assignedEntity>
  </legalAuthenticator>
  <documentationOf><serviceEvent>
    <code code="1000" displayName="Hémogramme" codeSystem="1.2.250.1.213.2.99"/>
    <effectiveTime><low value="20261203080000+0100"/><high value="20261203093000+0100"/></effectiveTime>
  </serviceEvent></documentationOf>
  <componentOf><encompassingEncounter>
    <effectiveTime value="20261203080000+0100"/>
    <location><healthCareFacility>
      <code code="SA01" displayName="Etablissement public de santé" codeSystem="1.2.250.1.71.4.2.4"/>
    </healthCareFacility></location>
  </encompassingEncounter></componentOf>
  <component><structuredBody><component><section><text>Hémoglobine 13,2 g/dL</text></section></component>
  </structuredBody></component>
</ClinicalDocument>
"""
PATIENT = {"matricule": "279035121518989", "oid": "1.2.250.1.213.1.4.8", "birth_name": "PAT-TROIS",
           "given_name": "DOMINIQUE", "birth_date": "1979-03-28", "sex": "F"}  # fmt: skip


def build(tmp_path: Path, *options: str) -> list[str]:
    (tmp_path / "cr.xml").write_text(CDA, encoding="utf-8")
    (tmp_path / "patient.json").write_text(json.dumps(PATIENT), encoding="utf-8")
    return ["xdm", "build", "--patient", str(tmp_path / "patient.json"), "--doc", str(tmp_path / "cr.xml"),
            *options, "-o", str(tmp_path / "out.zip")]  # fmt: skip


# XDS-only values, made up for the test (no ANS value-set content): the site's own choices.
CLASS = Code("11", "Résultats d'examens", xds.CLASS_CODE_OID)
FORMAT = Code("urn:mssgw:test:cr-bio", "Format de test", "1.2.250.1.999.9.1")
CONTENT_TYPE = Code("04", "Hospitalisation de jour", xds.CONTENT_TYPE_OID)


def test_every_header_value_is_in_metadata_xml(tmp_path: Path) -> None:
    options = (
        "--class-code", f"{CLASS.code}^{CLASS.label}",
        "--format-code", f"{FORMAT.code}^{FORMAT.label}^{FORMAT.scheme}",
        "--content-type-code", f"{CONTENT_TYPE.code}^{CONTENT_TYPE.label}",
    )  # fmt: skip
    command = [sys.executable, "-m", "gateway", *build(tmp_path, *options)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stderr) == (0, "")
    members = archive.read_members((tmp_path / "out.zip").read_bytes())
    metadata = parse_metadata(members["IHE_XDM/SUBSET01/METADATA.XML"])
    assert metadata.submission is not None
    assert metadata.submission.content_type == CONTENT_TYPE
    [entry] = metadata.entries
    document = entry.document
    assert document.class_code == CLASS
    assert document.format_code == FORMAT
    assert document.type_code == Code("11502-2", "CR d'examens biologiques", LOINC)
    assert document.title == "Bilan sanguin du 3 décembre"
    assert document.unique_id == "1.2.250.1.999.1.2^CRBIO-2026-0042"
    assert document.creation_time == datetime(2026, 12, 3, 9, 15, tzinfo=UTC)
    assert document.language == "fr-FR"
    assert Code("R", "Restreint", "2.16.840.1.113883.5.25") in document.confidentiality
    assert document.event_codes == (Code("1000", "Hémogramme", "1.2.250.1.213.2.99"),)
    assert (document.service_start, document.service_stop) == (
        datetime(2026, 12, 3, 7, 0, tzinfo=UTC),
        datetime(2026, 12, 3, 8, 30, tzinfo=UTC),
    )
    assert document.legal_authenticator == Author(rpps="810009876543", family_name="SIGNE", given_name="Paul")
    assert document.healthcare_facility_type == Code(
        "SA01", "Etablissement public de santé", "1.2.250.1.71.4.2.4"
    )
    assert document.practice_setting == Code(
        "ETABLISSEMENT", "Etablissement de santé", "1.2.250.1.213.1.1.4.9"
    )
    assert document.author == Author(
        rpps="810002345678",
        family_name="BIOLO",
        given_name="Claire",
        institution_name="Laboratoire du CH Exemple",
        institution_id="1750000123",
        specialty=Code("G15_10/SM05", "Médecin - Biologie médicale", "1.2.250.1.213.1.1.4.5"),
        role=Code("AUTHOR", "Auteur", "1.2.250.1.213.1.1.4.2.282"),
    )


def test_a_type_code_contradicting_the_cda_header_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(build(tmp_path, "--type-code", "11490-0", "--type-label", "Lettre")) == 65
    assert "mssgw: --type-code: 11490-0 given, but " in capsys.readouterr().err
    assert not (tmp_path / "out.zip").exists()


@pytest.mark.parametrize(
    ("option", "value"),
    [("--class-code", "11"), ("--format-code", "urn:x^Format"), ("--content-type-code", "0 4^Jour")],
)
def test_a_malformed_xds_code_option_is_refused_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: str
) -> None:
    assert main(build(tmp_path, option, value)) == 65
    assert capsys.readouterr().err.startswith(f"mssgw: {option}: ")
    assert not (tmp_path / "out.zip").exists()


def test_the_xds_codes_no_header_carries_are_said_when_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(build(tmp_path)) == 0
    assert capsys.readouterr().err.splitlines() == [
        "mssgw: note: 1 document(s) without an XDS classCode (JDV_J06) in METADATA.XML: give --class-code",
        "mssgw: note: 1 structured CDA(s) without an XDS formatCode (JDV_J10; not derived from the "
        "templateId) in METADATA.XML: give --format-code",
        "mssgw: note: no SubmissionSet contentTypeCode (JDV_J03) in METADATA.XML: give --content-type-code",
    ]
