"""Every SMTP command a listener session knows answers as aiosmtpd's would, now that the session finds its
commands once per class (``gateway.inbound.smtp_server._members``) instead of once per connection."""

from __future__ import annotations

from pathlib import Path

from gateway.inbound.smtp_server import GatewaySMTP, _Handler, _members
from tests.support.listener import client_tls, open_submission_settings, running
from tests.support.mail import APP, OUTSIDE, message
from tests.support.pki import Pki
from tests.support.smtp_wire import Wire

# The commands with an @syntax line, which HELP lists (EXPN has none).
_HELPED = "AUTH DATA EHLO HELO HELP MAIL NOOP QUIT RCPT RSET STARTTLS VRFY"


def _exchange() -> tuple[tuple[str, bytes, str], ...]:
    """Each command a session knows, in an order that makes a whole transaction (a new message each time),
    and how its reply starts."""
    return (
        ("HELO", b"HELO client.test\r\n", "250 mssgw"),
        ("EHLO", b"EHLO client.test\r\n", "250-mssgw"),
        ("HELP", b"HELP\r\n", f"250 Supported commands: {_HELPED}"),
        ("NOOP", b"NOOP\r\n", "250 OK"),
        ("VRFY", f"VRFY <{OUTSIDE}>\r\n".encode(), "252 "),
        ("EXPN", b"EXPN list\r\n", "502 EXPN not implemented"),
        ("AUTH", b"AUTH PLAIN\r\n", "538 5.7.11"),  # not over TLS
        ("MAIL", f"MAIL FROM:<{APP}>\r\n".encode(), "250 2.1.0"),
        ("RCPT", f"RCPT TO:<{OUTSIDE}>\r\n".encode(), "250 2.1.5"),
        ("DATA", b"DATA\r\n", "354 "),
        ("", message() + b".\r\n", "250 2.0.0 Queued as "),
        ("RSET", b"RSET\r\n", "250 OK"),
        ("STARTTLS", b"STARTTLS\r\n", "220 Ready to start TLS"),
    )


async def test_every_command_of_a_session_answers(tmp_path: Path, pki: Pki) -> None:
    assert {command for command, _, _ in _exchange()} - {""} | {"QUIT"} == {
        command for command, _ in _members(GatewaySMTP, _Handler).commands
    }
    async with running(open_submission_settings(tmp_path, pki), "submission") as gateway:
        for _ in range(2):  # a second connection reuses what the first found
            wire = await Wire.connect(gateway.port)
            for command, line, expected in _exchange():
                answer = await wire.send(line)
                assert answer.startswith(expected), (command, answer)
            await wire.writer.start_tls(client_tls(pki), server_hostname="localhost")
            assert "250-AUTH" in await wire.send(b"EHLO client.test\r\n")
            await wire.close()
            wire = await Wire.connect(gateway.port)
            assert (await wire.send(b"QUIT\r\n")).startswith("221 Bye")
            await wire.close()
        assert len(gateway.messages()) == 2
