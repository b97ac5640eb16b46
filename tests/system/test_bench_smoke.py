"""The benchmark harness runs end to end on a tiny load: Postfix and mssgw relay every message to the TLS
sink exactly once. Figures are printed by the harness, never asserted here (speed targets live in bench/)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.skipif(
        not all(shutil.which(p, path="/usr/sbin:/usr/bin") for p in ("postfix", "smtp-source", "smtp-sink")),
        reason="Postfix is not installed (apt-get install postfix)",
    ),
    pytest.mark.skipif(os.geteuid() != 0, reason="a private Postfix master needs root"),
]

ROOT = Path(__file__).resolve().parents[2]


def bench_rows(*servers: str, pg_url: str = "") -> dict[str, list[str]]:
    """Run ``python -m bench relay`` with 1 size, 2 senders, 5 messages, 1 run; its table rows by server."""
    command = [sys.executable, "-m", "bench", "--servers", ",".join(servers), "--timeout", "60"]
    command += ["--pg-url", pg_url] if pg_url else []
    command += ["relay", "--sizes", "1k", "--senders", "2", "--runs", "1", "--count", "5"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in done.stdout.splitlines()
        if line.startswith("| 1k × 2 |")
    ]
    return {row[1]: row for row in rows}


def assert_every_message_once(row: list[str]) -> None:
    runs, lost, duplicated = row[2], row[-2], row[-1]
    assert (runs, lost, duplicated) == ("1", "0", "0"), row
    assert row[4] != "—", f"the sink did not get every message: {row}"


def test_postfix_and_mssgw_on_sqlite_deliver_every_message_once() -> None:
    rows = bench_rows("postfix", "mssgw-sqlite")
    assert set(rows) == {"postfix", "mssgw-sqlite"}
    for row in rows.values():
        assert_every_message_once(row)


def test_mssgw_on_postgresql_delivers_every_message_once(pg_url: str) -> None:
    rows = bench_rows("mssgw-pg", pg_url=pg_url)
    assert set(rows) == {"mssgw-pg"}
    assert_every_message_once(rows["mssgw-pg"])
