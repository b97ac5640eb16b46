"""The relay in a process of its own (``gateway.relay_process``), so that intake and relay use two cores.

The parent (``mssgw run``) starts ``mssgw run --role relay`` with the same configuration file, after its
own listeners are bound, and counts it as started once the child has sent ``READY=1`` on a private notify
socket (the sd_notify protocol, so the child's ``Daemon`` needs nothing new). The child binds the wake
socket; the parent's commits ping it. A stop or reload of the parent is forwarded (SIGTERM, SIGHUP). The
child dying is the parent dying, loudly, as any crashed service: systemd (``Restart=on-failure``) restarts
the whole gateway, so the relay never runs beside a parent that believes it is gone, nor twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path

from gateway.logsetup import log_event
from gateway.settings import Settings

log = logging.getLogger(__name__)


class RelayProcessDied(RuntimeError):
    """The relay process ended while the gateway was not stopping."""


def _died(code: int, stage: str) -> RelayProcessDied:
    """Log the death (a negative code is the signal that killed it) and the error ending the gateway."""
    log_event(log, "relay-process-died", logging.CRITICAL, code=code, stage=stage)
    return RelayProcessDied(f"the relay process exited with code {code} while {stage}")


class _ReadyProtocol(asyncio.DatagramProtocol):
    def __init__(self, ready: asyncio.Event) -> None:
        self.ready = ready

    def datagram_received(self, data: bytes, addr: object) -> None:
        if b"READY=1" in data.split(b"\n"):
            self.ready.set()


class RelayProcess:
    """The child process running the relay: started last, stopped first."""

    def __init__(self, config_path: Path, settings: Settings) -> None:
        self.config_path = config_path
        self.settings = settings
        self.process: asyncio.subprocess.Process | None = None
        self._stopping = False
        self.stopped_cleanly = True
        """False once the child exited other than with 0 on a stop."""

    async def start(self) -> asyncio.Task[None]:
        """Start the child; return once it is ready. The returned task ends when the child does."""
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(f"\0mssgw-relay-{os.getpid()}")
        transport, _ = await loop.create_datagram_endpoint(lambda: _ReadyProtocol(ready), sock=notify)
        environ = {k: v for k, v in os.environ.items() if k not in ("WATCHDOG_USEC", "WATCHDOG_PID")}
        environ["NOTIFY_SOCKET"] = f"@mssgw-relay-{os.getpid()}"
        command = [sys.executable, "-m", "gateway", "run", "-c", str(self.config_path), "--role", "relay"]
        try:
            self.process = await asyncio.create_subprocess_exec(*command, env=environ)
            log_event(log, "relay-process-started", pid=self.process.pid)
            exited = asyncio.create_task(self.process.wait())
            readiness = asyncio.create_task(ready.wait())
            await asyncio.wait({exited, readiness}, return_when=asyncio.FIRST_COMPLETED)
            readiness.cancel()
            if exited.done():
                raise _died(exited.result(), "starting")
        finally:
            transport.close()
        return asyncio.create_task(self._watch(exited), name="relay-process")

    async def _watch(self, exited: asyncio.Task[int]) -> None:
        code = await exited
        if self._stopping or code == 0:
            return  # asked to stop (by us or by a signal to the whole group): the gateway stops too
        raise _died(code, "running")

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
