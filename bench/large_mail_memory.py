"""Benchmark (run by hand): what large mail received at once costs the daemon in memory.

    .venv/bin/python bench/large_mail_memory.py [--messages 50] [--size-mb 20] [--env NAME=VALUE …]

``mssgw run`` runs as a subprocess on SQLite with the submission listener (allowed network, no TLS) and a
folder route, so what it accepts is relayed into a temporary folder and nothing leaves the machine. All
messages are sent at once, one connection each, from this process's event loop (the client costs the
daemon nothing). The daemon's ``VmRSS`` is sampled every 20 ms from ``/proc``; ``VmHWM`` is the kernel's
own peak. "After" is read once every message is in the folder and the daemon has been idle for
``--settle`` seconds. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.gateway import Gateway, submission_port, submission_section  # noqa: E402
from tests.support.mail import APP, OUR_DOMAIN, OUTSIDE  # noqa: E402
from tests.support.pki import make_pki  # noqa: E402

MIB = 1024 * 1024


def attachment_body(size: int) -> bytes:
    """A multipart body of about ``size`` bytes: a base64 attachment in 76-character lines, as mail
    clients write them (no line starts with a dot, so it needs no stuffing)."""
    encoded = base64.encodebytes(os.urandom(size * 3 // 4)).replace(b"\n", b"\r\n")
    return (
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n'
        b"Compte rendu joint.\r\n--b\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="imagerie.bin"\r\n\r\n' + encoded + b"--b--\r\n"
    )


async def send(port: int, n: int, body: bytes) -> str:
    """One SMTP transaction on its own connection; the final reply's code and enhanced code (``452 4.3.1``
    from the cap on octets in flight is a correct answer, counted apart), or how the connection failed."""
    try:
        return await transaction(port, n, body)
    except (OSError, asyncio.IncompleteReadError) as error:
        return type(error).__name__


async def transaction(port: int, n: int, body: bytes) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def reply() -> bytes:
        while (line := await reader.readline())[3:4] == b"-":
            pass
        return line

    head = (
        f"From: {APP}\r\nTo: {OUTSIDE}\r\nSubject: imagerie {n}\r\nMessage-ID: <large-{n}@{OUR_DOMAIN}>\r\n"
    )
    await reply()
    for command in (
        b"EHLO bench.test",
        f"MAIL FROM:<{APP}>".encode(),
        f"RCPT TO:<{OUTSIDE}>".encode(),
        b"DATA",
    ):
        writer.write(command + b"\r\n")
        await reply()
    writer.write(head.encode() + body + b".\r\n")
    await writer.drain()
    final = await reply()
    writer.write(b"QUIT\r\n")
    writer.close()
    return " ".join(final.decode("ascii", "replace").split()[:2]) or "closed without a reply"


class Sampler(threading.Thread):
    """The highest ``VmRSS`` of a process, polled from ``/proc`` until stopped."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.stopped = threading.Event()

    def status(self, field: str) -> int:
        """``field`` of ``/proc/PID/status`` in bytes."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise LookupError(field)

    def run(self) -> None:
        while not self.stopped.wait(0.02):
            self.peak = max(self.peak, self.status("VmRSS"))


def measure(directory: Path, messages: int, size_mb: float, settle: float, env: dict[str, str]) -> None:
    pki = make_pki(directory / "pki")
    out = directory / "out"
    client = {"name": "lab", "senders": [APP], "networks": ["127.0.0.1/32"]}
    limit = int(size_mb * MIB * 1.2) + MIB
    gateway = Gateway(
        directory,
        {
            "gateway": {
                "hostname": "mssgw.hopital.test.mssante.fr",
                "state_dir": str(directory / "state"),
                "nil_reference": "DEV935997",
            },
            "inbound": {
                "domains": [OUR_DOMAIN],
                "max_message_size": limit,
                "connections_per_peer": messages,
                # Room for the whole burst: the figures are of what holding it costs, not of the cap.
                "max_inflight_bytes": max(messages * limit, 1024 * MIB),
            },
            "submission": submission_section(pki, [client], require_starttls=False),
        },
        routes=[{"domain": "*", "transport": "folder", "path": str(out)}],
    )
    gateway.write()
    body = attachment_body(int(size_mb * MIB))
    process = gateway.start(env)
    try:
        port = submission_port(gateway)
        sampler = Sampler(process.pid)
        idle = sampler.status("VmRSS")
        sampler.start()
        started = time.perf_counter()

        async def burst() -> list[str]:
            return await asyncio.gather(*(send(port, n, body) for n in range(messages)))

        finals = Counter(asyncio.run(burst()))
        accepted = sum(count for final, count in finals.items() if final.startswith("250"))
        received = time.perf_counter() - started
        while len(list(out.glob("*.eml"))) < accepted and time.perf_counter() - started < 600:
            time.sleep(0.2)
        delivered = len(list(out.glob("*.eml")))
        time.sleep(settle)
        sampler.stopped.set()
        sampler.join()
        after = sampler.status("VmRSS")
        hwm = sampler.status("VmHWM")
    finally:
        code = gateway.stop() if gateway.process is not None else None
    message_mb = (len(body) + 100) / MIB
    peak = max(sampler.peak, hwm)
    print(f"{messages} x {message_mb:.1f} MiB at once, env {env or '-'}")
    print(f"accepted {accepted}/{messages} in {received:.1f}s, delivered to the folder {delivered}")
    print("final replies: " + ", ".join(f"{count} x {final}" for final, count in sorted(finals.items())))
    print(f"RSS idle {idle / MIB:.0f} MiB, peak {peak / MIB:.0f} MiB (VmHWM {hwm / MIB:.0f} MiB)")
    print(f"RSS {settle:.0f}s after the burst {after / MIB:.0f} MiB")
    each = (peak - idle) / messages
    print(f"per message in flight: {each / MIB:.1f} MiB = {each / len(body):.2f}x its size")
    print(f"daemon exit code {code}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument("--size-mb", type=float, default=20)
    parser.add_argument("--settle", type=float, default=5)
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the daemon")
    args = parser.parse_args()
    env = dict(item.split("=", 1) for item in args.env)
    with tempfile.TemporaryDirectory() as folder:
        measure(Path(folder), args.messages, args.size_mb, args.settle, env)


if __name__ == "__main__":
    main()
