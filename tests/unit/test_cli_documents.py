"""``mssgw ins check``, ``mssgw xdm show`` and ``mssgw xdm build`` through ``gateway.cli.main``."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.cli import main
from mappers import archive, cda, xdm, xds
from mappers.documents import Author, Code
from mappers.patient import Sex

from .mappers.samples import (
    BILLION_LAUGHS,
    NOW,
    cda_document,
    patient,
    pdf_document,
    set_declared_size,
    zip_members,
)


def test_ins_check_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ins", "check", "2 79 03 51 215 189 89", "--oid", "1.2.250.1.213.1.4.10"]) == 0
    out = capsys.readouterr().out
    assert "279035121518989: valid INS matricule" in out
    assert "woman, born 1979-03, department 51, key 89" in out
    assert "INS-NIR-TEST (1.2.250.1.213.1.4.10) - test data only" in out
    assert "citizen address: 279035121518989@patient.mssante.fr" in out


def test_ins_check_born_abroad(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ins", "check", "288079921600129"]) == 0
    assert "woman, born 1988-07, department 99 (born abroad" in capsys.readouterr().out


def test_ins_check_citizen_address(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ins", "check", "146026322000196@PATIENT.MSSANTE.FR"]) == 0
    assert "man, born 1946-02, department 63" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("279035121518988", "key 89 expected, got 88"),
        ("2790351215189", "2-digit key is missing"),
        ("279135121518989", "month 13 is not a month"),
        ("279035121518989@mssante.fr", "is not patient.mssante.fr"),
    ],
)
def test_ins_check_invalid_exits_65(value: str, reason: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ins", "check", value]) == 65
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "invalid INS matricule" in captured.err and reason in captured.err


def test_ins_check_unknown_oid(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ins", "check", "279035121518989", "--oid", "1.2.3"]) == 65
    assert "not an INS assigning authority" in capsys.readouterr().err


def _package_file(tmp_path: Path) -> Path:
    path = tmp_path / "IHE_XDM.zip"
    path.write_bytes(xdm.build_package(patient(), [cda_document(), pdf_document()], now=NOW))
    return path


def test_xdm_show_masks_the_ins(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["xdm", "show", str(_package_file(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "Patient: PAT-TROIS DOMINIQUE, sex F, born 1979-03-28, INS 2************89 (INS-NIR-TEST)" in out
    assert "279035121518989" not in out
    assert "Qualified INS (X-MSS-INS): O" in out
    assert "Documents (2):" in out and "1. DOC0001.XML  text/xml" in out
    assert "masking: MASQUE_PS, INVISIBLE_PATIENT" in out
    assert "CDA codes (X-MSS-CODECDA): 18748-4" in out
    assert "Problems: none" in out


def test_xdm_show_reveal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["xdm", "show", "--reveal", str(_package_file(tmp_path))]) == 0
    assert "INS 279035121518989 (INS-NIR-TEST)" in capsys.readouterr().out


def test_xdm_show_lists_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    members = archive.read_members(_package_file(tmp_path).read_bytes())
    members["IHE_XDM/SUBSET01/DOC0002.PDF"] = b"%PDF-1.4 tampered"
    path = tmp_path / "tampered.zip"
    path.write_bytes(archive.write_archive(list(members.items()), when=NOW))
    assert main(["xdm", "show", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Problems (2):" in out and "DOC0002.PDF: SHA-1 in METADATA.XML is" in out
    assert main(["xdm", "show", "--strict", str(path)]) == 65


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (zip_members(("../../evil.sh", b"#!/bin/sh")), "climbs out of the archive"),
        (set_declared_size(zip_members(("IHE_XDM/S/DOC0001.XML", b"x")), 1 << 30), "1073741824 bytes"),
        (zip_members(("IHE_XDM/SUBSET01/METADATA.XML", BILLION_LAUGHS)), "billion laughs"),
        (b"not a zip", "not a readable ZIP"),
    ],
)
def test_xdm_show_refuses_malicious_packages(
    content: bytes, reason: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "evil.zip"
    path.write_bytes(content)
    assert main(["xdm", "show", str(path)]) == 65
    err = capsys.readouterr().err
    assert "refused" in err and reason in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["evil.zip"]


def test_xdm_show_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["xdm", "show", str(tmp_path / "nope.zip")]) == 65
    assert "cannot read package" in capsys.readouterr().err


def _patient_json(tmp_path: Path, **changes: object) -> Path:
    data: dict[str, object] = {
        "matricule": "279035121518989",
        "oid": "1.2.250.1.213.1.4.10",
        "birth_name": "PAT-TROIS",
        "given_name": "DOMINIQUE",
        "birth_date": "1979-03-28",
        "sex": "F",
    }
    data.update(changes)
    path = tmp_path / "patient.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


HEADER_OPTIONS = (
    "--institution-id", "499700367909006",
    "--facility-type", "SA01^Etablissement public de santé",
    "--practice-setting", "ETABLISSEMENT^Etablissement de santé",
)  # fmt: skip
"""With the author, what the CI-SIS makes mandatory in the header of a wrapper (nullFlavor refused)."""
AUTHOR_OPTIONS = ("--author-rpps", "899700367909", "--author-family", "DOC0036790", "--author-given", "KIT")


def test_xdm_build_then_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pdf = tmp_path / "lettre.pdf"
    pdf.write_bytes(b"%PDF-1.4\n%%EOF\n")
    cda_file = tmp_path / "cr.xml"
    cda_file.write_bytes(cda_document().content)
    out = tmp_path / "out.zip"
    argv = [
        "xdm", "build", "--patient", str(_patient_json(tmp_path)),
        "--doc", str(pdf), "--doc", str(cda_file),
        "--type-code", "11490-0", "--type-label", "Lettre de liaison",
        "--date", "2024-01-16T16:11:12+01:00", "--author-rpps", "899700367909",
        "--author-family", "KIT", "--confidentiality", "MASQUE_PS", "-o", str(out), *HEADER_OPTIONS,
    ]  # fmt: skip
    assert main(argv) == 0
    assert "wrote" in capsys.readouterr().out
    package = xdm.parse_package(out.read_bytes())
    assert package.problems == ()
    assert package.ins_qualified
    assert [d.type_code.code for d in package.documents] == ["11490-0", "18748-4"]
    assert package.documents[0].creation_time == NOW
    assert package.documents[0].confidentiality[0].code == "MASQUE_PS"
    assert xdm.package_cda_codes(package) == ("11490-0", "18748-4")
    assert main(argv) == 65
    assert "exists (use --force" in capsys.readouterr().err


def _build_from_a_pdf(tmp_path: Path, *options: str) -> int:
    """``mssgw xdm build`` of one PDF for the patient file, with the given options, into out.zip."""
    pdf = tmp_path / "cr.pdf"
    pdf.write_bytes(b"%PDF-1.4\n%%EOF\n")
    argv = ["xdm", "build", "--patient", str(_patient_json(tmp_path)), "--doc", str(pdf), *options]
    return main([*argv, "-o", str(tmp_path / "out.zip")])


def test_xdm_build_makes_the_author_legal_authenticator_of_a_wrapped_pdf(tmp_path: Path) -> None:
    """The CDA around a PDF and its METADATA.XML entry both name the author as legal authenticator."""
    options = [
        "--type-code", "11490-0", "--type-label", "Lettre de liaison", "--author-rpps", "899700367909",
        "--author-family", "DOC0036790", "--author-given", "KIT", *HEADER_OPTIONS,
    ]  # fmt: skip
    assert _build_from_a_pdf(tmp_path, *options) == 0
    package = xdm.parse_package((tmp_path / "out.zip").read_bytes())
    signer = Author(rpps="899700367909", family_name="DOC0036790", given_name="KIT")
    assert package.documents[0].legal_authenticator == signer
    assert cda.read_header(package.documents[0].content).metadata.legal_authenticator == signer


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"matricule": "279035121518988"}, "key 89 expected, got 88"),
        ({"oid": "1.2.3"}, "not an INS assigning authority"),
        ({"sex": "X"}, "sex M/F/U"),
        ({"given_name": ""}, "'given_name' is required"),
        ({"colour": "blue"}, "unknown keys colour"),
    ],
)
def test_xdm_build_refuses_bad_patients(
    changes: dict[str, object], reason: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pdf = tmp_path / "a.pdf"
    pdf.write_bytes(b"%PDF-1.4\n")
    out = tmp_path / "out.zip"
    argv = ["xdm", "build", "--patient", str(_patient_json(tmp_path, **changes)), "--doc", str(pdf),
            "--type-code", "11490-0", "--type-label", "Lettre", "-o", str(out)]  # fmt: skip
    assert main(argv) == 65
    assert reason in capsys.readouterr().err
    assert not out.exists()


def _build_argv(tmp_path: Path, *docs: Path, patient: Path | None = None) -> list[str]:
    argv = ["xdm", "build", *(["--patient", str(patient)] if patient else [])]
    for doc in docs:
        argv += ["--doc", str(doc)]
    argv += ["--type-code", "11490-0", "--type-label", "Lettre", *AUTHOR_OPTIONS, *HEADER_OPTIONS]
    return [*argv, "-o", str(tmp_path / "out.zip")]


def test_xdm_build_refuses_a_cda_about_another_patient_naming_each_difference(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cda_file = tmp_path / "cr.xml"
    other = patient(matricule="180077512345659", birth_name="MARTIN", sex=Sex.MALE)
    cda_file.write_bytes(cda_document(other).content)
    assert main(_build_argv(tmp_path, cda_file, patient=_patient_json(tmp_path))) == 65
    err = capsys.readouterr().err
    assert err.startswith(f"mssgw: --doc: one patient per message: {cda_file}: ")
    assert "INS matricule 2************89 in the patient file, 1************59 in the document" in err
    assert "birth name PAT-TROIS in the patient file, MARTIN in the document" in err
    assert "sex F in the patient file, M in the document" in err
    assert "279035121518989" not in err and "180077512345659" not in err
    assert not (tmp_path / "out.zip").exists()


def test_xdm_build_without_a_patient_file_takes_the_patient_the_cda_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pdf = tmp_path / "lettre.pdf"
    pdf.write_bytes(b"%PDF-1.4\n%%EOF\n")
    cda_file = tmp_path / "cr.xml"
    cda_file.write_bytes(cda_document().content)
    assert main(_build_argv(tmp_path, pdf, cda_file)) == 0
    package = xdm.parse_package((tmp_path / "out.zip").read_bytes())
    assert package.problems == () and package.patient is not None
    assert package.patient.matricule == patient().matricule
    assert main([*_build_argv(tmp_path, pdf), "--force"]) == 65
    assert "a PDF names no patient: give --patient too" in capsys.readouterr().err


def test_xdm_show_of_a_package_without_cda_reports_no_cda_and_no_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A DICOM KOS and an XML signature: no CDA travels, so neither X-MSS header, and nothing wrong."""
    kos = dataclasses.replace(
        pdf_document(), filename="KOS.DCM", content=b"\0" * 128 + b"DICM", mime_type="application/dicom"
    )
    signature = dataclasses.replace(
        cda_document(),
        filename="SIGN.XML",
        content=b'<Signature xmlns="http://www.w3.org/2000/09/xmldsig#"/>',
    )
    path = tmp_path / "IHE_XDM.zip"
    path.write_bytes(xdm.build_package(patient(), [kos, signature], now=NOW))
    assert main(["xdm", "show", str(path), "--strict"]) == 0
    out = capsys.readouterr().out
    assert "CDA codes (X-MSS-CODECDA): -" in out
    assert "Qualified INS (X-MSS-INS): - (no CDA: the header is absent)" in out
    assert "Problems: none" in out


def test_xdm_build_writes_facility_setting_and_acts_of_a_wrapped_pdf(tmp_path: Path) -> None:
    """--facility-type, --practice-setting and --event-code reach the CDA header and METADATA.XML."""
    options = [
        "--type-code", "18748-4", "--type-label", "CR d'imagerie médicale",
        "--facility-type", "SA01^Etablissement public de santé",
        "--practice-setting", "ETABLISSEMENT^Etablissement de santé",
        "--event-code", "ACQH004^Scanographie^1.2.250.1.213.2.5",
        "--author-role", "10^Médecin^1.2.250.1.71.1.2.7",
        "--author-specialty", "SM44^Radio-diagnostic^1.2.250.1.71.4.2.5",
        *AUTHOR_OPTIONS, "--institution-id", "499700367909006",
    ]  # fmt: skip
    assert _build_from_a_pdf(tmp_path, *options) == 0
    document = xdm.parse_package((tmp_path / "out.zip").read_bytes()).documents[0]
    known = cda.read_header(document.content).metadata
    facility = Code("SA01", "Etablissement public de santé", xds.FACILITY_TYPE_OID)
    assert known.healthcare_facility_type == document.healthcare_facility_type == facility
    assert known.practice_setting == document.practice_setting
    assert document.practice_setting is not None and document.practice_setting.code == "ETABLISSEMENT"
    header_author = cda.read_header(document.content).author
    assert header_author is not None and document.author is not None
    assert header_author.role == document.author.role == Code("10", "Médecin", "1.2.250.1.71.1.2.7")
    assert header_author.specialty == document.author.specialty
    assert (
        known.event_codes == document.event_codes == (Code("ACQH004", "Scanographie", "1.2.250.1.213.2.5"),)
    )


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--facility-type", "SA01"),
        ("--practice-setting", "^Etablissement"),
        ("--event-code", "ACQH004^Scano"),
        ("--author-role", "10^Médecin"),
    ],
)
def test_xdm_build_refuses_an_incomplete_code_naming_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: str
) -> None:
    assert _build_from_a_pdf(tmp_path, "--type-code", "18748-4", "--type-label", "CR", option, value) == 65
    assert f"{option}: {value!r} is not" in capsys.readouterr().err


def test_xdm_build_of_a_pdf_without_header_values_names_the_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Never an UNK nullFlavor: the wrapper's missing mandatory values are refused naming each option."""
    options = ["--type-code", "11490-0", "--type-label", "Lettre", "--author-family", "DOC0036790"]
    assert _build_from_a_pdf(tmp_path, *options) == 65
    err = capsys.readouterr().err
    assert err.startswith("mssgw: --author-rpps, --institution-id, --practice-setting, --facility-type: ")
    assert "CI-SIS: mandatory, no nullFlavor" in err and "[documents] settings" in err
    assert not (tmp_path / "out.zip").exists()


def test_xdm_build_refuses_what_is_not_an_rpps_number(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    options = ["--type-code", "11490-0", "--type-label", "Lettre", *HEADER_OPTIONS, "--author-rpps", "12"]
    assert _build_from_a_pdf(tmp_path, *options) == 65
    assert "mssgw: --author-rpps: '12' is not an RPPS number" in capsys.readouterr().err


def test_xdm_build_service_times_reach_the_cda_and_metadata(tmp_path: Path) -> None:
    options = [
        "--type-code", "11490-0", "--type-label", "Lettre", *AUTHOR_OPTIONS, *HEADER_OPTIONS,
        "--date", "2024-01-16T16:11:12+01:00",
        "--service-start", "2024-01-16T09:22:00+01:00", "--service-stop", "2024-01-16T10:05:00+01:00",
    ]  # fmt: skip
    assert _build_from_a_pdf(tmp_path, *options) == 0
    document = xdm.parse_package((tmp_path / "out.zip").read_bytes()).documents[0]
    known = cda.read_header(document.content).metadata
    start, stop = datetime(2024, 1, 16, 8, 22, tzinfo=UTC), datetime(2024, 1, 16, 9, 5, tzinfo=UTC)
    assert (known.service_start, known.service_stop) == (document.service_start, document.service_stop)
    assert (document.service_start, document.service_stop) == (start, stop)


def test_xdm_build_service_start_defaults_to_the_document_date(tmp_path: Path) -> None:
    options = ["--type-code", "11490-0", "--type-label", "Lettre", *AUTHOR_OPTIONS, *HEADER_OPTIONS,
               "--date", "2024-01-16T16:11:12+01:00"]  # fmt: skip
    assert _build_from_a_pdf(tmp_path, *options) == 0
    document = xdm.parse_package((tmp_path / "out.zip").read_bytes()).documents[0]
    assert document.service_start == NOW and document.service_stop is None


@pytest.mark.parametrize("option", ["--service-start", "--service-stop"])
def test_xdm_build_refuses_a_service_time_without_offset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str
) -> None:
    options = ["--type-code", "11490-0", "--type-label", "Lettre", *AUTHOR_OPTIONS, *HEADER_OPTIONS,
               option, "2024-01-16T09:22:00"]  # fmt: skip
    assert _build_from_a_pdf(tmp_path, *options) == 65
    assert f"mssgw: {option}: '2024-01-16T09:22:00' needs a UTC offset" in capsys.readouterr().err
