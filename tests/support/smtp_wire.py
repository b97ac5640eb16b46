"""A raw SMTP client for tests that must send exact bytes (bare LF, NUL, smuggled line ends) that
``smtplib`` would fix or refuse; it reads whole (multi-line) replies and never sleeps."""

from __future__ import annotations

import asyncio


class Wire:
    """A raw SMTP client on asyncio streams: send exact bytes, read whole replies."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int) -> Wire:
        wire = cls(*await asyncio.open_connection("127.0.0.1", port))
        await wire.reply()
        return wire

    async def reply(self) -> str:
        lines = []
        while True:
            line = (await asyncio.wait_for(self.reader.readline(), 10)).decode()
            if not line:
                return "".join(lines) or "<closed>"
            lines.append(line)
            if line[3:4] != "-":
                return "".join(lines).strip()

    async def send(self, data: bytes) -> str:
        self.writer.write(data)
        await self.writer.drain()
        return await self.reply()

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()
