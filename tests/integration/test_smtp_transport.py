"""The SMTP transport against a real server: TLS with client certificates, pipelining, SIZE, AUTH,
per-recipient replies and connection reuse."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from gateway.outbound.routing import Destination
from gateway.outbound.transports.base import OutboundMessage, OutboundRecipient, Outcome
from gateway.outbound.transports.smtp import SmtpOptions, SmtpTransport
from gateway.settings import TlsSettings
from gateway.tls import client_context
from tests.support.fake_operator import FakeOperator, FakeOperatorFactory
from tests.support.pki import Pki

SENDER = "app@hopital.test.mssante.fr"


def options(pki: Pki, credentials: tuple[str, str] | None = None, reuse: int = 100) -> SmtpOptions:
    tls = TlsSettings(ca_bundle=pki.ca, client_certificate=pki.client.cert, client_key=pki.client.key)
    return SmtpOptions(
        local_hostname="mssgw.hopital.test.mssante.fr",
        tls_context=client_context(tls),
        connect_timeout=5,
        command_timeout=10,
        connection_idle=30,
        messages_per_connection=reuse,
        connections_per_destination=2,
        credentials=credentials,
    )


async def no_mx(domain: str) -> list[str]:
    raise AssertionError("no MX look-up expected")


def transport(
    operator: FakeOperator, pki: Pki, *, security: str = "starttls", **kwargs: object
) -> SmtpTransport:
    destination = Destination(
        "smtp",
        "127.0.0.1",
        operator.port,
        security,
        authenticate="credentials" in kwargs,  # type: ignore[arg-type]
    )
    return SmtpTransport(destination, options(pki, **kwargs), no_mx)  # type: ignore[arg-type]


def message(
    *recipients: str, content: bytes = b"Subject: t\r\n\r\nhello\r\n.dot line\r\n"
) -> OutboundMessage:
    return OutboundMessage(SENDER, tuple(OutboundRecipient(r) for r in recipients), content)


@pytest.mark.parametrize("pipelining", [True, False])
async def test_each_recipient_gets_the_reply_that_decided_it(
    fake_operator: FakeOperatorFactory, pki: Pki, pipelining: bool
) -> None:
    operator = fake_operator(pipelining=pipelining)
    operator.script(("RCPT", 550, "5.1.1 unknown mailbox", "nobody@x.test"))
    smtp = transport(operator, pki)
    results = await smtp.send(message("a@x.test", "nobody@x.test", "b@x.test"))
    await smtp.close()
    assert [(r.recipient, r.outcome, r.code) for r in results] == [
        ("a@x.test", Outcome.DELIVERED, 250),
        ("nobody@x.test", Outcome.PERMANENT, 550),
        ("b@x.test", Outcome.DELIVERED, 250),
    ]
    (received,) = operator.messages
    assert received.rcpt_tos == ("a@x.test", "b@x.test")
    assert received.content.endswith(b"hello\r\n.dot line\r\n")
    assert received.peer_cn == pki.client_address


@pytest.mark.parametrize("pipelining", [True, False])
async def test_when_every_recipient_is_refused_nothing_is_sent_and_the_session_goes_on(
    fake_operator: FakeOperatorFactory, pki: Pki, pipelining: bool
) -> None:
    operator = fake_operator(pipelining=pipelining)
    operator.script(
        ("RCPT", 550, "5.1.1 unknown mailbox", "nobody@x.test"),
        ("RCPT", 452, "4.2.2 mailbox full", "full@x.test"),
    )
    smtp = transport(operator, pki)
    refused = await smtp.send(message("nobody@x.test", "full@x.test"))
    after = await smtp.send(message("a@x.test"))
    await smtp.close()
    assert [(r.recipient, r.outcome, r.reply) for r in refused] == [
        ("nobody@x.test", Outcome.PERMANENT, "550 5.1.1 unknown mailbox"),
        ("full@x.test", Outcome.TEMPORARY, "452 4.2.2 mailbox full"),
    ]
    assert after[0].outcome is Outcome.DELIVERED
    (received,) = operator.messages
    assert received.rcpt_tos == ("a@x.test",)
    assert operator.connections == 1


@pytest.mark.parametrize("pipelining", [True, False])
async def test_a_refused_sender_or_message_decides_for_every_recipient_still_accepted(
    fake_operator: FakeOperatorFactory, pki: Pki, pipelining: bool
) -> None:
    operator = fake_operator(pipelining=pipelining)
    operator.script(
        ("MAIL", 553, "5.7.1 sender not allowed"),
        ("RCPT", 550, "5.1.1 unknown mailbox", "nobody@x.test"),
        ("DATA", 554, "5.6.0 content refused"),
    )
    smtp = transport(operator, pki)
    sender = await smtp.send(message("a@x.test", "b@x.test"))
    content = await smtp.send(message("a@x.test", "nobody@x.test", "b@x.test"))
    after = await smtp.send(message("c@x.test"))
    await smtp.close()
    assert [(r.recipient, r.outcome, r.code) for r in sender] == [
        ("a@x.test", Outcome.PERMANENT, 553),
        ("b@x.test", Outcome.PERMANENT, 553),
    ]
    assert [(r.recipient, r.outcome, r.reply) for r in content] == [
        ("a@x.test", Outcome.PERMANENT, "554 5.6.0 content refused"),
        ("nobody@x.test", Outcome.PERMANENT, "550 5.1.1 unknown mailbox"),
        ("b@x.test", Outcome.PERMANENT, "554 5.6.0 content refused"),
    ]
    assert after[0].outcome is Outcome.DELIVERED
    assert [m.rcpt_tos for m in operator.messages] == [("c@x.test",)]
    assert operator.connections == 1


async def test_connections_are_reused_between_messages(fake_operator: FakeOperatorFactory, pki: Pki) -> None:
    operator = fake_operator()
    smtp = transport(operator, pki)
    for n in range(5):
        results = await smtp.send(message(f"r{n}@x.test"))
        assert results[0].outcome is Outcome.DELIVERED
    await smtp.close()
    assert len(operator.messages) == 5
    assert operator.connections == 1


async def test_a_large_message_written_in_pieces_arrives_whole(
    fake_operator: FakeOperatorFactory, pki: Pki
) -> None:
    operator = fake_operator()
    smtp = transport(operator, pki)
    # Not a multiple of the piece size, with dot lines on either side of a piece boundary.
    content = b"Subject: t\r\n\r\n" + b"".join(b".line %d\r\n" % n for n in range(100_000))
    results = await smtp.send(message("a@x.test", content=content))
    await smtp.close()
    assert results[0].outcome is Outcome.DELIVERED
    (received,) = operator.messages
    assert received.content.endswith(content[content.index(b"\r\n\r\n") :])


async def test_a_message_larger_than_the_peer_accepts_is_refused_before_sending(
    fake_operator: FakeOperatorFactory, pki: Pki
) -> None:
    operator = fake_operator(size_limit=1000)
    smtp = transport(operator, pki)
    (result,) = await smtp.send(message("a@x.test", content=b"Subject: big\r\n\r\n" + b"x" * 2000))
    await smtp.close()
    assert result.outcome is Outcome.PERMANENT and result.code == 552
    assert "exceeds the size limit of 1000 bytes" in result.reply
    assert operator.transactions == 0


async def test_smtp_auth_happens_only_inside_tls(fake_operator: FakeOperatorFactory, pki: Pki) -> None:
    operator = fake_operator(auth=("bal-app", "s3cret"), auth_required=True)
    good = transport(operator, pki, credentials=("bal-app", "s3cret"))
    assert (await good.send(message("a@x.test")))[0].outcome is Outcome.DELIVERED
    await good.close()
    bad = transport(operator, pki, credentials=("bal-app", "wrong"))
    (result,) = await bad.send(message("a@x.test"))
    await bad.close()
    assert result.outcome is Outcome.TEMPORARY and "AUTH refused: 535" in result.reply
    assert operator.messages[0].auth_login == "bal-app" and len(operator.messages) == 1


async def test_implicit_tls(fake_operator: FakeOperatorFactory, pki: Pki) -> None:
    operator = fake_operator(implicit_tls=True)
    smtp = transport(operator, pki, security="tls")
    assert (await smtp.send(message("a@x.test")))[0].outcome is Outcome.DELIVERED
    await smtp.close()
    assert operator.messages[0].tls_active


async def test_an_idle_connection_closed_by_the_peer_is_replaced(
    fake_operator: FakeOperatorFactory, pki: Pki
) -> None:
    operator = fake_operator()
    operator.script(("DATA", 421, "4.3.2 closing, try again"))
    smtp = transport(operator, pki)
    first = await smtp.send(message("a@x.test"))
    assert first[0].outcome is Outcome.TEMPORARY and first[0].code == 421
    second = await smtp.send(message("b@x.test"))
    await smtp.close()
    assert second[0].outcome is Outcome.DELIVERED
    assert operator.connections == 2


def test_tls_context_never_accepts_less_than_tls_1_2(tmp_path: Path, pki: Pki) -> None:
    context = client_context(TlsSettings(ca_bundle=pki.ca))
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
