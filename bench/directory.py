"""Benchmark (run by hand): the national directory at full size — import time and peak memory, search latency.

    .venv/bin/python bench/directory.py [--lines 535000] [--backend sqlite|postgresql|both] [--searches 400]

Writes a generated extraction of ``--lines`` lines in the real format (``tests.support.directory``: ~170
bytes a line, ~90 MB for 535,000) to a temporary folder, imports it with ``mssgw directory update`` as a
subprocess (wall time; peak RSS is the child's ``ru_maxrss``, which counts the parent's peak at the fork:
the file is written line by line and this process's own peak printed beside it), then times
``--searches`` lookups through the store as ``mssgw directory search`` makes them: a last name, a name and
a first name, a name and a city, the first letters of a name (type-ahead). PostgreSQL runs in a throw-away
schema of $MSSGW_TEST_PG_URL.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.store.db import open_store  # noqa: E402
from gateway.store.directory import SearchQuery  # noqa: E402
from mappers.directory import query_words  # noqa: E402
from tests.support.directory import FILE_NAME, generated_lines, write_file  # noqa: E402
from tests.support.gateway import render_config  # noqa: E402
from tests.support.pg import PG_DEFAULT_URL, temporary_schema  # noqa: E402

QUERIES = (
    "martin",
    "dupont jean",
    "lefevre lyon",
    "gar",
    "moreau sophie paris",
    "le goff",
    "fran",
    "roux 42",
)


def run(backend: str, url: str, extraction: Path, folder: Path, searches: int) -> None:
    config = folder / f"{backend}.toml"
    placeholder = folder / "ca.pem"  # the settings want one; this command never opens a TLS connection
    placeholder.write_text("x", encoding="utf-8")
    config.write_text(
        render_config(
            {
                "gateway": {"state_dir": str(folder / f"state-{backend}"), "hostname": "bench.test"},
                "store": {"url": url},
                "smarthost": {"host": "127.0.0.1"},
                "tls": {"ca_bundle": str(placeholder)},
                "directory": {"min_entries": 1000},
            }
        ),
        encoding="utf-8",
    )
    started = time.monotonic()
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway",
            "directory",
            "update",
            "--from",
            str(extraction),
            "-c",
            str(config),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert child.stdout is not None
    said = child.stdout.read().decode().strip()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.monotonic() - started
    peak = usage.ru_maxrss / 1024
    floor = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"[{backend}] import: {elapsed:.1f} s, peak RSS {peak:.0f} MiB (exit {child.returncode}; "
        f"the benchmark's own peak, counted in it: {floor:.0f} MiB)"
    )
    print(f"[{backend}] {said}")
    store = open_store(url)
    try:
        rng = random.Random(15)
        latencies: dict[str, list[float]] = {}
        counts: dict[str, int] = {}
        for _ in range(searches):
            text = rng.choice(QUERIES)
            began = time.perf_counter()
            found = store.directory.search(SearchQuery(query_words(text)))
            latencies.setdefault(text, []).append((time.perf_counter() - began) * 1000)
            counts[text] = len(found)
        every = sorted(v for values in latencies.values() for v in values)
        p50, p99 = every[len(every) // 2], every[min(len(every) - 1, int(len(every) * 0.99))]
        print(f"[{backend}] search over {len(every)} queries: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
        for text, values in sorted(latencies.items()):
            median = statistics.median(values)
            print(f"[{backend}]   {text!r:24} median {median:6.1f} ms  ({counts[text]} shown)")
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=535_000)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--searches", type=int, default=400)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mssgw-bench-directory-") as name:
        folder = Path(name)
        extraction = write_file(folder / FILE_NAME, generated_lines(args.lines))
        print(f"extraction: {args.lines} lines, {extraction.stat().st_size / 1e6:.0f} MB")
        if args.backend in ("sqlite", "both"):
            run("sqlite", f"sqlite:///{folder / 'bench.db'}", extraction, folder, args.searches)
        if args.backend in ("postgresql", "both"):
            with temporary_schema(os.environ.get("MSSGW_TEST_PG_URL", PG_DEFAULT_URL)) as url:
                run("postgresql", url, extraction, folder, args.searches)


if __name__ == "__main__":
    main()
