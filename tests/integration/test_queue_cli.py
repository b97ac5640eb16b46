"""``mssgw queue list|show`` as a sysadmin runs them: patient addresses masked unless ``--reveal``, and a
listing that says when it stopped at its ``--limit``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.gateway import folder_config, patient_file

PRO = "dr.chaput@hopital.test.mssante.fr"
PATIENT = "279035121518989@patient.mssante.fr"
MASKED = "2************89@patient.mssante.fr"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = folder_config(tmp_path, hostname="mssgw.hopital.test.mssante.fr", nil_reference="DEV935997")
    patient_file(tmp_path)
    return path


def mssgw(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args, "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def send_to_patient(config: Path) -> str:
    sent = mssgw(config, "send", "--from", PRO, "--to", PATIENT, "--subject", "Ordonnance",
                 "--patient", str(config.parent / "patient.json"))  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    return sent.stdout.strip()


def test_queue_show_and_list_mask_the_ins_of_patient_addresses_unless_revealed(config: Path) -> None:
    queue_id = send_to_patient(config)
    shown = mssgw(config, "queue", "show", queue_id)
    assert shown.returncode == 0, shown.stderr
    assert f"to {MASKED}: queued" in shown.stdout and "279035121518989" not in shown.stdout
    as_json = mssgw(config, "queue", "show", queue_id, "--json").stdout
    assert json.loads(as_json)["deliveries"][0]["recipient"] == MASKED and "279035121518989" not in as_json
    listed = mssgw(config, "queue", "list").stdout
    assert f"queued:{MASKED}" in listed and "279035121518989" not in listed
    assert f"to {PATIENT}: queued" in mssgw(config, "queue", "show", queue_id, "--reveal").stdout
    assert f"queued:{PATIENT}" in mssgw(config, "queue", "list", "--reveal").stdout


def test_queue_list_says_when_it_stops_at_its_limit(config: Path) -> None:
    ids = [send_to_patient(config) for _ in range(3)]
    limited = mssgw(config, "queue", "list", "--limit", "2")
    assert limited.returncode == 0, limited.stderr
    lines = limited.stdout.splitlines()
    assert [line.split()[0] for line in lines[1:3]] == ids[:2]
    assert lines[3:] == ["stopped at 2 messages (the oldest); more are queued: raise --limit to see them"]
    as_json = mssgw(config, "queue", "list", "--limit", "2", "--json")
    assert [str(e["id"]) for e in json.loads(as_json.stdout)] == ids[:2]
    assert "stopped at 2 messages" in as_json.stderr
    everything = mssgw(config, "queue", "list", "--limit", "3").stdout
    assert "stopped at" not in everything and len(everything.splitlines()) == 4
    refused = mssgw(config, "queue", "list", "--limit", "0")
    assert refused.returncode == 65 and refused.stderr.startswith("mssgw: --limit: 0 lists nothing")
