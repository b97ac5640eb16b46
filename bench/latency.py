"""``python -m bench latency``: one 1 KiB message at a time, as a lightly loaded gateway sees it.

For each server (started fresh): an smtplib session is opened (connect and EHLO, not timed), then the
clock runs from MAIL FROM to the 250 after the data ("to the 250") and on until the sink's counter shows
the message ("to the sink"). One message first to warm up, then COUNT measured; p50 and p99 of each.
"""

from __future__ import annotations

import smtplib
import statistics
from collections.abc import Sequence

from bench.relay import Runs
from bench.servers import server
from bench.sink import Sink, recipient
from tests.support.gateway import SENDER
from tests.support.pki import Pki

_BODY = ("X" * 78 + "\r\n") * 13  # 1040 octets, as smtp-source -l 1024 makes it


def _message(to: str, number: int) -> bytes:
    head = (
        f"From: <{SENDER}>\r\nTo: <{to}>\r\nDate: Mon, 07 Dec 2026 08:00:00 +0000\r\n"
        f"Message-ID: <latency.{number}@bench.hopital.test.mssante.fr>\r\nSubject: latency {number}\r\n\r\n"
    )
    return head.encode("ascii") + _BODY.encode("ascii")


def _percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def measure_latency(
    pki: Pki, sink: Sink, servers: Sequence[str], count: int, pg_url: str, timeout: float
) -> str:
    """A Markdown table: p50 / p99 in milliseconds to the 250 and to the sink, per server."""
    numbering = Runs()
    lines = [
        "| server | messages | to 250 p50 ms | to 250 p99 ms | to sink p50 ms | to sink p99 ms"
        " | lost | dup |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in servers:
        run = numbering.next()
        to_250: list[float] = []
        to_sink: list[float] = []
        with server(name, pki, sink.port, 1, pg_url) as running:
            for number in range(1, count + 2):
                to = f"{number}{recipient(run)}"
                with smtplib.SMTP("127.0.0.1", running.port, timeout=timeout) as client:
                    client.ehlo("bench.hopital.test.mssante.fr")
                    before = sink.count()
                    started = sink.clock()
                    client.sendmail(SENDER, [to], _message(to, number))
                    accepted = sink.clock()
                    arrived = sink.wait_for(before + 1, timeout)
                if arrived is None:
                    raise RuntimeError(f"{name}: message {number} not at the sink after {timeout:.0f} s")
                if number > 1:  # the first one warms up
                    to_250.append((accepted - started) * 1000)
                    to_sink.append((arrived - started) * 1000)
        received = sink.collect(run, count + 1)
        lines.append(
            f"| {name} | {len(to_250)} | {statistics.median(to_250):.1f} | {_percentile(to_250, 0.99):.1f}"
            f" | {statistics.median(to_sink):.1f} | {_percentile(to_sink, 0.99):.1f}"
            f" | {received.lost} | {received.duplicated} |"
        )
        print(f"  {name}: done", flush=True)
    return "\n".join(lines)
