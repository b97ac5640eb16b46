"""Benchmark (run by hand): how fast messages enter the store and leave through the relay.

    .venv/bin/python bench/relay_throughput.py [--messages 2000] [--store sqlite|postgresql] [--dkim]

Intake: concurrent submitters through the group-commit batcher into the store. Relay: ``mssgw run`` as a
subprocess delivering to the fake operator over STARTTLS with client certificates, as in the system tests.
The fake operator is aiosmtpd in one Python thread, so the relay figure is a lower bound of the gateway's
own speed. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway import wake  # noqa: E402
from gateway.batching import Batcher  # noqa: E402
from gateway.settings import load  # noqa: E402
from gateway.store.db import open_store  # noqa: E402
from gateway.store.repository import NewMessage, Recipient, Repository, StoredMessage  # noqa: E402
from tests.support.dkim import make_dkim_key  # noqa: E402
from tests.support.fake_operator import FakeOperator  # noqa: E402
from tests.support.gateway import SENDER, gateway_for  # noqa: E402
from tests.support.pg import PG_DEFAULT_URL, temporary_schema  # noqa: E402
from tests.support.pki import make_pki  # noqa: E402

BODY = ("Bonjour,\r\n" + "Compte rendu de consultation, ligne de texte.\r\n" * 60).encode()


def message(n: int) -> NewMessage:
    mid = f"<bench-{n}@hopital.test.mssante.fr>"
    head = f"From: {SENDER}\r\nTo: dr@cabinet.test\r\nSubject: bench {n}\r\nMessage-ID: {mid}\r\n\r\n"
    return NewMessage(
        raw=head.encode() + BODY,
        envelope_from=SENDER,
        direction="outbound",
        source="bench",
        recipients=(Recipient("dr@cabinet.test"),),
        message_id=mid,
    )


async def intake(repository: Repository, count: int, submitters: int) -> float:
    batcher: Batcher[NewMessage, StoredMessage] = Batcher(
        lambda batch: repository.add_messages(batch, datetime.now(UTC)), max_batch=500
    )
    queue = iter(range(count))

    async def submitter() -> None:
        for n in queue:
            await batcher.submit(message(n))

    started = time.perf_counter()
    await asyncio.gather(*(submitter() for _ in range(submitters)))
    return time.perf_counter() - started


def run(store: str, count: int, dkim: bool, submitters: int, workdir: Path) -> None:
    pki = make_pki(workdir / "pki")
    with (
        FakeOperator(cert=pki.server, client_ca=pki.ca) as operator,
        temporary_schema(PG_DEFAULT_URL) if store == "postgresql" else _nothing() as pg_url,
    ):
        gateway = gateway_for(
            workdir / "gw",
            pki,
            operator,
            store_url=pg_url or "",
            dkim_key=make_dkim_key(workdir / "dkim") if dkim else None,
            relay={"concurrency": 32, "connections_per_destination": 8, "claim_batch": 500},
        )
        store = open_store(load(gateway.config).store_url)
        elapsed = asyncio.run(intake(store.repository, count, submitters))
        store.close()
        print(
            f"intake: {count} messages, {submitters} submitters: {elapsed:.2f} s, {count / elapsed:.0f} msg/s"
        )
        gateway.start()
        started = time.perf_counter()
        wake.ping(gateway.state_dir)
        operator.wait_for_messages(count, timeout=600)
        elapsed = time.perf_counter() - started
        gateway.stop()
        print(
            f"relay ({store}, dkim={'on' if dkim else 'off'}): {count} messages in {elapsed:.2f} s, "
            f"{count / elapsed:.0f} msg/s over {operator.connections} connection(s)"
        )


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--dkim", action="store_true")
    parser.add_argument("--submitters", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mssgw-bench-") as directory:
        run(args.store, args.messages, args.dkim, args.submitters, Path(directory))


if __name__ == "__main__":
    main()
