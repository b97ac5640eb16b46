"""``mssgw imap status`` and ``check-config``: what a sysadmin sees of the bridge and its configuration."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.settings import load
from gateway.store.db import open_store
from tests.support.gateway import render_config
from tests.support.imap_bridge import secret_file
from tests.support.mail import MAILBOX, OUR_DOMAIN
from tests.support.pki import Pki


def config(tmp_path: Path, ca: Path | None = None, account: dict[str, object] | None = None) -> Path:
    if ca is None:
        ca = tmp_path / "ca.pem"
        ca.write_text("not read by status", encoding="utf-8")
    values: dict[str, object] = {
        "name": "secretariat",
        "host": "imap.operateur.test",
        "address": MAILBOX,
        "username": MAILBOX,
        "password_file": str(secret_file(tmp_path / "imap.password", "secret")),
        "folders": ["INBOX", "Urgent"],
        **(account or {}),
    }
    path = tmp_path / "mssgw.toml"
    sections = {
        "gateway": {"state_dir": str(tmp_path / "state"), "mode": "operator"},
        "tls": {"ca_bundle": str(ca)},
        "inbound": {"domains": [OUR_DOMAIN]},
        "imap": {"accounts": [values]},
    }
    path.write_text(render_config(sections), encoding="utf-8")
    return path


def test_status_shows_last_sync_lag_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = config(tmp_path)
    store = open_store(load(path).store_url)
    synced = datetime.now(UTC) - timedelta(seconds=90)
    store.imap_cursors.save("secretariat", "INBOX", 1764000000, 42, synced)
    store.imap_cursors.record_error("secretariat", "Urgent", "the server refused the password login: NO")
    store.close()

    assert main(["imap", "status", "-c", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "ACCOUNT",
        "FOLDER",
        "LAST",
        "SYNC",
        "(UTC)",
        "LAG",
        "LAST",
        "UID",
        "LAST",
        "ERROR",
    ]
    inbox, urgent = lines[1].split(), lines[2].split()
    assert inbox[:2] == ["secretariat", "INBOX"] and inbox[5] == "42" and inbox[6] == "-"
    assert 90 <= int(inbox[4].rstrip("s")) < 150
    assert urgent[:3] == ["secretariat", "Urgent", "-"]
    assert "the server refused the password login" in lines[2]

    assert main(["imap", "status", "-c", str(path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["folder"], r["last_uid"], r["uidvalidity"]) for r in rows] == [
        ("INBOX", 42, 1764000000),
        ("Urgent", None, None),
    ]
    assert 90 <= rows[0]["lag_seconds"] < 150 and rows[1]["lag_seconds"] is None


def test_check_config_names_an_account_whose_ca_bundle_cannot_be_used(
    tmp_path: Path, pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken-ca.pem"
    broken.write_text(
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n", encoding="utf-8"
    )
    path = config(tmp_path, ca=pki.ca, account={"ca_bundle": str(broken)})
    assert main(["check-config", "-c", str(path)]) == 78
    assert "imap.accounts[0].ca_bundle: cannot use the TLS material" in capsys.readouterr().err
