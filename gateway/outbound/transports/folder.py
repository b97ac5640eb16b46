"""The folder transport: writes each message as an ``.eml`` file that business software picks up.

Written to a temporary name, flushed to disk, then renamed, so a reader never sees a partial file and a
crash leaves at most a stray temporary file (``.tmp-*``), never a half message under its final name.
``write_atomically`` is shared with the local transport's drop folders; files are ``0640`` and the
directories made ``0750`` whatever the umask, for business software reading through a group
(``gateway.file_modes``).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

from gateway.file_modes import SHARED_DIR, SHARED_FILE, create_file, make_dirs
from gateway.outbound.transports.base import OutboundMessage, Outcome, RecipientResult, all_recipients


class FolderTransport:
    """Drops messages into one directory."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def send(self, message: OutboundMessage) -> list[RecipientResult]:
        try:
            name = f"{message.queue_id or 0:010d}-{uuid.uuid4().hex}.eml"
            await asyncio.to_thread(write_atomically, self.path, name, message.content)
        except OSError as error:
            return all_recipients(message, Outcome.TEMPORARY, f"cannot write into {self.path}: {error}")
        return all_recipients(message, Outcome.DELIVERED, f"written as {name}", peer=f"folder:{self.path}")

    async def close(self) -> None:
        """Nothing is held open between messages."""


def write_atomically(directory: Path, name: str, content: bytes) -> None:
    """Write ``directory/name`` (``0640``) through a flushed temporary file and a rename, then sync the
    directory."""
    make_dirs(directory, SHARED_DIR)
    temporary = directory / f".tmp-{name}"
    with os.fdopen(create_file(temporary, SHARED_FILE), "wb") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, directory / name)
    sync_directory(directory)


def sync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable."""
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)
