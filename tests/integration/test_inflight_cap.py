"""The cap on the octets of mail in flight (``inbound.max_inflight_bytes``): over it a client hears
``452 4.3.1`` at MAIL (SIZE=) or after its data, nothing is kept, and the room comes back whatever became
of the message in flight (committed, refused, cut off, failed)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from gateway.inbound.arrival import Arrival, Verdict
from mappers.records import MessageRecord
from tests.support.listener import Running, open_submission_settings, running
from tests.support.mail import APP, OUTSIDE, message
from tests.support.pki import Pki
from tests.support.smtp_wire import Wire

LIMIT = 100_000  # inbound.max_message_size
CAP = 150_000  # inbound.max_inflight_bytes: one large message, not two
BUSY = "452 4.3.1 Too much mail is being received at once"


def large(subject: str = "Imagerie") -> bytes:
    """A message of about 90 000 octets: two of them do not fit under the cap."""
    return message(subject=subject, body=("Compte rendu d'imagerie, ligne de texte.\n") * 2200)


async def transaction(wire: Wire, mail_from: str = f"MAIL FROM:<{APP}>") -> str:
    """EHLO (once per connection is enough, again is harmless), MAIL, RCPT, DATA; the reply to DATA."""
    await wire.send(b"EHLO client.test\r\n")
    mail = await wire.send(f"{mail_from}\r\n".encode())
    if not mail.startswith("250"):
        return mail
    assert (await wire.send(f"RCPT TO:<{OUTSIDE}>\r\n".encode())).startswith("250")
    return await wire.send(b"DATA\r\n")


async def send_whole(wire: Wire, content: bytes) -> str:
    """One whole transaction; the final reply."""
    answer = await transaction(wire)
    if not answer.startswith("354"):
        return answer
    return await wire.send(content + b".\r\n")


async def until(condition: Callable[[], bool]) -> None:
    """Wait (bounded) until the listener got what a client sent: the socket gives no reply to wait on."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the listener never received the data")


async def test_mail_over_the_cap_gets_452_and_goes_through_once_the_room_is_back(
    tmp_path: Path, pki: Pki
) -> None:
    settings = open_submission_settings(tmp_path, pki, max_message_size=LIMIT, max_inflight_bytes=CAP)
    async with running(settings, "submission") as gateway:
        first, second = await Wire.connect(gateway.port), await Wire.connect(gateway.port)
        content = large("first")
        assert (await transaction(first)).startswith("354")
        first.writer.write(content)  # all but the final dot: the first message is still in flight
        await until(lambda: gateway.listener.inflight.held >= len(content))

        # Declared too large for what is left: refused at MAIL, before any data.
        await second.send(b"EHLO client.test\r\n")
        refused = await second.send(f"MAIL FROM:<{APP}> SIZE={len(content)}\r\n".encode())
        assert refused.startswith(BUSY), refused
        # Not declared: refused once the octets go over, read to the end and dropped, the session goes on.
        assert (await send_whole(second, large("second"))).startswith(BUSY)
        assert (await second.send(b"NOOP\r\n")) == "250 OK"

        assert (await first.send(b".\r\n")).startswith("250 2.0.0 Queued as")
        retried = await send_whole(second, large("second"))
        assert retried.startswith("250 2.0.0 Queued as"), retried
        await first.close()
        await second.close()
        subjects = [raw.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0] for _, _, raw in gateway.messages()]
        assert subjects == [b"first", b"second"]


async def committed(gateway: Running, content: bytes) -> str:
    return await _sent(gateway, content)


async def refused_for_a_nul(gateway: Running, content: bytes) -> str:
    return await _sent(gateway, content.replace(b"Compte", b"Com\x00te", 1))


async def refused_by_intake(gateway: Running, content: bytes) -> str:
    return await _sent(gateway, content.replace(f"From: {APP}".encode(), b"From: intruder@elsewhere.test"))


async def too_big(gateway: Running, content: bytes) -> str:
    return await _sent(gateway, content * 2)


async def cut_off(gateway: Running, content: bytes) -> str:
    """The client goes away in the middle of its data."""
    wire = await Wire.connect(gateway.port)
    assert (await transaction(wire)).startswith("354")
    wire.writer.write(content[: len(content) // 2])
    await until(lambda: gateway.listener.inflight.held > 0)
    await wire.close()
    await until(lambda: not gateway.listener.connections.sessions)
    return "closed"


async def failed(gateway: Running, content: bytes) -> str:
    """A recipient rule breaks once the message is read (a bug, a store it reads): aiosmtpd answers."""

    def breaks(arrival: Arrival, address: str, record: MessageRecord | None) -> Verdict | None:
        if record is not None:
            raise RuntimeError("rule broke")
        return None

    gateway.intake.policy.recipient_rules = (breaks,)
    try:
        return await _sent(gateway, content)
    finally:
        gateway.intake.policy.recipient_rules = ()


async def _sent(gateway: Running, content: bytes) -> str:
    wire = await Wire.connect(gateway.port)
    answer = await send_whole(wire, content)
    await wire.close()
    return answer


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (committed, "250 2.0.0 Queued as"),
        (refused_for_a_nul, "554 5.6.0"),
        (refused_by_intake, "553 5.7.1"),
        (too_big, "552 5.3.4"),
        (cut_off, "closed"),
        (failed, "451 4.3.0 Local error"),
    ],
    ids=lambda value: getattr(value, "__name__", ""),
)
async def test_the_room_comes_back_on_every_path(
    tmp_path: Path, pki: Pki, path: Callable[[Running, bytes], Awaitable[str]], expected: str
) -> None:
    settings = open_submission_settings(tmp_path, pki, max_message_size=LIMIT, max_inflight_bytes=CAP)
    async with running(settings, "submission") as gateway:
        answer = await path(gateway, large("the path"))
        assert answer.startswith(expected), answer
        # A message that needs most of the cap still fits: nothing of the first one is counted any more.
        assert (await _sent(gateway, large("after"))).startswith("250 2.0.0 Queued as")
        assert gateway.listener.inflight.held == 0
