"""Benchmark (run by hand): MDM^T02 carrying a 100 KiB CDA, over MLLP into the store of ``mssgw run``.

    .venv/bin/python bench/hl7_mllp.py [--messages 300] [--connections 4] [--cda-kib 100]
        [--store sqlite|postgresql]

Each connection (a thread, one MLLP connection, no TLS) sends its share of messages one after the other
and waits for each ACK, which comes only after the commit (the CDA read, its patient checked, the mail and
its IHE_XDM package built, stored with its deliveries and the MSH-10). Prints messages/s and the ACK
latency (frame sent → ACK read) p50 / p99; asserts nothing. The relay has no operator to reach (a closed
port): each message costs one refused connection there, and no mail leaves.
"""

from __future__ import annotations

import argparse
import base64
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mappers import cda, xds  # noqa: E402
from mappers.documents import Code  # noqa: E402
from tests.support import cda_header  # noqa: E402
from tests.support.gateway import Gateway, gateway_for  # noqa: E402
from tests.support.hl7 import PID_PATIENT, PROS_ONLY, message  # noqa: E402
from tests.support.mllp import MllpClient  # noqa: E402
from tests.support.pg import PG_DEFAULT_URL, temporary_schema  # noqa: E402
from tests.support.pki import make_pki  # noqa: E402
from tests.system.test_hl7_mllp import hl7_port, hl7_section  # noqa: E402


def big_cda(kib: int) -> bytes:
    """A CDA N1 of about ``kib`` KiB: a PDF of incompressible bytes, base64 in the CDA body."""
    filler = base64.b64encode(bytes(range(256)) * (kib * 3)).decode()[: kib * 768]
    pdf = b"%PDF-1.4\n% " + filler.encode() + b"\n%%EOF\n"
    return cda.wrap_pdf(
        pdf, PID_PATIENT, title="Compte rendu d'imagerie",
        type_code=Code("18748-4", "CR d'imagerie medicale", xds.LOINC_OID),
        effective_time=datetime(2026, 12, 7, 8, 0, tzinfo=UTC), document_id="1.2.250.1.999.7",
        **cda_header.WRAPPER,
    )  # fmt: skip


def _percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


@contextmanager
def running_gateway(directory: Path, store_url: str) -> Iterator[Gateway]:
    gateway = gateway_for(directory / "gw", make_pki(directory / "pki"), None, store_url=store_url)
    gateway.sections["gateway"]["test_mode"] = True  # the ANS test INS of the messages
    gateway.sections["hl7"] = hl7_section()
    gateway.write()
    gateway.start()
    try:
        yield gateway
    finally:
        gateway.stop()
        gateway.cleanup()


def producer(port: int, frames: Sequence[bytes], latencies: list[float], codes: list[str]) -> None:
    with MllpClient(port, timeout=120) as client:
        for frame in frames:
            started = time.perf_counter()
            ack = client.send(frame)
            latencies.append(time.perf_counter() - started)
            codes.append(ack.code)


def measure(directory: Path, messages: int, connections: int, kib: int, store_url: str) -> None:
    document = big_cda(kib)
    template = message(kind="MDM^T02^MDM_T02", version="2.6", flags=PROS_ONLY, cdas=(document,))
    frames = [template.replace("|MSG-42|", f"|B{n:06}|", 1).encode() for n in range(messages + connections)]
    print(f"CDA {len(document) / 1024:.0f} KiB, ER7 frame {len(frames[0]) / 1024:.0f} KiB")
    with running_gateway(directory, store_url) as gateway:
        port = hl7_port(gateway)
        warm: list[float] = []
        producer(port, frames[messages:], warm, [])  # one per connection's worth, not counted
        latencies: list[float] = []
        codes: list[str] = []
        share = messages // connections
        threads = [
            threading.Thread(
                target=producer, args=(port, frames[c * share : (c + 1) * share], latencies, codes)
            )
            for c in range(connections)
        ]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        stored = len(gateway.json("queue", "list", "--all"))
    accepted = codes.count("AA")
    print(
        f"{accepted}/{len(codes)} AA over {connections} connections in {elapsed:.2f}s: "
        f"{accepted / elapsed:.1f} msg/s; ACK latency p50 {statistics.median(latencies) * 1000:.0f} ms, "
        f"p99 {_percentile(latencies, 0.99) * 1000:.0f} ms; {stored} messages in the store"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--cda-kib", type=int, default=100)
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        if args.store == "postgresql":
            with temporary_schema(PG_DEFAULT_URL) as url:
                measure(Path(folder), args.messages, args.connections, args.cda_kib, url)
        else:
            measure(Path(folder), args.messages, args.connections, args.cda_kib, "")


if __name__ == "__main__":
    main()
