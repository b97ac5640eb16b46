"""A delivery held by ``relay.crash_limit`` says so: an audit log line with the crash count, and the reason
in ``mssgw queue show`` (which a hold by a person does not get)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.settings import load
from gateway.store.db import open_store
from gateway.store.repository import NewMessage, Recipient
from tests.support.gateway import folder_config

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
LEASE = timedelta(minutes=10)


def test_a_crash_limit_hold_is_logged_and_shown(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    config = folder_config(tmp_path, nil_reference="DEV935997")
    (tmp_path / "state").mkdir()
    store = open_store(load(config).store_url)
    raw = b"Message-ID: <m1@test>\r\nSubject: x\r\n\r\nbody\r\n"
    new = NewMessage(raw, "app@hopital.test", "outbound", "test", (Recipient("r@dest.test"),), "<m1@test>")
    pk = store.repository.add_messages([new], T0)[0].pk
    now = T0
    with caplog.at_level(logging.INFO, logger="gateway.audit"):
        # Three daemons die holding the lease in turn; the fourth finds the third expiry: the limit. (A daemon
        # never reclaims its own leases, so each claim comes from another instance.)
        for owner in ("a", "b", "c", "d"):
            store.repository.claim_due(owner, now, LEASE, 100, 3)
            now += timedelta(minutes=11)
    store.close()
    [held] = [r for r in caplog.records if r.name == "gateway.audit" and r.getMessage() == "held"]
    assert held.levelno == logging.WARNING
    assert held.mssgw_fields == {  # type: ignore[attr-defined]
        "queue_id": pk,
        "delivery": 1,
        "reason": "crash-limit",
        "crashes": 3,
    }

    assert main(["queue", "show", str(pk), "-c", str(config)]) == 0
    shown = capsys.readouterr().out
    assert f"    held by the gateway: crash-limit after 3 crashes (mssgw queue release {pk})" in shown
    assert main(["queue", "release", str(pk), "-c", str(config)]) == 0
    assert main(["queue", "hold", str(pk), "-c", str(config)]) == 0
    capsys.readouterr()
    assert main(["queue", "show", str(pk), "-c", str(config)]) == 0
    assert "held by the gateway" not in capsys.readouterr().out
