"""systemd's side of sd_notify for tests: an abstract datagram socket that records what the daemon says.

A thread receives each datagram and, at that very moment, runs ``probe`` (e.g. "does the wake socket exist,
do the listeners accept connections?"), so a test can tell what was true when READY=1 arrived.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType


@dataclass(frozen=True, slots=True)
class Notification:
    fields: dict[str, str]
    probe: object
    at: float


class NotifySocket:
    """``with NotifySocket(probe) as manager: env={"NOTIFY_SOCKET": manager.address}``."""

    def __init__(self, probe: Callable[[], object] = lambda: None) -> None:
        self.name = f"mssgw-test-{uuid.uuid4().hex}"
        self.address = "@" + self.name
        self.probe = probe
        self.received: list[Notification] = []
        self._cond = threading.Condition()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind("\0" + self.name)
        self._sock.settimeout(0.2)
        self._closing = False
        self._thread = threading.Thread(target=self._receive, name="notify", daemon=True)

    def _receive(self) -> None:
        while not self._closing:
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            with self._cond:
                self.received.append(Notification(fields, self.probe(), time.monotonic()))
                self._cond.notify_all()

    def wait_for(
        self, predicate: Callable[[list[Notification]], bool], timeout: float = 30.0
    ) -> list[Notification]:
        """Every notification so far, once ``predicate`` holds for them."""
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self.received), timeout):
                raise AssertionError(
                    f"not notified as expected within {timeout}s: {[n.fields for n in self.received]}"
                )
            return list(self.received)

    def __enter__(self) -> NotifySocket:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closing = True
        self._thread.join()
        self._sock.close()


def count(notifications: list[Notification], key: str, value: str = "1") -> int:
    return sum(1 for n in notifications if n.fields.get(key) == value)


def index(notifications: list[Notification], key: str, value: str = "1", start: int = 0) -> int:
    """Position of the first notification at or after ``start`` carrying ``key=value`` (-1: none)."""
    for position in range(start, len(notifications)):
        if notifications[position].fields.get(key) == value:
            return position
    return -1
