"""Group commit: concurrent callers' items are handled in one batch by one worker thread at a time.

While a batch is being committed, newcomers queue; the next batch takes them all. Each caller waits for the
transaction that carries its item, so "250 after commit" holds while one commit serves many messages.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    """Runs ``handle`` (blocking, in a thread) on batches of at most ``max_batch`` items."""

    def __init__(self, handle: Callable[[Sequence[T]], Sequence[R]], max_batch: int) -> None:
        self.handle = handle
        self.max_batch = max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._worker: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        """Queue ``item`` and wait until the batch carrying it is handled; its error is raised here."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await asyncio.shield(future)

    async def drained(self) -> None:
        """Return once every item submitted so far has been handled (its caller may have gone)."""
        while self._worker is not None and not self._worker.done():
            await asyncio.wait({self._worker})

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            try:
                results = await asyncio.to_thread(self.handle, [item for item, _ in batch])
            except Exception as error:  # noqa: BLE001 - handed to every waiting caller
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
