"""Room set aside on the disk of an SQLite store, so that mail already queued still leaves when it fills.

Every write SQLite makes appends to its WAL; on a full disk even the relay's small updates (claiming a
delivery, recording an operator's 250) fail, and a backlog would wait for a person to make room. Like a
ballast, the daemon keeps a file of ``RESERVE_BYTES`` beside the database while there is room. The first
"disk full" gives it back, so that the relay has room to go on; while it is given back the intake refuses
new mail (``452 4.3.1``) without trying, and as soon as the room can be set aside again, mail is taken
again. PostgreSQL's disk is its server's business: there is no reserve there.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from pathlib import Path

from sqlalchemy.engine import make_url

from gateway.file_modes import PRIVATE_FILE, create_file
from gateway.logsetup import log_event

log = logging.getLogger(__name__)

RESERVE_BYTES = 2 * 1024 * 1024
"""Enough WAL frames for thousands of claims and outcomes, small beside any real disk."""


class SpaceReserve:
    """The reserve file of one SQLite store; ``held`` says whether its room is set aside now."""

    def __init__(self, path: Path, size: int = RESERVE_BYTES) -> None:
        self.path = path
        self.size = size
        self.held = False

    @classmethod
    def for_store(cls, url: str) -> SpaceReserve | None:
        """The reserve beside an SQLite database file (``store.db-reserve``); None for other stores."""
        parsed = make_url(url)
        if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
            return None
        return cls(Path(parsed.database + "-reserve"))

    def ensure(self) -> bool:
        """Set the room aside if it is not; True when it is held. A disk without the room leaves none of
        the reserve behind, so that what room there is stays for the relay."""
        if self.held:
            return True
        try:
            handle = create_file(self.path, PRIVATE_FILE)
        except OSError as error:
            if error.errno != errno.ENOSPC:
                raise
            return False
        try:
            os.posix_fallocate(handle, 0, self.size)
        except OSError as error:
            os.close(handle)
            self.path.unlink(missing_ok=True)
            if error.errno != errno.ENOSPC:
                raise
            return False
        os.close(handle)
        self.held = True
        log_event(log, "store-reserve-held", bytes=self.size)
        return True

    def release(self) -> None:
        """Give the room back to the store (the disk is full); the intake refuses until it is held again."""
        if not self.held:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.held = False
        log_event(log, "store-reserve-released", logging.WARNING, bytes=self.size)
