"""Reading IMAP responses as aioimaplib hands them over, and writing UID sets and folder names.

The FETCH property test sends a server's bytes through aioimaplib's own client protocol, cut in random
chunks, and checks the bridge reads back every message whole: bodies that look like IMAP responses
included."""

from __future__ import annotations

import asyncio

from aioimaplib import aioimaplib
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.inbound.imap_wire import (
    Fetched,
    chunks,
    envelope_sender,
    mailbox_name,
    parse_fetch,
    parse_search,
    parse_select,
    size_groups,
    uid_set,
)
from tests.support.fake_imap import parse_set

bodies = st.binary(max_size=300) | st.sampled_from(
    [b"", b")\r\n", b"* 3 FETCH (UID 99 BODY[] {5}\r\n", b"A1 OK done\r\n", b"{12}\r\n"]
)
messages = st.lists(st.tuples(st.integers(1, 10**6), bodies), max_size=6, unique_by=lambda m: m[0])


def server_bytes(tag: str, items: list[tuple[int, bytes]], uid_last: list[bool]) -> bytes:
    data = b""
    for number, ((uid, body), last) in enumerate(zip(items, uid_last, strict=True), start=1):
        literal = b"BODY[] {%d}\r\n%s" % (len(body), body)
        fields = (
            b"RFC822.SIZE %d %s UID %d" % (len(body), literal, uid)
            if last
            else (b"UID %d RFC822.SIZE %d %s" % (uid, len(body), literal))
        )
        data += b"* %d FETCH (%s)\r\n" % (number, fields)
        data += b"* %d FETCH (FLAGS (\\Seen))\r\n" % number  # unsolicited: no UID, skipped
    return data + f"{tag} OK Fetch completed (0.001 + 0.000 secs).\r\n".encode()


@settings(max_examples=150, deadline=None)
@given(messages, st.data())
def test_a_fetch_response_cut_anywhere_reads_back_whole(
    items: list[tuple[int, bytes]], data: st.DataObject
) -> None:
    uid_last = data.draw(st.lists(st.booleans(), min_size=len(items), max_size=len(items)))
    loop = asyncio.new_event_loop()
    try:
        protocol = aioimaplib.IMAP4ClientProtocol(loop)
        protocol.state = aioimaplib.SELECTED
        command = aioimaplib.FetchCommand(
            "A1", "1:*", "(UID RFC822.SIZE BODY.PEEK[])", prefix="UID", loop=loop
        )
        protocol.pending_async_commands["FETCH"] = command
        wire = server_bytes("A1", items, uid_last)
        cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=8)))
        for start, end in zip([0, *cuts], [*cuts, len(wire)], strict=True):
            protocol.data_received(wire[start:end])
        assert command.response.result == "OK"
        assert parse_fetch(command.response.lines) == [Fetched(uid, len(body), body) for uid, body in items]
    finally:
        loop.close()


def test_select_gives_uidvalidity_and_uidnext() -> None:
    lines = [
        b"FLAGS (\\Seen)",
        b"OK [UIDVALIDITY 1764000000] UIDs valid",
        b"12 EXISTS",
        b"OK [UIDNEXT 4242] Predicted next UID",
        b"[READ-WRITE] Select completed",
    ]
    mailbox = parse_select(lines)
    assert (mailbox.uidvalidity, mailbox.uidnext) == (1764000000, 4242)


def test_search_with_and_without_the_search_word() -> None:
    assert parse_search([b"5 3 9", b"Search completed"]) == [3, 5, 9]
    assert parse_search([b"SEARCH 7 1", b"Search completed"]) == [1, 7]
    assert parse_search([b"", b"Search completed"]) == []


@given(st.sets(st.integers(1, 5000), max_size=200))
def test_a_uid_set_names_exactly_its_uids(uids: set[int]) -> None:
    text = uid_set(uids)
    assert parse_set(text, 5000) == uids if uids else text == ""
    assert " " not in text


def test_folder_names_in_modified_utf7_quoted_when_needed() -> None:
    assert mailbox_name("INBOX") == "INBOX"
    assert mailbox_name("Envoyés") == "Envoy&AOk-s"  # RFC 3501 §5.1.3
    assert mailbox_name("日本語") == "&ZeVnLIqe-"
    assert mailbox_name("Traités & archivés") == '"Trait&AOk-s &- archiv&AOk-s"'
    assert mailbox_name('a"b') == '"a\\"b"'


def test_the_envelope_sender_is_the_return_path() -> None:
    assert envelope_sender(b"Return-Path: <dr@cabinet.test>\r\nFrom: x\r\n\r\nReturn-Path: <no>\r\n") == (
        "dr@cabinet.test"
    )
    assert envelope_sender(b"Return-Path: <>\r\n\r\nbody") == ""
    assert envelope_sender(b"From: x\r\n\r\nbody") == ""


@given(
    st.lists(st.tuples(st.integers(1, 10**6), st.integers(0, 5000) | st.none()), unique_by=lambda u: u[0]),
    st.integers(1, 20),
    st.integers(1, 20000),
)
def test_fetches_take_every_uid_once_in_order_within_their_bounds(
    uids_sizes: list[tuple[int, int | None]], count: int, limit: int
) -> None:
    uids = sorted(uid for uid, _ in uids_sizes)
    sizes = dict(uids_sizes)
    fetched: list[int] = []
    for chunk in chunks(uids, count):
        assert 1 <= len(chunk) <= count
        for group in size_groups(chunk, sizes, limit):
            assert len(group) == 1 or sum(sizes[u] or 0 for u in group) <= limit
            fetched.extend(group)
    assert fetched == uids
