"""Failed AUTH, slowed down per client address: the listeners' defence against password guessing.

Each failure from an address doubles the wait before the next failed login from it is answered (none
for the first, ``base`` for the second, then 2×, 4×… up to ``cap``); a success clears the address, and
an address quiet for ``forget`` seconds starts again. The table keeps at most ``max_addresses`` (the
least recently failing go first), so a spray from many addresses cannot grow it without bound. The per
connection limit (three failures, then ``421``) is the session's own (``smtp_server``). No I/O here.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class AuthThrottle:
    """Failed logins per client address, and the delay the next failure from it waits."""

    def __init__(
        self,
        base: float = 1.0,
        cap: float = 30.0,
        forget: float = 900.0,
        max_addresses: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base, self.cap, self.forget, self.max_addresses = base, cap, forget, max_addresses
        self.clock = clock
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def failed(self, address: str) -> tuple[int, float]:
        """Count one failure from ``address``: its failures so far and the seconds to wait before
        answering this one."""
        now = self.clock()
        count, last = self._failures.pop(address, (0, now))
        if now - last > self.forget:
            count = 0
        count += 1
        self._failures[address] = (count, now)
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)
        return count, self.delay(count)

    def delay(self, failures: int) -> float:
        """The wait before answering the ``failures``-th failure in a row."""
        return 0.0 if failures <= 1 else min(self.base * 2 ** (failures - 2), self.cap)

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)
