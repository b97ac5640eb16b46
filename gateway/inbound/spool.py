"""Message data as it arrives over SMTP: in memory while small, in a private unnamed file once large.

Fifty clients sending 20 MB at once held a gigabyte in memory before intake had looked at any of them
(issue 11): the octets were only waiting for their turn to be parsed and committed. Past the threshold
they wait on disk instead, in a temporary file of the state directory (``tempfile`` creates it ``0600``
and unlinks it at once, so a crash leaves no copy of a patient's mail anywhere but in the store), and are
read back whole only when intake takes the message, a few messages at a time (``LOADED_AT_ONCE``).
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from pathlib import Path
from typing import BinaryIO

SPOOL_THRESHOLD = 1024 * 1024
"""Octets a message may hold in memory while it arrives; a larger one goes to a file."""

LOADED_AT_ONCE = 4
"""Spooled messages read back into memory at once, from intake's parse to the commit. Parsing, two at a
time (``gateway.inbound.intake.PARSES_AT_ONCE``), is what they wait for: two more keep the commits going
while those parse."""


class Spool:
    """One DATA's octets, as received (still dot-stuffed); ``write`` until the dot, ``read`` once."""

    def __init__(self, threshold: int = SPOOL_THRESHOLD, directory: Path | None = None) -> None:
        self.threshold = threshold
        self.directory = directory
        self.size = 0
        self.error: OSError | None = None
        """Why the file could not be written (a full disk): the message was not kept."""
        self.dot_lines = True
        """Whether a line after the first may start with a dot (stuffed); the reader says when none does."""
        self._memory = bytearray()
        self._file: BinaryIO | None = None

    @property
    def spooled(self) -> bool:
        """Whether the octets are in a file (reading them back waits for a turn)."""
        return self._file is not None

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
            elif len(self._memory) + len(data) <= self.threshold:
                self._memory += data
                return True
            else:
                self._file = tempfile.TemporaryFile(dir=self.directory)  # noqa: SIM115 - closed by close()
                self._file.write(self._memory)
                self._file.write(data)
                self._memory = bytearray()
            # Octets left in the file's buffer would meet a full disk only when read back, after the dot,
            # where nothing answers 452 for them: they reach the disk (the page cache) now.
            self._file.flush()
        except OSError as error:
            self.error = error
            self.close()
            return False
        return True

    async def read(self) -> bytes:
        """Every octet written, in one ``bytes`` (the file is read off the event loop)."""
        if self._file is None:
            return bytes(self._memory)
        return await asyncio.to_thread(_read_all, self._file)

    def close(self) -> None:
        """Forget the octets (the file's space is freed); idempotent."""
        self._memory = bytearray()
        if self._file is not None:
            file, self._file = self._file, None
            # Closing flushes what the buffer still holds, which fails again on a full disk: those
            # octets are being forgotten anyway, and the descriptor is closed all the same.
            with contextlib.suppress(OSError):
                file.close()


def _read_all(file: BinaryIO) -> bytes:
    file.flush()
    file.seek(0)
    return file.read()
