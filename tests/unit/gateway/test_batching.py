"""The group-commit batcher: callers arriving together share a batch, errors reach each of them."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from gateway.batching import Batcher


async def test_callers_arriving_together_share_one_batch_in_the_batchers_thread() -> None:
    batches: list[list[int]] = []
    threads: set[str] = set()

    def handle(items: Sequence[int]) -> list[int]:
        batches.append(list(items))
        threads.add(threading.current_thread().name)
        return [item * 10 for item in items]

    batcher: Batcher[int, int] = Batcher(handle, max_batch=3)
    results = await asyncio.gather(*(batcher.submit(n) for n in range(5)))

    assert results == [0, 10, 20, 30, 40]
    assert batches == [[0, 1, 2], [3, 4]]  # all queued before the first batch: at most 3 a batch
    assert threads == {"batcher"}


async def test_a_failed_batch_fails_its_callers_and_the_next_batch_runs() -> None:
    def handle(items: Sequence[int]) -> list[int]:
        if 0 in items:
            raise ValueError("store down")
        return list(items)

    batcher: Batcher[int, int] = Batcher(handle, max_batch=10)
    with pytest.raises(ValueError, match="store down"):
        await batcher.submit(0)
    assert await batcher.submit(7) == 7


async def test_a_cancelled_caller_leaves_its_item_handled_once() -> None:
    started, release = threading.Event(), threading.Event()
    handled: list[int] = []

    def handle(items: Sequence[int]) -> list[None]:
        started.set()
        release.wait(5)
        handled.extend(items)
        return [None for _ in items]

    batcher: Batcher[int, None] = Batcher(handle, max_batch=10)
    caller = asyncio.create_task(batcher.submit(1))
    await asyncio.to_thread(started.wait, 5)
    caller.cancel()
    release.set()
    await batcher.drained()

    assert handled == [1]
    assert caller.cancelled()
