"""``python -m bench relay``: throughput of Postfix and mssgw side by side, through the same TLS sink.

For each cell (size × senders), runs are interleaved (postfix, mssgw-sqlite, mssgw-pg, postfix, …) so
every server sees the same machine noise. One run: start the server fresh, ``smtp-source`` sends COUNT
messages of SIZE octets over SENDERS parallel sessions, one message per connection; accepted/s is COUNT
over the time smtp-source took (every 250 received), delivered/s COUNT over the time until the sink's
counter had them all; server CPU is the server's process tree's CPU over that same span.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass

from bench.servers import server
from bench.sink import Sink, recipient
from tests.support.gateway import SENDER
from tests.support.pki import Pki

SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
SIZES = {"1k": 1024, "10k": 10 * 1024, "100k": 100 * 1024, "1m": 1024 * 1024}


@dataclass(frozen=True)
class Result:
    """One run of one server in one cell."""

    server: str
    size: str
    senders: int
    count: int
    accepted_per_s: float | None
    delivered_per_s: float | None
    cpu_ms_per_message: float
    peak_rss: int | None
    lost: int
    duplicated: int
    error: str = ""


class Runs:
    """Numbers every run so that its recipients are its own at the sink."""

    def __init__(self) -> None:
        self.last = 0

    def next(self) -> int:
        self.last += 1
        return self.last


def send(port: int, size: int, senders: int, count: int, run: int, timeout: float) -> str:
    """Run smtp-source against ``port``; an error message, or "" when every message got its 250."""
    command = [
        SMTP_SOURCE,
        "-N",  # a sequence number in front of each recipient: the sink tells the messages apart
        "-s", str(senders),
        "-m", str(count),
        "-l", str(size),
        "-M", "bench.hopital.test.mssante.fr",
        "-f", SENDER,
        "-t", recipient(run),
        f"127.0.0.1:{port}",
    ]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return f"smtp-source still sending after {timeout:.0f} s"
    return (
        "" if done.returncode == 0 else f"smtp-source exited {done.returncode}: {done.stderr.strip()[-300:]}"
    )


def run_once(
    name: str,
    pki: Pki,
    sink: Sink,
    runs: Runs,
    size: str,
    senders: int,
    count: int,
    pg_url: str,
    timeout: float,
) -> Result:
    run = runs.next()
    with server(name, pki, sink.port, senders, pg_url) as running:
        before_count, before_cpu = sink.count(), running.cpu_seconds()
        started = time.monotonic()
        error = send(running.port, SIZES[size], senders, count, run, timeout)
        accepted = time.monotonic()
        reached = sink.wait_for(before_count + count, max(1.0, timeout - (accepted - started)))
        cpu = running.cpu_seconds() - before_cpu
        rss = running.peak_rss()
    # A duplicate or a late message would come after the last one counted: give them a moment.
    time.sleep(0.5)
    received = sink.collect(run, count)
    if reached is None and not error:
        error = f"the sink had {received.delivered}/{count} after {timeout:.0f} s"
    return Result(
        server=name,
        size=size,
        senders=senders,
        count=count,
        accepted_per_s=None if error.startswith("smtp-source") else count / (accepted - started),
        delivered_per_s=None if reached is None else count / (reached - started),
        cpu_ms_per_message=cpu * 1000 / count,
        peak_rss=rss,
        lost=received.lost,
        duplicated=received.duplicated,
        error=error,
    )


def measure(
    pki: Pki,
    sink: Sink,
    servers: Sequence[str],
    sizes: Sequence[str],
    senders: Sequence[int],
    runs: int,
    count: int,
    pg_url: str,
    timeout: float,
) -> list[Result]:
    """Every cell, its runs interleaved across ``servers``; progress on stdout, one line per run."""
    numbering = Runs()
    results: list[Result] = []
    for size in sizes:
        for parallel in senders:
            for n in range(runs):
                for name in servers:
                    result = run_once(name, pki, sink, numbering, size, parallel, count, pg_url, timeout)
                    results.append(result)
                    print(
                        f"  {size:>4} × {parallel:<3} run {n + 1}/{runs} {name:<13}"
                        f" accepted/s={_number(result.accepted_per_s)}"
                        f" delivered/s={_number(result.delivered_per_s)}"
                        f" cpu_ms/msg={result.cpu_ms_per_message:.1f}"
                        f" lost={result.lost} dup={result.duplicated} {result.error}",
                        flush=True,
                    )
    return results


def _number(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def table(results: Sequence[Result], servers: Sequence[str]) -> str:
    """Medians per cell and server (lost and duplicated: totals over the runs), as a Markdown table."""
    lines = [
        "| cell | server | runs | accepted/s | delivered/s | ratio delivered | ratio accepted"
        " | CPU ms/msg | peak RSS MiB | lost | dup |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    cells = list(dict.fromkeys((r.size, r.senders) for r in results))
    for size, senders in cells:
        medians: dict[str, tuple[float | None, float | None]] = {}
        for name in servers:
            mine = [r for r in results if (r.size, r.senders, r.server) == (size, senders, name)]
            if not mine:
                continue
            accepted = _median([r.accepted_per_s for r in mine])
            delivered = _median([r.delivered_per_s for r in mine])
            medians[name] = (accepted, delivered)
            base = medians.get("postfix", (None, None))
            rss = _median([r.peak_rss for r in mine])
            ratio_delivered = delivered / base[1] if name != "postfix" and delivered and base[1] else None
            ratio_accepted = accepted / base[0] if name != "postfix" and accepted and base[0] else None
            lines.append(
                f"| {size} × {senders} | {name} | {len(mine)} | {_number(accepted)} | {_number(delivered)}"
                f" | {_number(ratio_delivered, 2)} | {_number(ratio_accepted, 2)}"
                f" | {_number(_median([r.cpu_ms_per_message for r in mine]), 1)}"
                f" | {_number(rss / 2**20 if rss else None)}"
                f" | {sum(r.lost for r in mine)} | {sum(r.duplicated for r in mine)} |"
            )
    return "\n".join(lines)
