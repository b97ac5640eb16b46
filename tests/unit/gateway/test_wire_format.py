"""What goes on the wire: DATA dot-stuffing and line ends, and log lines a sysadmin can grep."""

from __future__ import annotations

import json
import logging
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.logsetup import JsonFormatter, LogfmtFormatter, log_event
from gateway.outbound.transports.smtp_client import prepare_content
from mappers.wire import crlf

lines = st.lists(st.text(alphabet=st.sampled_from(".ab \t\r\né"), max_size=12), max_size=12)


def unstuff(data: bytes) -> bytes:
    """What an RFC 5321 server does with the DATA it reads."""
    assert data.endswith(b"\r\n.\r\n") or data == b".\r\n"
    body = data[: -len(b".\r\n")]
    return b"".join(line[1:] if line.startswith(b".") else line for line in body.splitlines(keepends=True))


@given(lines)
def test_dot_stuffing_round_trips_and_never_ends_the_data_early(parts: list[str]) -> None:
    content = "\n".join(parts).encode()
    wire = b"".join(prepare_content(content))
    assert b"\r\n.\r\n" not in wire[:-5] and not wire[:-3].startswith(b".\r\n")
    assert re.search(rb"(?<!\r)\n|\r(?!\n)", wire) is None
    expected = re.sub(rb"\r\n|\r|\n", b"\r\n", content)
    if not expected.endswith(b"\r\n"):
        expected += b"\r\n"
    assert unstuff(wire) == expected


@settings(max_examples=500)
@given(st.lists(st.sampled_from([b"\r\n", b"\r", b"\n", b".", b"..", b"a", b"\r\n.\r\n"]), max_size=30))
def test_dot_stuffing_writes_what_the_line_start_regex_wrote(pieces: list[bytes]) -> None:
    content = b"".join(pieces)
    normalised = re.sub(rb"\r\n|\r|\n", b"\r\n", content)
    if not normalised.endswith(b"\r\n"):
        normalised += b"\r\n"
    assert b"".join(prepare_content(content)) == re.sub(rb"(?m)^\.", b"..", normalised) + b".\r\n"
    # What the relay hands over, known CRLF, is stuffed the same.
    assert prepare_content(crlf(content), crlf=True) == prepare_content(content)


def test_a_message_no_line_of_which_starts_with_a_dot_is_written_as_it_is_not_copied() -> None:
    content = b"Subject: x\r\n\r\n" + b"a line of text.\r\n" * 70_000
    assert prepare_content(content, crlf=True)[0] is content


def record_of(event: str, **fields: object) -> logging.LogRecord:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("gateway.test.wire")
    logger.addHandler(keep := Keep())
    logger.setLevel(logging.INFO)
    try:
        log_event(logger, event, **fields)
    finally:
        logger.removeHandler(keep)
    return records[0]


def test_logfmt_lines_quote_what_needs_it_and_drop_empty_fields() -> None:
    line = LogfmtFormatter().format(
        record_of("deferred", queue_id=12, peer="smtp:op:587", reply='451 4.3.0 "busy"\nnow', code=None)
    )
    assert line.endswith('event=deferred queue_id=12 peer=smtp:op:587 reply="451 4.3.0 \\"busy\\"\\nnow"')
    assert "code=" not in line and "\n" not in line


def test_json_lines_carry_the_same_fields() -> None:
    payload = json.loads(JsonFormatter().format(record_of("sent", queue_id=3, delivery=4)))
    assert payload["event"] == "sent" and payload["queue_id"] == 3 and payload["delivery"] == 4
    assert payload["logger"] == "gateway.test.wire" and payload["level"] == "info"
