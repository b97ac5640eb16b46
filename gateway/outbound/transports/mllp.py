"""The MLLP client: one HL7 message to a peer, its ACK back (HL7 v2 appendix C framing, python-hl7's).

Used for the ZAM owed to producers and by ``mssgw hl7 send``. Like every transport it never decides what
an answer means for the queue: it returns the ACK or raises what the network did (OSError, TimeoutError,
IncompleteReadError), and the caller retries.
"""

from __future__ import annotations

import asyncio
import ssl

import hl7.mllp


async def exchange(host: str, port: int, data: bytes, context: ssl.SSLContext | None, wait: float) -> bytes:
    """Send ``data`` as one frame and return the peer's answering frame, all within ``wait`` seconds."""
    async with asyncio.timeout(wait):
        reader, writer = await hl7.mllp.open_hl7_connection(host, port, ssl=context)
        try:
            writer.writeblock(data)
            await writer.drain()
            block: bytes = await reader.readblock()
            return block
        finally:
            writer.close()
