"""The TLS sink every server under test relays to, and what it received.

A private Postfix ``smtpd`` requires STARTTLS and a client certificate from the bench PKI and proxies each
transaction before-queue (``smtpd_proxy_filter``) to ``smtp-sink``, so nothing is ever queued. smtp-sink
writes each message to its own file (``-d``) in a memory-backed folder and prints a running counter
(``-c``): the counter says when everything has arrived, the files' ``X-Rcpt-Args`` say what did. Every run
sends with ``smtp-source -N`` (a sequence number prepended to the recipient) to a recipient naming the run,
so each message is counted by its own recipient: lost and duplicated are exact.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.pki import Pki
from tests.support.postfix import BASE_MAIN, SERVICES, free_port, instance_folder, started

DOMAIN = "cabinet.test.mssante.fr"
SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
_RCPT = re.compile(rb"^X-Rcpt-Args: <(\d+)r(\d+)\.dr@", re.MULTILINE)
_COUNTER = re.compile(rb"mesg=(\d+)")
# The dumps go to memory: the sink's writing them must not compete for the disk the servers fsync to.
_MEMORY = Path("/dev/shm")  # noqa: S108 - a private folder is made in it with mkdtemp

_SINK_MAIN = """\
smtpd_tls_security_level = encrypt
smtpd_tls_cert_file = {pki.server.cert}
smtpd_tls_key_file = {pki.server.key}
smtpd_tls_CAfile = {pki.ca}
smtpd_tls_ask_ccert = yes
smtpd_tls_req_ccert = yes
smtpd_tls_loglevel = 0
smtpd_proxy_filter = 127.0.0.1:{filter_port}
smtpd_proxy_timeout = 300s
"""


def recipient(run: int) -> str:
    """The ``smtp-source -t`` address of run number ``run`` (``-N`` prepends the message's number)."""
    return f"r{run}.dr@{DOMAIN}"


@dataclass(frozen=True)
class Received:
    """What one run's messages did at the sink."""

    delivered: int
    lost: int
    duplicated: int


class Sink:
    """A running TLS sink on ``port``; see the module docstring."""

    def __init__(self, port: int, dumps: Path, process: subprocess.Popen[bytes]) -> None:
        self.port = port
        self._dumps = dumps
        self._process = process
        self._count = 0
        self._changed = threading.Condition()
        threading.Thread(target=self._read_counter, daemon=True).start()

    def _read_counter(self) -> None:
        assert self._process.stdout is not None
        while chunk := self._process.stdout.read1(65536):
            if found := _COUNTER.findall(chunk):
                with self._changed:
                    self._count = int(found[-1])
                    self._changed.notify_all()

    @staticmethod
    def clock() -> float:
        """The clock ``wait_for`` answers in."""
        return time.monotonic()

    def count(self) -> int:
        """Messages smtp-sink has taken so far (its ``-c`` counter, all runs)."""
        with self._changed:
            return self._count

    def wait_for(self, total: int, timeout: float) -> float | None:
        """The ``time.monotonic()`` at which the counter reached ``total``; None after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._count < total:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._changed.wait(min(left, 0.2))
            return time.monotonic()

    def collect(self, run: int, count: int) -> Received:
        """Count run ``run``'s messages (numbered 1..``count`` by smtp-source) and remove every dump."""
        seen: Counter[int] = Counter()
        for entry in os.scandir(self._dumps):
            with open(entry.path, "rb") as dump:
                found = _RCPT.search(dump.read(4096))
            if found and int(found.group(2)) == run:
                seen[int(found.group(1))] += 1
            os.unlink(entry.path)
        expected = set(range(1, count + 1))
        return Received(
            delivered=sum(seen.values()),
            lost=len(expected - seen.keys()),
            duplicated=sum(n - 1 for n in seen.values() if n > 1),
        )


@contextlib.contextmanager
def tls_sink(pki: Pki) -> Iterator[Sink]:
    """Start the sink (its Postfix and its smtp-sink) for the block; both stopped by PID at the end."""
    root = instance_folder()
    dumps = Path(tempfile.mkdtemp(prefix="mssgw-bench-sink-", dir=_MEMORY if _MEMORY.is_dir() else None))
    shutil.chown(dumps, "postfix")
    filter_port, port = free_port(), free_port()
    process = subprocess.Popen(
        [SMTP_SINK, "-c", "-u", "postfix", "-d", f"{dumps}/m.", f"127.0.0.1:{filter_port}", "1024"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        (root / "main.cf").write_text(
            BASE_MAIN.format(root=root, domain=DOMAIN) + _SINK_MAIN.format(pki=pki, filter_port=filter_port),
            encoding="utf-8",
        )
        (root / "master.cf").write_text(f"{port} inet n - n - - smtpd\n{SERVICES}", encoding="utf-8")
        with started(root, port):
            yield Sink(port, dumps, process)
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(dumps, ignore_errors=True)
