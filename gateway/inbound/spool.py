"""Message data as it arrives over SMTP: in memory while small, in a private unnamed file once large.

Fifty clients sending 20 MB at once held a gigabyte in memory before intake had looked at any of them
(issue 11): the octets were only waiting for their turn to be parsed and committed. Past a message's
threshold, or once the messages arriving together fill a shared memory budget, they wait on disk
instead, in a temporary file of the state directory (``tempfile`` creates it ``0600`` and unlinks it at
once, so a crash leaves no copy of a patient's mail anywhere but in the store), and are read back whole
only when intake takes the message, a few messages at a time (``LOADED_AT_ONCE``).
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from pathlib import Path
from typing import BinaryIO

SPOOL_THRESHOLD = 2 * 1024 * 1024
"""Octets one message may hold in memory while it arrives; a larger one goes to a file."""

MEMORY_BUDGET = 32 * 1024 * 1024
"""Octets all the messages arriving may hold in memory together; past it the next ones go to files.

A fixed threshold alone sent every message of 1 MiB to a file (open, write, flush, read back in a
thread, close: about a millisecond each, issue 16) however few arrived at once; a budget shared by the
sessions keeps them in memory while few do, and still bounds the memory when many do (issue 11)."""

LARGE = 1024 * 1024
"""Octets from which a message takes a turn (``LOADED_AT_ONCE``) from intake's parse to the commit,
whether it waited in memory or in a file: the copies made on the way (parsed, signed, stored) are what
the turns bound, the budget only what is waiting."""

LOADED_AT_ONCE = 4
"""Large messages (spooled ones read back into memory) at once, from intake's parse to the commit.
Parsing, two at a time (``gateway.inbound.intake.PARSES_AT_ONCE``), is what they wait for: two more keep
the commits going while those parse."""


class MemoryBudget:
    """The octets the spools of every session hold in memory (``held``), against one ``limit``.

    Runs on the daemon's event loop only: no lock.
    """

    def __init__(self, limit: int = MEMORY_BUDGET) -> None:
        self.limit = limit
        self.held = 0

    def take(self, size: int) -> bool:
        """Hold ``size`` more octets if they fit; False (nothing taken) when they do not."""
        if self.held + size > self.limit:
            return False
        self.held += size
        return True

    def give_back(self, size: int) -> None:
        """Return octets taken before."""
        self.held -= size


class Spool:
    """One DATA's octets, as received (still dot-stuffed); ``write`` until the dot, ``read`` once.

    The octets stay in memory while both this message's ``threshold`` and the shared ``budget`` allow;
    the share taken is held until ``close``, when the message is committed or refused.
    """

    def __init__(
        self,
        threshold: int = SPOOL_THRESHOLD,
        directory: Path | None = None,
        budget: MemoryBudget | None = None,
    ) -> None:
        self.threshold = threshold
        self.directory = directory
        self.budget = MemoryBudget(threshold) if budget is None else budget
        self._taken = 0
        self.size = 0
        self.error: OSError | None = None
        """Why the file could not be written (a full disk): the message was not kept."""
        self.dot_lines = True
        """Whether a line after the first may start with a dot (stuffed); the reader says when none does."""
        self._memory = bytearray()
        self._file: BinaryIO | None = None

    @property
    def spooled(self) -> bool:
        """Whether the octets are in a file."""
        return self._file is not None

    @property
    def large(self) -> bool:
        """Whether the message waits for a turn to be read and taken in (``LOADED_AT_ONCE``)."""
        return self.spooled or self.size > LARGE

    def write(self, data: bytes | bytearray | memoryview) -> bool:
        """Add ``data``; False (and nothing kept from here on) once the file cannot be written.

        A write to the file is a copy into the page cache, not a wait for the disk: it stays on the event
        loop, like the stream buffer it comes from.
        """
        if self.error is not None:
            return False
        self.size += len(data)
        try:
            if self._file is not None:
                self._file.write(data)
            elif len(self._memory) + len(data) <= self.threshold and self.budget.take(len(data)):
                self._taken += len(data)
                self._memory += data
                return True
            else:
                self._file = tempfile.TemporaryFile(dir=self.directory)  # noqa: SIM115 - closed by close()
                self._file.write(self._memory)
                self._file.write(data)
                self._memory = bytearray()
                self._give_back()
            # Octets left in the file's buffer would meet a full disk only when read back, after the dot,
            # where nothing answers 452 for them: they reach the disk (the page cache) now.
            self._file.flush()
        except OSError as error:
            self.error = error
            self.close()
            return False
        return True

    async def read(self) -> bytes:
        """Every octet written, in one ``bytes``, once (the file is read off the event loop).

        From memory the octets leave the spool: they are the caller's, still counted in the budget.
        """
        if self._file is None:
            data, self._memory = bytes(self._memory), bytearray()
            return data
        return await asyncio.to_thread(_read_all, self._file)

    def close(self) -> None:
        """Forget the octets (the file's space is freed, the memory share given back); idempotent."""
        self._memory = bytearray()
        self._give_back()
        if self._file is not None:
            file, self._file = self._file, None
            # Closing flushes what the buffer still holds, which fails again on a full disk: those
            # octets are being forgotten anyway, and the descriptor is closed all the same.
            with contextlib.suppress(OSError):
                file.close()

    def _give_back(self) -> None:
        self.budget.give_back(self._taken)
        self._taken = 0


def _read_all(file: BinaryIO) -> bytes:
    file.flush()
    file.seek(0)
    return file.read()
