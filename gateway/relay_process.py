"""The relay in a process of its own (``gateway.relay_process``), so that intake and relay use two cores.

The parent (``mssgw run``) starts ``mssgw run --role relay`` with the same configuration file, after its
own listeners are bound, and counts it as started once the child has sent ``READY=1`` on a private notify
socket (the sd_notify protocol, so the child's ``Daemon`` needs nothing new). The child binds the wake
socket; the parent's commits ping it. A stop or reload of the parent is forwarded (SIGTERM, SIGHUP). The
child dying is the parent dying, loudly, as any crashed service: systemd (``Restart=on-failure``) restarts
the whole gateway, so the relay never runs beside a parent that believes it is gone, nor twice.

Under systemd's watchdog the child sends its own ``WATCHDOG=1`` to the parent, from its event loop, as
often as the parent does to systemd: a child silent for a whole ``WatchdogSec`` is hung, and killed, which
ends the gateway as its death would. The relay's counters (deliveries, retries, latency) live in the child:
``/metrics``, served by the parent, asks the child for them over a socket pair at each scrape.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from prometheus_client.core import Metric

from gateway import metrics
from gateway.logsetup import log_event
from gateway.settings import Settings

log = logging.getLogger(__name__)

COUNTS_FD = "MSSGW_RELAY_COUNTS_FD"
"""The environment variable naming, in the child, its end of the socket pair the parent asks counts on."""

COUNTS_TIMEOUT = 2.0
"""Seconds a scrape waits for the child's counts before serving the parent's alone (and saying so)."""

_MAX_COUNTS = 4 * 1024 * 1024
"""Bytes of one answer at most (the counters of a gateway: a few KiB)."""


class RelayProcessDied(RuntimeError):
    """The relay process ended while the gateway was not stopping."""


def _died(code: int, stage: str) -> RelayProcessDied:
    """Log the death (a negative code is the signal that killed it) and the error ending the gateway."""
    log_event(log, "relay-process-died", logging.CRITICAL, code=code, stage=stage)
    return RelayProcessDied(f"the relay process exited with code {code} while {stage}")


class _Notices(asyncio.DatagramProtocol):
    """What the child says on its notify socket: ready, and its heartbeats."""

    def __init__(self) -> None:
        self.ready = asyncio.Event()
        self.heard = time.monotonic()
        """When the child was last heard from (its ``READY=1`` or a ``WATCHDOG=1``)."""

    def datagram_received(self, data: bytes, addr: object) -> None:
        lines = data.split(b"\n")
        if b"READY=1" in lines or b"WATCHDOG=1" in lines:
            self.heard = time.monotonic()
        if b"READY=1" in lines:
            self.ready.set()


class _CountsLine:
    """The parent's end of the socket pair: one question (a number) per scrape, the answer echoes it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.asked = 0
        self.lock = threading.Lock()

    def ask(self) -> list[Metric]:
        """The child's counts; none, logged, when it does not answer in time (the scrape still answers)."""
        with self.lock:  # scrapes come on threads of their own
            self.asked += 1
            tag = self.asked.to_bytes(8, "big")
            deadline = time.monotonic() + COUNTS_TIMEOUT
            try:
                self.sock.send(tag)
                while True:
                    self.sock.settimeout(max(deadline - time.monotonic(), 0.001))
                    answer = self.sock.recv(_MAX_COUNTS)
                    if not answer:
                        raise ConnectionError("the relay process closed its end")
                    if answer[:8] == tag:  # else a late answer to an earlier scrape
                        return metrics.families_from_json(answer[8:])
            except (OSError, ValueError) as error:
                log_event(log, "relay-metrics-unavailable", logging.WARNING, reason=str(error) or "timeout")
                return []


def serve_counts(environ: Mapping[str, str] = os.environ) -> None:
    """In the relay process: answer the parent's questions for this process's counts, on a thread."""
    fd = environ.get(COUNTS_FD, "")
    if not fd.isdigit():
        return
    sock = socket.socket(fileno=int(fd))
    threading.Thread(target=_answer, args=(sock,), name="relay-counts", daemon=True).start()


def _answer(sock: socket.socket) -> None:
    with sock:
        while tag := sock.recv(8):  # nothing: the parent is gone, and so will this process be
            try:
                sock.send(tag + metrics.counted_json())
            except OSError as error:
                log_event(log, "relay-metrics-unsent", logging.ERROR, reason=str(error))


class RelayProcess:
    """The child process running the relay: started last, stopped first."""

    def __init__(self, config_path: Path, settings: Settings, watchdog_usec: int | None = None) -> None:
        self.config_path = config_path
        self.settings = settings
        self.watchdog_usec = watchdog_usec
        """systemd's ``WatchdogSec`` over the parent, which the child's heartbeats are held to as well."""
        self.process: asyncio.subprocess.Process | None = None
        self._notices = _Notices()
        self._notify: asyncio.DatagramTransport | None = None
        self._counts: socket.socket | None = None
        self._stopping = False
        self.stopped_cleanly = True
        """False once the child exited other than with 0 on a stop."""

    async def start(self) -> asyncio.Task[None]:
        """Start the child; return once it is ready. The returned task ends when the child does."""
        loop = asyncio.get_running_loop()
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(f"\0mssgw-relay-{os.getpid()}")
        self._notify, _ = await loop.create_datagram_endpoint(lambda: self._notices, sock=notify)
        environ = {k: v for k, v in os.environ.items() if k not in ("WATCHDOG_USEC", "WATCHDOG_PID")}
        environ["NOTIFY_SOCKET"] = f"@mssgw-relay-{os.getpid()}"
        if self.watchdog_usec:
            environ["WATCHDOG_USEC"] = str(self.watchdog_usec)  # no WATCHDOG_PID: it is the child's own
        self._counts, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for end in (self._counts, theirs):
            end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _MAX_COUNTS)
        environ[COUNTS_FD] = str(theirs.fileno())
        command = [sys.executable, "-m", "gateway", "run", "-c", str(self.config_path), "--role", "relay"]
        try:
            self.process = await asyncio.create_subprocess_exec(
                *command, env=environ, pass_fds=(theirs.fileno(),)
            )
        except BaseException:
            self._close()
            raise
        finally:
            theirs.close()
        log_event(log, "relay-process-started", pid=self.process.pid)
        metrics.COUNTS.elsewhere = _CountsLine(self._counts).ask
        exited = asyncio.create_task(self.process.wait())
        readiness = asyncio.create_task(self._notices.ready.wait())
        await asyncio.wait({exited, readiness}, return_when=asyncio.FIRST_COMPLETED)
        readiness.cancel()
        if exited.done():
            self._close()
            raise _died(exited.result(), "starting")
        return asyncio.create_task(self._watch(exited), name="relay-process")

    async def _watch(self, exited: asyncio.Task[int]) -> None:
        if self.watchdog_usec:
            await self._heartbeats(exited, self.watchdog_usec / 1_000_000)
        code = await exited
        self._close()
        if self._stopping or code == 0:
            return  # asked to stop (by us or by a signal to the whole group): the gateway stops too
        raise _died(code, "running")

    async def _heartbeats(self, exited: asyncio.Task[int], limit: float) -> None:
        """Kill the child once silent for ``limit`` seconds (its loop is blocked): the watch reports it."""
        while not exited.done():
            await asyncio.wait({exited}, timeout=limit / 4)
            silent = time.monotonic() - self._notices.heard
            if exited.done() or self._stopping or silent < limit or self.process is None:
                continue
            log_event(
                log, "relay-process-hung", logging.CRITICAL, pid=self.process.pid, silent=round(silent, 1)
            )
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            return

    def _close(self) -> None:
        """Stop listening to the child and asking it for counts (it is gone)."""
        metrics.COUNTS.elsewhere = None
        if self._notify is not None:
            self._notify.close()
            self._notify = None
        if self._counts is not None:
            self._counts.close()
            self._counts = None

    async def stop(self, grace: float) -> None:
        """SIGTERM the child, which drains its deliveries within ``grace``; kill it only well past that."""
        self._stopping = True
        process = self.process
        if process is None or process.returncode is not None:
            return  # never started, or already reported by the watch
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(process.wait(), grace + 10.0)
        except TimeoutError:
            log_event(log, "relay-process-killed", logging.ERROR, pid=process.pid)
            process.kill()
            code = await process.wait()
        self._close()
        if code != 0:
            self.stopped_cleanly = False
            log_event(log, "relay-process-failed", logging.ERROR, code=code)

    def prepare_reload(self, settings: Settings) -> Callable[[], None]:
        """The child re-reads the same file itself (and refuses it itself if broken)."""

        def apply() -> None:
            self.settings = settings
            if self.process is not None and self.process.returncode is None:
                self.process.send_signal(signal.SIGHUP)

        return apply
