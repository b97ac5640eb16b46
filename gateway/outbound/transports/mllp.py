"""The MLLP client: one HL7 message to a peer, its ACK back (HL7 v2 appendix C framing, python-hl7's).

Used for the ZAM owed to producers, the MDMs owed to consumers and by ``mssgw hl7 send``. Like every
transport it never decides what an answer means for the queue: ``exchange`` returns the answering frame or
raises what the network did (OSError, TimeoutError, IncompleteReadError); ``acknowledged`` reads that frame
as the ACK of the message sent, or raises ``NoAck`` with the reason, and the caller retries.
"""

from __future__ import annotations

import asyncio
import ssl

import hl7.mllp

from mappers.hl7_consumer_ack import ConsumerAck, ConsumerAckError, read_consumer_ack


class NoAck(Exception):
    """No ACK of the message sent: no connection, no answer in time, or an answer that is not its ACK."""


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


async def acknowledged(
    host: str, port: int, data: bytes, context: ssl.SSLContext | None, wait: float, control_id: str
) -> ConsumerAck:
    """The peer's ACK of ``data``, whose MSH-10 is ``control_id``: only an ACK naming it (MSA-2) counts.

    Raises:
        NoAck: its text says what went wrong, for the queue's ``last_error`` and the log.
    """
    try:
        answer = await exchange(host, port, data, context, wait)
    except (OSError, TimeoutError, asyncio.IncompleteReadError) as error:
        raise NoAck(f"no ACK: {error or type(error).__name__}") from error
    try:
        return read_consumer_ack(answer.decode("utf-8", "replace"), control_id=control_id)
    except ConsumerAckError as error:
        raise NoAck(f"unusable ACK: {error}") from error
