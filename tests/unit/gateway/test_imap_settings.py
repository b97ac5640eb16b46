"""The [imap] section: each bad account is reported with its key; TLS material falls back to [tls]."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway import settings
from gateway.errors import ConfigError


def base(tmp_path: Path, *accounts: dict[str, object]) -> dict[str, object]:
    ca = tmp_path / "ca.pem"
    ca.write_text("not read by the loader", encoding="utf-8")
    return {
        "gateway": {"state_dir": str(tmp_path / "state"), "mode": "operator"},
        "tls": {"ca_bundle": str(ca)},
        "inbound": {"domains": ["hopital.test"]},
        "imap": {"accounts": list(accounts)},
    }


def secret(tmp_path: Path, name: str) -> str:
    path = tmp_path / name
    path.write_text("secret\n", encoding="utf-8")
    path.chmod(0o600)
    return str(path)


def test_a_good_account_gets_its_defaults_and_the_tls_section(tmp_path: Path) -> None:
    loaded = settings.from_mapping(
        base(
            tmp_path,
            {
                "name": "secretariat",
                "host": "imap.operateur.test",
                "address": "secretariat@hopital.test",
                "username": "secretariat@hopital.test",
                "password_file": secret(tmp_path, "imap.password"),
            },
        )
    )
    account = loaded.imap.accounts[0]
    assert (account.port, account.security, account.folders, account.after_import) == (
        993,
        "tls",
        ("INBOX",),
        "seen",
    )
    assert account.backfill_days == 0 and account.idle and account.poll_interval == 60.0
    assert account.tls_settings(loaded.tls).ca_bundle == tmp_path / "ca.pem"


def test_every_mistake_of_every_account_names_its_key(tmp_path: Path) -> None:
    token = secret(tmp_path, "token")
    raw = base(
        tmp_path,
        {"name": "a", "host": "h", "address": "a@elsewhere.test", "after_import": "move"},
        {"name": "a", "host": "h", "address": "b@hopital.test", "auth": "xoauth2", "token_file": token},
        {"name": "c", "host": "h", "address": "c@hopital.test", "auth": "external", "folders": []},
        {"name": "d", "host": "h", "address": "d@hopital.test", "auth": "kerberos"},
    )
    with pytest.raises(ConfigError) as caught:
        settings.from_mapping(raw)
    rules = (
        'imap.accounts[0].password_file: auth = "password" needs username and password_file',
        'imap.accounts[0].processed_folder: required when after_import = "move"',
        "imap.accounts[1].name: 'a' is used by another account",
        'imap.accounts[1].token_file: auth = "xoauth2" needs username and token_file',
        'imap.accounts[2].client_certificate: auth = "external" needs a client certificate',
        "imap.accounts[2].folders: needs at least one folder",
    )
    # Reported together; nothing more is said of the account whose auth is refused.
    assert caught.value.problems == (
        "imap.accounts[3].auth: 'kerberos' is not one of 'password', 'external', 'xoauth2'",
        *rules,
    )
    raw["imap"]["accounts"].pop()  # type: ignore[index]
    raw["imap"]["fetch_batch"] = 500  # type: ignore[index]
    with pytest.raises(ConfigError) as caught:
        settings.from_mapping(raw)
    assert caught.value.problems == (*rules, "imap.fetch_batch: must be between 1 and 200")
