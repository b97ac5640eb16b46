"""Benchmark (run by hand): how fast the submission listener takes messages into the store.

    .venv/bin/python bench/smtp_submission.py [--messages 2000] [--connections 8] [--store sqlite|postgresql]

Each connection (smtplib in a process, allow-listed network, no TLS) sends its share of messages one after
the other; every 250 comes after the commit, which concurrent connections share (group commit). Prints
figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import smtplib
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.listener import open_submission_settings, running  # noqa: E402
from tests.support.mail import APP, OUTSIDE, message  # noqa: E402
from tests.support.pg import PG_DEFAULT_URL, temporary_schema  # noqa: E402
from tests.support.pki import make_pki  # noqa: E402


def send(port: int, count: int, connection: int) -> None:
    body = "Compte rendu de consultation.\n" * 60
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        for n in range(count):
            client.sendmail(APP, [OUTSIDE], message(body=body, Message_ID=f"<bench-{connection}-{n}@test>"))


async def measure(directory: Path, messages: int, connections: int, store_url: str) -> None:
    settings = open_submission_settings(directory, make_pki(directory / "pki"), max_commands=100_000)
    if store_url:
        from dataclasses import replace

        settings = replace(settings, store=replace(settings.store, url=store_url))
    async with running(settings, "submission") as gateway:
        share = messages // connections
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        # Clients in processes of their own: threads would fight the gateway for the GIL.
        with ProcessPoolExecutor(connections) as clients:
            await asyncio.gather(
                *(loop.run_in_executor(clients, send, gateway.port, share, c) for c in range(connections))
            )
        elapsed = time.perf_counter() - started
        stored = len(gateway.messages())
    print(f"{stored} messages over {connections} connections in {elapsed:.2f}s: {stored / elapsed:.0f} msg/s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        if args.store == "postgresql":
            with temporary_schema(PG_DEFAULT_URL) as url:
                asyncio.run(measure(Path(folder), args.messages, args.connections, url))
        else:
            asyncio.run(measure(Path(folder), args.messages, args.connections, ""))


if __name__ == "__main__":
    main()
