"""The folder transport: writes each message as an ``.eml`` file that business software picks up.

Written to a temporary name, flushed to disk, then renamed, so a reader never sees a partial file and a
crash leaves at most a stray temporary file (``.tmp-*``), never a half message under its final name.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

from gateway.outbound.transports.base import OutboundMessage, Outcome, RecipientResult, all_recipients


class FolderTransport:
    """Drops messages into one directory."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def send(self, message: OutboundMessage) -> list[RecipientResult]:
        try:
            name = await asyncio.to_thread(self._write, message)
        except OSError as error:
            return all_recipients(message, Outcome.TEMPORARY, f"cannot write into {self.path}: {error}")
        return all_recipients(message, Outcome.DELIVERED, f"written as {name}", peer=f"folder:{self.path}")

    def _write(self, message: OutboundMessage) -> str:
        self.path.mkdir(parents=True, exist_ok=True)
        name = f"{message.queue_id or 0:010d}-{uuid.uuid4().hex}.eml"
        temporary = self.path / f".tmp-{name}"
        with open(temporary, "wb") as handle:
            handle.write(message.content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path / name)
        directory = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        return name

    async def close(self) -> None:
        """Nothing is held open between messages."""
