"""``mssgw send``: what an internal application's message becomes in the store, and how bad input is refused
(exit 65 naming the field, nothing stored)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.settings import load
from gateway.store.db import open_store
from mappers import cda, xds
from mappers.documents import Code
from mappers.metadata import parse_metadata
from mappers.mime import parse_message
from mappers.patient import Patient, Sex
from tests.support import cda_header
from tests.support.gateway import folder_config

SENDER = "secretariat.cardio@hopital.test.mssante.fr"
PATIENT = {
    "matricule": "279035121518989",
    "oid": "1.2.250.1.213.1.4.8",
    "birth_name": "Écart",
    "given_name": "Hélène",
    "birth_date": "1979-03-28",
    "sex": "F",
}


def patient_file(directory: Path, **changes: str) -> Path:
    """``directory/patient.json``: :data:`PATIENT` (non-ASCII traits) with ``changes``."""
    path = directory / "patient.json"
    path.write_text(json.dumps({**PATIENT, **changes}), encoding="utf-8")
    return path


def report_pdf(directory: Path) -> Path:
    """``directory/cr.pdf``, a minimal PDF report."""
    path = directory / "cr.pdf"
    path.write_bytes(b"%PDF-1.4\n% compte rendu\n%%EOF\n")
    return path


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A gateway with the hospital's [documents] defaults, so a PDF's wrapper needs no header option."""
    return folder_config(
        tmp_path,
        documents=cda_header.SETTINGS,
        hostname="mssgw.hopital.test.mssante.fr",
        nil_reference="DEV935997",
    )


def stored(config: Path, queue_id: int) -> bytes:
    store = open_store(load(config).store_url)
    try:
        return store.queue.raw(queue_id)
    finally:
        store.close()


def test_a_document_for_a_patient_travels_in_an_xdm_package_with_mssante_headers(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    patient = patient_file(tmp_path)
    pdf = report_pdf(tmp_path)
    code = main([
        "send", "-c", str(config), "--from", SENDER, "--to", "dr.martin@cabinet.test.mssante.fr",
        "--subject", "ignored for documents", "--patient", str(patient), "--doc", str(pdf),
        "--type-code", "11490-0", "--type-label", "Lettre de liaison", "--date", "2026-11-20T10:00:00+01:00",
    ])  # fmt: skip
    assert code == 0
    queue_id = int(capsys.readouterr().out)
    raw = stored(config, queue_id)
    record = parse_message(raw)
    assert record.subject == "XDM/1.0/DDM+Lettre de liaison ECART Helene 28/03/1979"
    assert record.patient is not None and record.patient.matricule == PATIENT["matricule"]
    assert [d.type_code.code for d in record.documents] == ["11490-0"]
    headers = raw.split(b"\r\n\r\n", 1)[0].decode()
    assert (
        "X-MSS-INS: O" in headers
        and "X-MSS-CODECDA: 11490-0" in headers
        and "X-MSS-NIL: DEV935997" in headers
    )


@pytest.mark.parametrize(
    ("args", "field", "reason"),
    [
        (["--to", "not an address"], "--to", "is not a valid mail address"),
        (["--to", "a@b.test", "--doc", "/nonexistent/x.pdf"], "/nonexistent/x.pdf", "cannot read document"),
        (
            ["--to", "a@b.test", "--body-file", "/nonexistent/body.txt"],
            "/nonexistent/body.txt",
            "cannot read body",
        ),
    ],
)
def test_bad_input_is_refused_naming_the_field_and_nothing_is_stored(
    config: Path, capsys: pytest.CaptureFixture[str], args: list[str], field: str, reason: str
) -> None:
    code = main(["send", "-c", str(config), "--from", SENDER, "--subject", "x", *args])
    err = capsys.readouterr().err
    assert code == 65
    assert err.startswith(f"mssgw: {field}") and reason in err
    assert main(["queue", "list", "-c", str(config), "--all", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_a_patient_with_a_wrong_ins_key_is_refused(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    patient = patient_file(tmp_path, matricule="279035121518988")
    code = main(["send", "-c", str(config), "--from", SENDER, "--to", "a@b.test", "--subject", "x",
                 "--patient", str(patient)])  # fmt: skip
    assert code == 65
    assert "matricule: key 89 expected, got 88" in capsys.readouterr().err


def test_a_missing_configuration_exits_78(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["send", "-c", str(tmp_path / "none.toml"), "--from", SENDER, "--to", "a@b.test",
                 "--subject", "x"])  # fmt: skip
    assert code == 78
    assert "cannot read the file" in capsys.readouterr().err


OTHER = {**PATIENT, "matricule": "180077512345659", "birth_name": "Martin", "sex": "M"}
PRO = "dr.martin@cabinet.test.mssante.fr"


def cda_of(tmp_path: Path, person: dict[str, str], name: str = "cr.xml") -> Path:
    """A CDA R2 N1 written by our own builder (``mappers.cda``) for ``person``."""
    patient = Patient(
        person["matricule"], person["oid"], person["birth_name"], person["given_name"],
        date.fromisoformat(person["birth_date"]), Sex(person["sex"]),
    )  # fmt: skip
    content = cda.wrap_pdf(
        b"%PDF-1.4\n% compte rendu\n%%EOF\n", patient, title="Compte rendu",
        type_code=Code("11490-0", "Lettre de liaison", xds.LOINC_OID),
        effective_time=datetime(2026, 11, 20, 9, 0, tzinfo=UTC), document_id="1.2.250.1.999.1",
        **cda_header.WRAPPER,
    )  # fmt: skip
    path = tmp_path / name
    path.write_bytes(content)
    return path


def send(config: Path, *args: str) -> int:
    return main(["send", "-c", str(config), "--from", SENDER, "--subject", "x",
                 "--type-code", "11490-0", "--type-label", "Lettre de liaison", *args])  # fmt: skip


def queued(config: Path, capsys: pytest.CaptureFixture[str]) -> list[object]:
    assert main(["queue", "list", "-c", str(config), "--all", "--json"]) == 0
    result: list[object] = json.loads(capsys.readouterr().out)
    return result


def test_a_cda_about_another_patient_is_refused_naming_each_difference_and_nothing_is_queued(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cda_file = cda_of(tmp_path, OTHER)
    assert send(config, "--to", PRO, "--patient", str(patient_file(tmp_path)), "--doc", str(cda_file)) == 65
    err = capsys.readouterr().err
    assert err.startswith(f"mssgw: --doc: one patient per message: {cda_file}: INS matricule ")
    assert "INS matricule 2************89 in the patient file, 1************59 in the document" in err
    assert "birth name Écart in the patient file, Martin in the document" in err
    assert "sex F in the patient file, M in the document" in err
    assert PATIENT["matricule"] not in err and OTHER["matricule"] not in err
    assert queued(config, capsys) == []


@pytest.mark.parametrize("attached", ["cda", "package"])
def test_an_attached_cda_or_package_about_another_patient_is_refused(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], attached: str
) -> None:
    other = cda_of(tmp_path, OTHER)
    if attached == "package":
        package = tmp_path / "IHE_XDM.zip"
        assert main(["xdm", "build", "--doc", str(other), "--type-code", "11490-0",
                     "--type-label", "Lettre", "-o", str(package)]) == 0  # fmt: skip
        capsys.readouterr()
        other = package
    code = send(config, "--to", PRO, "--patient", str(patient_file(tmp_path)), "--attach", str(other))
    err = capsys.readouterr().err
    assert code == 65
    assert err.startswith("mssgw: --attach: one patient per message: ")
    assert "birth name Écart in the patient file, Martin in the document" in err
    assert queued(config, capsys) == []


def test_without_a_patient_file_the_patient_is_the_one_the_cda_names(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert send(config, "--to", PRO, "--doc", str(cda_of(tmp_path, PATIENT))) == 0
    record = parse_message(stored(config, int(capsys.readouterr().out)))
    assert record.patient is not None and record.patient.matricule == PATIENT["matricule"]
    # The patient's address must be that patient's too.
    assert send(config, "--to", f"{OTHER['matricule']}@patient.mssante.fr", "--doc",
                str(cda_of(tmp_path, PATIENT))) == 65  # fmt: skip
    assert "is not the patient of this message" in capsys.readouterr().err
    assert len(queued(config, capsys)) == 1


def test_a_refusal_for_one_recipient_queues_nothing_for_the_others(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pdf = report_pdf(tmp_path)
    code = send(config, "--to", PRO, "--to", f"{PATIENT['matricule']}@patient.mssante.fr",
                "--patient", str(patient_file(tmp_path)), "--doc", str(pdf),
                "--confidentiality", "INVISIBLE_PATIENT")  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 65 and out == ""
    assert "INVISIBLE_PATIENT" in err
    assert queued(config, capsys) == []


def test_a_send_without_nil_reference_names_the_key_and_stores_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = folder_config(tmp_path, hostname="mssgw.hopital.test.mssante.fr")
    code = main(
        [
            "send",
            "-c",
            str(path),
            "--from",
            SENDER,
            "--to",
            "dr.martin@cabinet.test.mssante.fr",
            "--subject",
            "x",
        ]
    )
    assert code == 78
    assert "gateway.nil_reference: required" in capsys.readouterr().err
    assert not (tmp_path / "state" / "mssgw.db").exists()


def test_a_bare_pdf_to_a_patient_is_refused_and_nothing_is_queued(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    patient = patient_file(tmp_path)
    pdf = report_pdf(tmp_path)
    code = main(["send", "-c", str(config), "--from", SENDER, "--to", "279035121518989@patient.mssante.fr",
                 "--subject", "Votre CR", "--patient", str(patient), "--attach", str(pdf)])  # fmt: skip
    assert code == 65
    err = capsys.readouterr().err
    assert (
        "cr.pdf: a health document to a patient travels in IHE_XDM.zip with its metadata (ECO.2.1.1)" in err
    )
    assert main(["queue", "list", "-c", str(config), "--all"]) == 0
    assert capsys.readouterr().out == "queue is empty\n"


def test_a_corsican_matricule_typed_in_lower_case_travels_upper_case_and_choices_are_said(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    patient = patient_file(tmp_path, matricule="1 80 07 2a 123 456 19", sex="M")
    pdf = report_pdf(tmp_path)
    code = main([
        "send", "-c", str(config), "--from", SENDER, "--to", "dr.martin@cabinet.test.mssante.fr",
        "--subject", "Courrier", "--patient", str(patient), "--doc", str(pdf),
        "--type-code", "11490-0", "--type-label", "Lettre de liaison",
    ])  # fmt: skip
    assert code == 0
    out, err = capsys.readouterr()
    record = parse_message(stored(config, int(out)))
    assert record.patient is not None and record.patient.matricule == "180072A12345619"
    assert "mssgw: note: --subject replaced by the document subject 'XDM/1.0/DDM+Lettre de liaison" in err
    assert "mssgw: note: --from has no display name" in err and "(ECO.2.2.7)" in err


def test_a_pdf_without_header_values_in_options_or_settings_is_refused_naming_the_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bare = folder_config(tmp_path, hostname="mssgw.hopital.test.mssante.fr", nil_reference="DEV935997")
    code = send(
        bare, "--to", PRO, "--patient", str(patient_file(tmp_path)), "--doc", str(report_pdf(tmp_path))
    )
    assert code == 65
    err = capsys.readouterr().err
    assert err.startswith(
        "mssgw: --author-rpps, --author-family, --institution-id, --practice-setting, --facility-type: "
    )
    assert "give the option, or set it in the [documents] settings" in err
    assert main(["queue", "list", "-c", str(bare), "--all"]) == 0
    assert capsys.readouterr().out == "queue is empty\n"


def test_options_override_the_document_settings(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = send(
        config, "--to", PRO, "--patient", str(patient_file(tmp_path)), "--doc", str(report_pdf(tmp_path)),
        "--author-rpps", "10000000001", "--author-family", "MARTIN", "--facility-type", "SA07^Cabinet",
    )  # fmt: skip
    assert code == 0
    out, err = capsys.readouterr()
    # Nothing gives the classCode or the contentTypeCode: said with the option and the setting.
    assert "give --class-code (or documents.class_code)" in err
    assert "give --content-type-code (or documents.content_type_code)" in err
    assert "formatCode" not in err  # the wrapper's is XDS-SD PDF
    document = parse_message(stored(config, int(out))).documents[0]
    assert document.author is not None
    assert (document.author.rpps, document.author.family_name, document.author.given_name) == (
        "810000000001", "MARTIN", None,
    )  # fmt: skip
    assert document.author.institution_id == "499700367909006"  # from the settings
    assert document.healthcare_facility_type is not None and document.healthcare_facility_type.code == "SA07"
    assert document.practice_setting is not None and document.practice_setting.code == "ETABLISSEMENT"


def test_xds_only_codes_come_from_the_settings_unless_an_option_gives_them(tmp_path: Path) -> None:
    """``mssgw send`` as a subprocess: classCode from ``[documents] class_code``, contentTypeCode from
    ``--content-type-code`` over ``[documents] content_type_code``, the wrapper's formatCode XDS-SD PDF."""
    documents = {
        **cda_header.SETTINGS,
        "class_code": "11^Résultats d'examens",
        "content_type_code": "01^Consultation",
    }
    config = folder_config(
        tmp_path, documents=documents, hostname="mssgw.hopital.test.mssante.fr", nil_reference="DEV935997"
    )
    command = [
        sys.executable, "-m", "gateway", "send", "-c", str(config), "--from", SENDER, "--to", PRO,
        "--subject", "x", "--type-code", "11490-0", "--type-label", "Lettre de liaison",
        "--patient", str(patient_file(tmp_path)), "--doc", str(report_pdf(tmp_path)),
        "--content-type-code", "04^Hospitalisation de jour",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "METADATA.XML" not in done.stderr  # nothing XDS asks for is missing: no note about it
    (metadata_xml,) = parse_message(stored(config, int(done.stdout))).package_metadata
    metadata = parse_metadata(metadata_xml)
    assert metadata.submission is not None
    assert metadata.submission.content_type == Code("04", "Hospitalisation de jour", xds.CONTENT_TYPE_OID)
    [entry] = metadata.entries
    assert entry.document.class_code == Code("11", "Résultats d'examens", xds.CLASS_CODE_OID)
    assert entry.document.format_code == xds.PDF_FORMAT
