"""``mssgw send`` to patients and ``mssgw channels``: refusals exit 65 with the rule's sentence, channels are
listed masked (``--reveal`` to show), filtered, shown with their history and closed by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.settings import load
from gateway.store.db import open_store
from mappers.mime import parse_message
from tests.support import cda_header
from tests.support.gateway import folder_config, patient_file

PRO = "dr.chaput@hopital.test.mssante.fr"
OTHER = "sage-femme@hopital.test.mssante.fr"
PATIENT = "279035121518989@patient.mssante.fr"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = folder_config(
        tmp_path,
        documents=cda_header.SETTINGS,  # the hospital's defaults for the CDA built around a PDF
        hostname="mssgw.hopital.test.mssante.fr",
        nil_reference="DEV935997",
    )
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def send(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> tuple[int, str, str]:
    return run(capsys, "send", "-c", str(config), "--to", PATIENT, *args)


def test_send_to_a_patient_refuses_what_the_rules_refuse(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = send(capsys, config, "--from", PRO, "--subject", "Ordonnance")
    assert code == 65
    assert err == (
        "mssgw: --to: 550 5.7.1 mail to a patient address needs the patient's qualified INS; missing: "
        "the patient's identity (matricule, OID, birth name, first given name, birth date, sex)\n"
    )
    test_patient = patient_file(tmp_path, oid="1.2.250.1.213.1.4.10")
    code, _, err = send(capsys, config, "--from", PRO, "--subject", "Ordonnance", "--patient", test_patient)
    assert code == 65 and err == (
        "mssgw: --to: 550 5.7.1 the patient's INS comes from the INS-NIR-TEST authority "
        "(1.2.250.1.213.1.4.10), which is for test data only; refused unless gateway.test_mode = true\n"
    )
    pdf = tmp_path / "cr.pdf"
    pdf.write_bytes(b"%PDF-1.4\n%%EOF\n")
    code, _, err = send(
        capsys, config, "--from", PRO, "--subject", "CR", "--patient", patient_file(tmp_path),
        "--doc", str(pdf), "--type-code", "11490-0", "--type-label", "Lettre de liaison",
        "--confidentiality", "INVISIBLE_PATIENT",
    )  # fmt: skip
    assert code == 65 and err == (
        "mssgw: --to: 550 5.7.1 document 'Lettre de liaison' (DOC0001.XML) is marked INVISIBLE_PATIENT "
        "(not visible to the patient) and is never sent to a patient address\n"
    )
    code, out, _ = run(capsys, "channels", "list", "-c", str(config))
    assert (code, out) == (0, "no channels\n")


def test_channels_are_listed_masked_filtered_shown_and_closed_by_hand(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    identity = patient_file(tmp_path)
    for sender in (PRO, OTHER):
        code, out, err = send(
            capsys, config, "--from", sender, "--subject", "Ordonnance", "--patient", identity
        )
        assert code == 0, err
    first = int(out) - 1
    code, out, _ = run(capsys, "channels", "list", "-c", str(config), "--open", "--mailbox", PRO, "--json")
    [channel] = json.loads(out)
    assert (channel["matricule"], channel["state"], channel["mailbox"]) == ("2************89", "open", PRO)
    code, out, _ = run(capsys, "channels", "list", "-c", str(config), "--patient", "2 79 03 51 215 189 89")
    assert code == 0 and out.count("open") == 2 and "279035121518989" not in out

    code, out, _ = run(capsys, "channels", "close", "-c", str(config), str(channel["id"]), "--by", "alice")
    assert (code, out) == (
        0,
        f"channel {channel['id']} closed by alice: 2************89 can no longer reply to {PRO}\n",
    )
    code, out, _ = run(capsys, "channels", "show", "-c", str(config), str(channel["id"]), "--reveal")
    assert "patient:       279035121518989@patient.mssante.fr" in out
    assert "by admin:alice (closed by alice)" in out
    assert f"channel-opened (queue id {first})" in out and "channel-closed" in out
    code, out, _ = run(capsys, "channels", "list", "-c", str(config), "--closed", "--json")
    assert [c["mailbox"] for c in json.loads(out)] == [PRO]
    code, _, err = run(capsys, "channels", "close", "-c", str(config), str(channel["id"]))
    assert (code, err) == (65, f"mssgw: ID: channel {channel['id']} is already closed\n")
    code, _, err = run(capsys, "channels", "show", "-c", str(config), "999")
    assert (code, err) == (66, "mssgw: channel 999: no such channel\n")
    code, _, err = run(capsys, "channels", "list", "-c", str(config), "--patient", "279035121518988")
    assert (code, err) == (65, "mssgw: --patient: key 89 expected, got 88\n")


def test_fin_in_the_subject_puts_x_mss_mes_on_the_message(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = send(
        capsys, config, "--from", PRO, "--subject", "[FIN] Ordonnance", "--patient", patient_file(tmp_path)
    )
    assert code == 0
    store = open_store(load(config).store_url)
    try:
        record = parse_message(store.queue.raw(int(out)))
    finally:
        store.close()
    assert record.end_of_exchange and record.subject == "[FIN] Ordonnance"
