"""MLLP framing as the listener reads it: frames back as sent, oversized ones measured, junk refused."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.inbound.mllp_server import FrameTooLarge, FramingError, read_frame

payloads = st.binary(max_size=300).map(lambda b: b.replace(b"\x0b", b"").replace(b"\x1c", b""))


def reader_of(data: bytes, limit: int) -> asyncio.StreamReader:
    reader = asyncio.StreamReader(limit=limit + 2)
    reader.feed_data(data)
    reader.feed_eof()
    return reader


async def frames(data: bytes, limit: int) -> list[bytes | str]:
    reader, out = reader_of(data, limit), []
    while True:
        try:
            frame = await read_frame(reader, limit)
        except FrameTooLarge as large:
            out.append(f"too-large:{large.size}")
            continue
        if frame is None:
            return out
        out.append(frame)


@given(st.lists(payloads, max_size=6))
def test_frames_come_back_as_sent_and_oversized_ones_are_measured(sent: list[bytes]) -> None:
    data = b"".join(b"\x0b" + p + b"\x1c\r" for p in sent)
    expected = [p if len(p) <= 100 else f"too-large:{len(p)}" for p in sent]
    assert asyncio.run(frames(data, 100)) == expected


def test_bytes_before_a_start_block_are_a_framing_error() -> None:
    with pytest.raises(FramingError, match="no-start-block"):
        asyncio.run(frames(b"hello\x1c\r", 100))


def test_a_cut_frame_is_an_incomplete_read() -> None:
    with pytest.raises(asyncio.IncompleteReadError):
        asyncio.run(frames(b"\x0bMSH|^~\\&|DPI", 100))
