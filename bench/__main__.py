"""``python -m bench relay|latency|profile``: Postfix and mssgw side by side, relaying to one TLS sink.

Needs root (a private Postfix master) and Postfix's programs (``apt-get install postfix``: postfix,
smtp-source, smtp-sink); the system's Postfix service is never touched. Everything runs on loopback from
a temporary folder; every process started is stopped by PID at the end, on Ctrl-C and errors too. Prints
figures; asserts nothing. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import trustme

from bench.servers import SERVERS
from bench.sink import Sink, tls_sink
from tests.support.pg import PG_DEFAULT_URL, probe, shown
from tests.support.pki import Pki, make_pki


def _interrupted(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def bench_peers() -> Iterator[tuple[Pki, Sink]]:
    """The bench PKI (RSA, as IGC-Santé's) and the running TLS sink, for the block."""
    with tempfile.TemporaryDirectory(prefix="mssgw-bench-") as directory:
        pki = make_pki(Path(directory) / "pki", key_type=trustme.KeyType.RSA)
        # The Postfix daemons read certificates as root but must enter the folders holding them.
        for folder in (Path(directory), *Path(directory).rglob("*")):
            if folder.is_dir():
                folder.chmod(0o755)
        with tls_sink(pki) as sink:
            yield pki, sink


def _servers(args: argparse.Namespace) -> list[str]:
    wanted = [name.strip() for name in args.servers.split(",") if name.strip()]
    unknown = set(wanted) - set(SERVERS)
    if unknown:
        sys.exit(f"unknown server(s) {', '.join(sorted(unknown))}: choose among {', '.join(SERVERS)}")
    if any(name.startswith("mssgw-pg") for name in wanted):
        try:
            probe(args.pg_url)
        except Exception as error:  # noqa: BLE001 - any failure to connect means: no PostgreSQL here
            print(
                f"mssgw-pg* left out: PostgreSQL at {shown(args.pg_url)} unreachable"
                f" ({error.__class__.__name__})"
            )
            wanted = [name for name in wanted if not name.startswith("mssgw-pg")]
    return wanted


def _preflight() -> None:
    missing = [
        p for p in ("postfix", "smtp-source", "smtp-sink") if not shutil.which(p, path="/usr/sbin:/usr/bin")
    ]
    if missing:
        sys.exit(f"missing {', '.join(missing)}: apt-get install postfix")
    if os.geteuid() != 0:
        sys.exit("a private Postfix master needs root: run as root")


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--servers", default=",".join(SERVERS[:3]), help=f"comma-separated among {', '.join(SERVERS)}"
    )
    parser.add_argument("--pg-url", default=os.environ.get("MSSGW_TEST_PG_URL", PG_DEFAULT_URL))
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds a run may take at most")
    modes = parser.add_subparsers(dest="mode", required=True)
    relay = modes.add_parser("relay", help="throughput table: accepted/s, delivered/s, CPU, RSS, lost, dup")
    relay.add_argument("--sizes", default="1k,10k,100k,1m")
    relay.add_argument("--senders", default="20,100")
    relay.add_argument("--runs", type=int, default=3)
    relay.add_argument("--count", type=int, default=300, help="messages per run")
    latency = modes.add_parser("latency", help="one 1 KiB message at a time: p50/p99 to the 250, to the sink")
    latency.add_argument("--count", type=int, default=100)
    profile = modes.add_parser("profile", help="py-spy on mssgw during one relay run: the top costs")
    profile.add_argument("--size", default="10k")
    profile.add_argument("--senders", type=int, default=20)
    profile.add_argument("--count", type=int, default=1000)
    profile.add_argument("--store", choices=["mssgw-sqlite", "mssgw-pg"], default="mssgw-sqlite")
    profile.add_argument("--top", type=int, default=25)
    profile.add_argument("--gil", action="store_true", help="only samples holding the GIL")
    profile.add_argument("--raw", type=Path, help="also keep py-spy's collapsed stacks in this file")
    return parser.parse_args()


def main() -> None:
    args = _arguments()
    _preflight()
    signal.signal(signal.SIGTERM, _interrupted)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(
        f"# python -m bench {' '.join(sys.argv[1:])}"
        f"  ({started}, {os.cpu_count()} CPUs, {os.uname().nodename})"
    )
    with bench_peers() as (pki, sink):
        if args.mode == "relay":
            from bench.relay import SIZES, measure, table

            sizes = [s.strip() for s in args.sizes.split(",")]
            if bad := [s for s in sizes if s not in SIZES]:
                sys.exit(f"unknown size(s) {', '.join(bad)}: choose among {', '.join(SIZES)}")
            servers = _servers(args)
            senders = [int(s) for s in args.senders.split(",")]
            results = measure(
                pki, sink, servers, sizes, senders, args.runs, args.count, args.pg_url, args.timeout
            )
            print()
            print(table(results, servers))
        elif args.mode == "latency":
            from bench.latency import measure_latency

            print(measure_latency(pki, sink, _servers(args), args.count, args.pg_url, args.timeout))
        else:
            from bench.profile import profile

            print(
                profile(
                    pki,
                    sink,
                    args.store,
                    args.size,
                    args.senders,
                    args.count,
                    args.pg_url,
                    args.timeout,
                    args.top,
                    args.gil,
                    args.raw,
                )
            )


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt as interruption:
        # Every context above has stopped what it started by now.
        sys.exit(f"interrupted ({interruption or 'Ctrl-C'}): every process the bench started is stopped")
