"""A tiny client of systemd's notify socket (sd_notify(3)): READY, RELOADING, STOPPING, STATUS, WATCHDOG.

Our own ~60 lines rather than the ``sdnotify`` package: the protocol is one datagram of ``KEY=value`` lines,
and we also need what that package lacks (abstract socket names, ``MONOTONIC_USEC`` for
``Type=notify-reload``-style reloads, the watchdog interval from ``$WATCHDOG_USEC``/``$WATCHDOG_PID``).
Outside systemd (no ``$NOTIFY_SOCKET``) every call does nothing. Never blocks: a lost datagram is harmless.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping


class Notifier:
    """Sends state changes to the service manager named by ``$NOTIFY_SOCKET``."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        # sd_notify(3): a leading "@" names a socket in the abstract namespace.
        self.address = "\0" + address[1:] if address and address.startswith("@") else address
        self.watchdog_usec = watchdog_usec

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> Notifier:
        """The notifier systemd set up for this process (an inactive one outside systemd)."""
        usec = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        # The watchdog is meant for the process whose pid systemd wrote, not for a child that inherited it.
        ours = not pid or (pid.isdigit() and int(pid) == os.getpid())
        return cls(environ.get("NOTIFY_SOCKET") or None, int(usec) if usec.isdigit() and ours else None)

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between two ``WATCHDOG=1``: half of ``WatchdogSec=`` as systemd recommends."""
        if not self.watchdog_usec:
            return None
        return self.watchdog_usec / 2_000_000

    def send(self, **fields: str | int) -> None:
        """One datagram, ``FIELD=value`` per line (``ready=1`` is sent as ``READY=1``)."""
        if not self.address:
            return
        payload = "\n".join(f"{key.upper()}={value}" for key, value in fields.items())
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            try:
                sock.sendto(payload.encode("utf-8"), self.address)
            except OSError:
                # The manager went away or its queue is full: the next notification will say the same.
                return

    def ready(self, status: str) -> None:
        self.send(ready=1, status=status)

    def reloading(self) -> None:
        # systemd ≥ 253 (Type=notify-reload) wants MONOTONIC_USEC with RELOADING=1; older ones ignore it.
        self.send(reloading=1, monotonic_usec=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)

    def stopping(self) -> None:
        self.send(stopping=1, status="stopping: draining deliveries in flight")

    def status(self, text: str) -> None:
        self.send(status=text)

    def watchdog(self) -> None:
        self.send(watchdog=1)
