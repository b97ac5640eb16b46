"""The octets of the messages the SMTP listeners are receiving and judging, against one global cap.

``inbound.max_connections`` does not bound memory by itself (200 connections of 35 MB are 7 GB): the
bytes in flight do. One ``InflightBytes`` per daemon is shared by every listener; each DATA takes a
``Holding`` that grows as the octets arrive (what a client declared with SIZE= is only a hint: what it
sends counts) and is given back once the message is committed or refused, whatever happened. Over the
cap the listener answers ``452 4.3.1`` and keeps nothing, so the client tries again later (RFC 5321
§ 4.5.3.1.10). All of it runs on the daemon's event loop: no lock. A large message waits for intake on
disk (``gateway.inbound.spool``) once it passes its own threshold or the shared ``memory`` budget: the
cap then bounds the spool's disk space, and ``loading`` how many of them are back in memory at once.
"""

from __future__ import annotations

import asyncio

from gateway.inbound.spool import LOADED_AT_ONCE, MemoryBudget


class InflightBytes:
    """What the transactions of every listener hold now (``held``, in octets); ``memory``: what part of
    it may wait in memory rather than in spool files."""

    def __init__(self, memory: MemoryBudget | None = None) -> None:
        self.held = 0
        self.loading = asyncio.Semaphore(LOADED_AT_ONCE)
        self.memory = MemoryBudget() if memory is None else memory

    def fits(self, size: int, cap: int) -> bool:
        """Whether ``size`` more octets fit under ``cap`` (0: no cap)."""
        return not cap or self.held + size <= cap

    def hold(self) -> Holding:
        """A new transaction's share, empty until its data arrives."""
        return Holding(self)


class Holding:
    """One DATA's share of the budget."""

    def __init__(self, budget: InflightBytes) -> None:
        self.budget = budget
        self.size = 0
        self.refused = False

    def grow_to(self, size: int, cap: int) -> bool:
        """Hold ``size`` octets in all; False (and nothing held any more) when that does not fit ``cap``."""
        extra = size - self.size
        if extra <= 0:
            return True
        if not self.budget.fits(extra, cap):
            self.refused = True
            self.release()  # what was received is dropped from here on: it holds nothing
            return False
        self.budget.held += extra
        self.size = size
        return True

    def release(self) -> None:
        """Give everything back (idempotent: the end of every path calls it)."""
        self.budget.held -= self.size
        self.size = 0
