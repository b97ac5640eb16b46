"""Every line ``mssgw run`` writes parses, as logfmt and as JSON (``logging.format``): the daemon is driven
through start, an authenticated submission, a refused recipient, a failing next hop, ``mssgw send`` and a
stop, and each stderr line is read back as a log shipper would. Events are names, never ``key=value`` text."""

from __future__ import annotations

import json
import re
import smtplib
import ssl
from pathlib import Path

import pytest

from tests.support.gateway import SENDER, Gateway, gateway_for
from tests.support.mail import message
from tests.support.pki import Pki
from tests.support.submission import PASSWORD, add_submission

RECIPIENT = "dr.martin@cabinet.test.mssante.fr"
_PAIR = re.compile(r'([A-Za-z_][A-Za-z0-9_.-]*)=("(?:[^"\\]|\\.)*"|[^\s"=]*)(?: |$)')
_EVENT = re.compile(r"[a-z][a-z0-9-]*")


def parse_logfmt(line: str) -> dict[str, str]:
    """A strict logfmt reader: the whole line is ``key=value`` pairs separated by single spaces."""
    fields: dict[str, str] = {}
    position = 0
    while position < len(line):
        match = _PAIR.match(line, position)
        assert match is not None, f"not logfmt at {position}: {line!r}"
        value = match.group(2)
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        fields[match.group(1)] = value
        position = match.end()
    return fields


def parse(log_format: str, line: str) -> dict[str, object]:
    if log_format == "json":
        record = json.loads(line)
        assert isinstance(record, dict), line
        return record
    return dict(parse_logfmt(line))


@pytest.mark.parametrize("log_format", ["logfmt", "json"])
def test_every_line_of_a_busy_run_parses(
    tmp_path: Path, pki: Pki, gateways: list[Gateway], log_format: str
) -> None:
    gateway = gateway_for(tmp_path / "gw", pki, None)  # the smarthost's port is closed: connect-failed
    gateway.sections["logging"] = {"format": log_format, "level": "debug"}
    add_submission(gateway, pki, tmp_path)
    gateways.append(gateway)
    gateway.start()
    gateway.wait_for_output("listening")
    [port] = [
        str(record["address"]).rpartition(":")[2]
        for line in gateway.output().splitlines()
        if (record := parse(log_format, line)).get("event") == "listening"
    ]
    with smtplib.SMTP("127.0.0.1", int(port), timeout=10) as client:
        client.starttls(context=ssl.create_default_context(cafile=str(pki.ca)))
        client.login("dpi", PASSWORD)
        client.mail(SENDER)
        assert client.rcpt("someone%elsewhere.test@hopital.test.mssante.fr")[0] == 553
        assert client.rcpt(RECIPIENT)[0] == 250
        assert client.data(message(sender=SENDER, to=RECIPIENT))[0] == 250
    gateway.send("--from", SENDER, "--to", RECIPIENT, "--subject", "CR")
    gateway.wait_for_output("connect-failed", count=2)
    assert gateway.stop() == 0

    lines = gateway.output().splitlines()
    records = [parse(log_format, line) for line in lines]
    for line, record in zip(lines, records, strict=True):
        assert {"ts", "level", "logger", "event"} <= set(record), line
        if str(record["logger"]).startswith("gateway"):
            assert _EVENT.fullmatch(str(record["event"])), line
    events = {str(r["event"]) for r in records}
    assert {"listening", "auth", "rcpt-refused", "accepted", "connect-failed"} <= events, events
    # Client mode: the trust list is not needed to send, so its absence is no warning; and aiosmtpd's
    # deprecation notice on AUTH is gone.
    assert [r["level"] for r in records if r["event"] == "trust-list-missing"] == ["info"]
    expected = ("connect-failed", "deferred")  # the closed smarthost
    assert not [r for r in records if r["level"] in ("warning", "error") and r["event"] not in expected]
