"""Running a relay in the test's loop until the queue rows a test looks at are settled, then stopping it.

Waits on the store's own state (a short poll of the queue), never on a fixed delay; gives up after 20 s
so that a relay that never finishes fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from gateway.outbound.relay import Relay
from gateway.store.db import Store


async def run_relay_until(relay: Relay, settled: Callable[[], bool]) -> None:
    """Start ``relay``, wait until ``settled()`` is true, stop it."""
    task = await relay.start()
    deadline = asyncio.get_running_loop().time() + 20
    while not settled():
        assert asyncio.get_running_loop().time() < deadline, "the relay never finished"
        await asyncio.sleep(0.05)
    await relay.stop(5)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def states(store: Store, *pks: int) -> set[str]:
    """The states of the deliveries of messages ``pks``."""
    return {d.state for pk in pks for d in store.queue.show(pk).deliveries}
