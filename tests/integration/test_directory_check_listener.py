"""The directory's recipient check on the submission listener: in refuse mode a mistyped MSSanté address
gets ``550 5.1.1`` at RCPT with the closest addresses; an address delivered to before passes."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from gateway.trust import TrustList
from mappers.directory import DirectoryReader
from tests.integration.test_submission_refusals import rcpt_replies
from tests.support.directory import HEADER, line
from tests.support.listener import open_submission_settings, running
from tests.support.pki import Pki

NOW = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)
DOMAIN = "cabinet.test.mssante.fr"


async def test_refuse_mode_answers_550_at_rcpt_with_suggestions(tmp_path: Path, pki: Pki) -> None:
    settings = open_submission_settings(tmp_path, pki, {"directory": {"check": "refuse", "min_entries": 1}})
    official = TrustList(frozenset({DOMAIN}), NOW)
    async with running(settings, "submission", citizen=True, official=official) as gateway:
        store = gateway.store.directory
        generation = store.begin_import("test", None, None, NOW)
        lines = (HEADER, line(address=f"dr.martin@{DOMAIN}"), line(address=f"dr.dupont@{DOMAIN}"))
        store.publish(generation, store.load(generation, DirectoryReader(x.encode() for x in lines)), NOW)
        answers = await rcpt_replies(
            gateway.port,
            [f"<dr.martn@{DOMAIN}>", f"<dr.martin@{DOMAIN}>", "<279035121518989@patient.mssante.fr>"],
        )
    assert answers[f"<dr.martn@{DOMAIN}>"] == (
        f"550 5.1.1 <dr.martn@{DOMAIN}>: not in the national MSSante directory (Annuaire Sante): "
        f"check the address; did you mean dr.martin@{DOMAIN}?"
    )
    assert answers[f"<dr.martin@{DOMAIN}>"].startswith("250")
    assert answers["<279035121518989@patient.mssante.fr>"].startswith("250")
