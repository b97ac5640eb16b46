"""``CommandReader.read_data`` into a ``Spool``: the end of data found wherever the octets are cut, the
octets after it left for the next command, and a spool that cannot write refusing what follows."""

from __future__ import annotations

import asyncio
import errno
import resource
import signal
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gateway.inbound.smtp_server import CommandReader, _unstuffed
from gateway.inbound.spool import Spool

DATA = b"Subject: x\r\n\r\n..un point\r\nligne\r\n" * 50


async def read(pieces: list[bytes], spool: Spool, size_limit: int = 0) -> tuple[bool, bytes]:
    """What ``read_data`` kept, and what it left in the stream after the dot."""
    reader = CommandReader(limit=1001)

    async def feed() -> None:
        for piece in pieces:
            reader.feed_data(piece)
            await asyncio.sleep(0)
        reader.feed_eof()

    feeding = asyncio.create_task(feed())
    kept = await reader.read_data(spool, size_limit, lambda size: True)
    await feeding
    return kept, await reader.read()


def _unstuffed_by_lines(data: bytes) -> bytes:
    """RFC 5321 § 4.5.2 read literally: each CRLF-ended line loses the dot it starts with."""
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in data.split(b"\r\n"))


_PIECES = st.sampled_from([b"\r\n", b"\r", b"\n", b"a", b".", b"..", b"\r\n.", b"\r\n.\r"])


@settings(max_examples=400, deadline=None)
@given(
    st.lists(_PIECES, max_size=40).map(b"".join),
    st.lists(st.integers(min_value=1, max_value=12), max_size=30),
)
def test_what_is_kept_unstuffs_as_the_lines_say_wherever_the_octets_are_cut(
    body: bytes, cuts: list[int]
) -> None:
    # The reader's one search for CRLF "." tells ``_unstuffed`` whether to search again: it must never
    # say "no dot line" when there is one, wherever a piece of the stream ends.
    data = body + b"\r\n" if body else b""
    assume(not (b"\r\n" + data).count(b"\r\n.\r\n"))  # a line of a lone dot would end the data there
    stream, pieces, start = data + b".\r\nQUIT\r\n", [], 0
    for cut in cuts:
        pieces.append(stream[start : start + cut])
        start += cut
    pieces.append(stream[start:])
    spool = Spool()
    kept, rest = asyncio.run(read(pieces, spool))
    received = asyncio.run(spool.read())
    assert kept and rest == b"QUIT\r\n" and received == data
    assert spool.dot_lines or b"\r\n." not in received
    assert _unstuffed(received, dot_lines=spool.dot_lines) == _unstuffed_by_lines(received)


async def test_data_without_a_stuffed_line_is_not_searched_again(tmp_path: Path) -> None:
    data = b".Subject: x\r\n\r\nsans point.\r\n\r.\n\r\n"  # a dot after CR or LF alone is not stuffing
    for cut in range(1, len(data) + 5):
        wire = data + b".\r\n"
        spool = Spool(directory=tmp_path)
        assert (await read([wire[:cut], wire[cut:]], spool)) == (True, b"")
        assert await spool.read() == data
        assert not spool.dot_lines


@pytest.mark.parametrize("cut", [1, 2, 3, 4, 5, 7, 64])
async def test_the_dot_line_is_found_across_any_cut_and_pipelined_octets_stay(
    tmp_path: Path, cut: int
) -> None:
    wire = DATA + b".\r\nQUIT\r\n"
    spool = Spool(threshold=100, directory=tmp_path)
    kept, rest = await read([wire[i : i + cut] for i in range(0, len(wire), cut)], spool)
    assert kept and spool.spooled
    assert await spool.read() == DATA
    assert rest == b"QUIT\r\n"
    spool.close()
    assert list(tmp_path.iterdir()) == []  # the file never had a name there


async def test_empty_data_and_data_below_the_threshold_stay_in_memory(tmp_path: Path) -> None:
    spool = Spool(threshold=len(DATA), directory=tmp_path)
    assert (await read([DATA + b".\r\n"], spool)) == (True, b"")
    assert not spool.spooled and await spool.read() == DATA
    empty = Spool(directory=tmp_path)
    assert (await read([b".\r\nNOOP\r\n"], empty)) == (True, b"NOOP\r\n")
    assert await empty.read() == b""


async def test_over_the_size_limit_the_data_is_read_to_the_dot_and_dropped(tmp_path: Path) -> None:
    spool = Spool(threshold=100, directory=tmp_path)
    kept, rest = await read(
        [DATA[i : i + 500] for i in range(0, len(DATA), 500)] + [b".\r\nRSET\r\n"], spool, 1000
    )
    assert not kept and rest == b"RSET\r\n"
    spool.close()


async def test_a_spool_that_cannot_write_keeps_nothing_and_says_why(tmp_path: Path) -> None:
    spool = Spool(threshold=100, directory=tmp_path / "gone")
    kept, rest = await read([DATA + b".\r\nQUIT\r\n"], spool)
    assert not kept and rest == b"QUIT\r\n"
    assert isinstance(spool.error, FileNotFoundError)
    assert not spool.write(b"more")


async def test_octets_the_file_cannot_take_are_refused_when_written_not_when_read(tmp_path: Path) -> None:
    """A file size limit stands in for a full disk: the last small write must fail at once, not stay in
    the file's buffer until the read after the dot."""
    spool = Spool(threshold=100, directory=tmp_path)
    previous = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (150, previous[1]))
    try:
        assert spool.write(DATA[:100])
        assert not spool.write(DATA[100:200])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, previous)
        signal.signal(signal.SIGXFSZ, handler)
    assert isinstance(spool.error, OSError) and spool.error.errno == errno.EFBIG
    assert not spool.spooled
