"""Large message data waits on disk while it arrives (``gateway.inbound.spool``), in an unnamed ``0600``
file of the state directory, and what is committed is exactly what the client meant (unstuffed), however
many large messages arrive at once."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import stat
from pathlib import Path

from gateway.inbound.spool import LOADED_AT_ONCE, SPOOL_THRESHOLD, MemoryBudget
from tests.integration.test_inflight_cap import send_whole, transaction, until
from tests.support.listener import open_submission_settings, running
from tests.support.mail import message
from tests.support.pki import Pki
from tests.support.smtp_wire import Wire


def large(subject: str) -> bytes:
    """A message over the spool threshold whose lines often start with a dot (stuffed on the wire)."""
    line = ".000000 compte rendu, ligne qui commence par un point\n"
    body = "".join(f".{n:06d}{line[7:]}" for n in range(SPOOL_THRESHOLD // len(line) + 1))
    content = message(subject=subject, body=body)
    assert len(content) > SPOOL_THRESHOLD and b"\r\n.0" in content
    return content


def stuffed(content: bytes) -> bytes:
    """``content`` as SMTP carries it (RFC 5321 § 4.5.2)."""
    return content.replace(b"\r\n.", b"\r\n..")


def spool_files(state: Path) -> list[os.stat_result]:
    """The files this process has open in ``state`` that no longer have a name."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(str(state)) and target.endswith("(deleted)"):
                found.append(os.stat(f"/proc/self/fd/{fd}"))
        except FileNotFoundError:
            continue  # closed meanwhile (the listing's own descriptor)
    return found


async def test_large_data_waits_in_an_unnamed_private_file_of_the_state_directory(
    tmp_path: Path, pki: Pki
) -> None:
    settings = open_submission_settings(tmp_path, pki)
    state = settings.gateway.state_dir
    async with running(settings, "submission") as gateway:
        content = large("spooled")
        wire = await Wire.connect(gateway.port)
        assert (await transaction(wire)).startswith("354")
        wire.writer.write(stuffed(content))  # all but the final dot: still arriving
        await until(lambda: gateway.listener.inflight.held >= len(stuffed(content)))

        (spooled,) = spool_files(state)
        assert stat.S_IMODE(spooled.st_mode) == 0o600
        assert spooled.st_size >= len(content)
        assert not [p for p in state.iterdir() if not p.name.startswith(("mssgw.db", "."))]

        assert (await wire.send(b".\r\n")).startswith("250 2.0.0 Queued as")
        await wire.close()
        assert [raw for _, _, raw in gateway.messages()] == [content]
        assert spool_files(state) == []
        assert gateway.listener.inflight.held == 0


async def test_more_large_messages_at_once_than_are_loaded_are_all_committed_intact(
    tmp_path: Path, pki: Pki
) -> None:
    settings = open_submission_settings(tmp_path, pki)
    async with running(settings, "submission") as gateway:
        contents = [large(f"burst {n}") for n in range(LOADED_AT_ONCE + 2)]

        async def one(content: bytes) -> str:
            wire = await Wire.connect(gateway.port)
            try:
                return await send_whole(wire, stuffed(content))
            finally:
                await wire.close()

        replies = await asyncio.gather(*(one(c) for c in contents))
        assert all(r.startswith("250 2.0.0 Queued as") for r in replies), replies
        assert sorted(raw for _, _, raw in gateway.messages()) == sorted(contents)
        assert spool_files(settings.gateway.state_dir) == []
        assert gateway.listener.inflight.held == 0


async def test_data_the_spool_cannot_write_is_refused_temporarily_and_the_session_goes_on(
    tmp_path: Path, pki: Pki
) -> None:
    settings = open_submission_settings(tmp_path, pki)
    async with running(settings, "submission") as gateway:
        listener = gateway.listener
        listener.config = dataclasses.replace(listener.config, spool_dir=tmp_path / "gone")
        wire = await Wire.connect(gateway.port)
        reply = await send_whole(wire, stuffed(large("unwritable")))
        assert reply.startswith("451 4.3.0"), reply
        assert (await wire.send(b"NOOP\r\n")) == "250 OK"
        await wire.close()
        assert gateway.messages() == []
        assert listener.inflight.held == 0


async def test_messages_past_the_shared_memory_budget_wait_in_files_and_are_all_committed(
    tmp_path: Path, pki: Pki
) -> None:
    """Each message is under its own threshold; together they pass the budget: at most two stay in
    memory, the rest go to files, every one is committed intact and the budget is all given back."""
    settings = open_submission_settings(tmp_path, pki)
    state = settings.gateway.state_dir
    async with running(settings, "submission") as gateway:
        inflight = gateway.listener.inflight
        contents = [message(subject=f"budget {n}", body=f".{n} ligne\n" * 20_000) for n in range(6)]
        size = max(len(stuffed(c)) for c in contents)
        assert size < SPOOL_THRESHOLD
        inflight.memory = MemoryBudget(2 * size)
        wires = [await Wire.connect(gateway.port) for _ in contents]
        for wire, content in zip(wires, contents, strict=True):
            assert (await transaction(wire)).startswith("354")
            wire.writer.write(stuffed(content))  # all but the final dot: every one still arriving
        await until(lambda: inflight.held >= sum(len(stuffed(c)) for c in contents))
        # Two fit at most (fewer when their octets came interleaved and neither could finish in memory).
        assert len(spool_files(state)) >= len(contents) - 2
        assert inflight.memory.held <= inflight.memory.limit

        replies = [await wire.send(b".\r\n") for wire in wires]
        assert all(r.startswith("250 2.0.0 Queued as") for r in replies), replies
        for wire in wires:
            await wire.close()
        assert sorted(raw for _, _, raw in gateway.messages()) == sorted(contents)
        assert spool_files(state) == [] and inflight.memory.held == 0 and inflight.held == 0
