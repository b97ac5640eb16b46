"""The operator-mode port-25 listener over real sockets: only trusted operators, only our mailboxes."""

from __future__ import annotations

import smtplib
import ssl
from pathlib import Path

import dns.exception
import pytest

from gateway import metrics
from tests.support.dkim import DOMAIN, make_dkim_key
from tests.support.listener import client_tls, listener_settings, running, smtp
from tests.support.mail import MAILBOX, OUR_DOMAIN, PEER_DOMAIN, message
from tests.support.pki import Pki

PEER = f"dr.durand@{PEER_DOMAIN}"


def counted(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def operator_session(pki: Pki, sender: str, recipients: list[str], raw: bytes, *, certificate: bool = True):  # type: ignore[no-untyped-def]
    def session(client: smtplib.SMTP) -> dict[str, str]:
        client.starttls(context=client_tls(pki, certificate=certificate))
        client.ehlo()
        answers: dict[str, str] = {}
        code, text = client.mail(sender)
        answers["MAIL"] = f"{code} {text.decode()}"
        if code != 250:
            return answers
        for recipient in recipients:
            code, text = client.rcpt(recipient)
            answers[recipient] = f"{code} {text.decode()}"
        if any(answers[r].startswith("250") for r in recipients):
            code, text = client.data(raw)
            answers["DATA"] = f"{code} {text.decode()}"
        return answers

    return session


async def test_a_trusted_peer_message_to_our_mailbox_is_stored_once_even_sent_twice(
    tmp_path: Path, pki: Pki
) -> None:
    settings = listener_settings(tmp_path, pki, "operator")
    raw = message(sender=PEER, to=MAILBOX)
    accepted_before = counted("mssgw_messages_accepted_total", listener="operator")
    async with running(settings, "operator") as gateway:
        first = await smtp(gateway.port, operator_session(pki, PEER, [MAILBOX], raw))
        second = await smtp(gateway.port, operator_session(pki, PEER, [MAILBOX], raw))
        assert counted("mssgw_messages_accepted_total", listener="operator") == accepted_before + 1
        assert first["DATA"].startswith("250 2.0.0 Queued as")
        assert second["DATA"].startswith("250 2.0.0 Already queued as")
        stored = gateway.messages()
        assert [m[1] for m in stored] == ["inbound"]
        assert stored[0][2].startswith(
            b"Authentication-Results: mssgw.hopital.test.mssante.fr; dkim=none\r\n"
        )


async def test_a_peer_without_a_client_certificate_is_refused(tmp_path: Path, pki: Pki) -> None:
    async with running(listener_settings(tmp_path, pki, "operator"), "operator") as gateway:
        answers = await smtp(gateway.port, operator_session(pki, PEER, [MAILBOX], b"", certificate=False))
        assert answers["MAIL"].startswith("530 5.7.0 Client certificate required")


async def test_a_certificate_from_an_unknown_ca_fails_the_tls_handshake(tmp_path: Path, pki: Pki) -> None:
    async with running(listener_settings(tmp_path, pki, "operator"), "operator") as gateway:

        def session(client: smtplib.SMTP) -> None:
            client.starttls(context=client_tls(pki, certificate=True, untrusted=True))
            client.ehlo()  # TLS 1.3 reports the refused certificate at the first read

        with pytest.raises((ssl.SSLError, smtplib.SMTPServerDisconnected, ConnectionResetError)):
            await smtp(gateway.port, session)
        assert gateway.messages() == []


async def test_a_sender_domain_not_on_the_trust_list_is_refused(tmp_path: Path, pki: Pki) -> None:
    async with running(listener_settings(tmp_path, pki, "operator"), "operator") as gateway:
        answers = await smtp(gateway.port, operator_session(pki, "x@unlisted.test", [MAILBOX], b""))
        assert answers["MAIL"] == (
            "550 5.7.1 Sender domain unlisted.test is not on the MSSante trust list: "
            "mail from it is not accepted here"
        )


async def test_mail_before_starttls_is_refused(tmp_path: Path, pki: Pki) -> None:
    async with running(listener_settings(tmp_path, pki, "operator"), "operator") as gateway:

        def session(client: smtplib.SMTP) -> tuple[str, bool]:
            client.ehlo()
            code, text = client.mail(PEER)
            return f"{code} {text.decode()}", client.has_extn("auth")

        answer, auth_offered = await smtp(gateway.port, session)
        assert answer.startswith("530 5.7.0 Must issue a STARTTLS command first")
        assert not auth_offered


RELAY_TRICKS = [
    "someone@outside.test",
    "someone@OUTSIDE.TEST",
    f"someone%outside.test@{OUR_DOMAIN}",
    f"<@{OUR_DOMAIN}:someone@outside.test>",
    f'"someone@outside.test"@{OUR_DOMAIN}',
    f"someone@outside.test@{OUR_DOMAIN}",
    f"someone@{OUR_DOMAIN}.outside.test",
    "someone@[192.0.2.1]",
    f"{OUR_DOMAIN}!someone",
]


async def test_no_relay_trick_gets_a_250(tmp_path: Path, pki: Pki) -> None:
    async with running(listener_settings(tmp_path, pki, "operator"), "operator") as gateway:

        def session(client: smtplib.SMTP) -> dict[str, str]:
            client.starttls(context=client_tls(pki, certificate=True))
            client.ehlo()
            client.mail(PEER)
            answers = {}
            for trick in RELAY_TRICKS:
                address = trick if trick.startswith("<") else f"<{trick}>"
                code, text = client.docmd("RCPT", f"TO:{address}")
                answers[trick] = f"{code} {text.decode()}"
            return answers

        refused_before = counted("mssgw_messages_refused_total", listener="operator", reason="5.7.1")
        answers = await smtp(gateway.port, session)
        assert not [t for t, a in answers.items() if a.startswith("2")], answers
        refused = (
            counted("mssgw_messages_refused_total", listener="operator", reason="5.7.1") - refused_before
        )
        assert refused == sum(a.startswith("554 5.7.1") for a in answers.values())
        assert answers["someone@outside.test"].startswith("554 5.7.1 <someone@outside.test>: relaying denied")
        assert answers["someone@OUTSIDE.TEST"].startswith("554 5.7.1")
        assert answers[f"someone%outside.test@{OUR_DOMAIN}"].startswith("553 5.1.3")
        assert gateway.messages() == []


async def test_unknown_mailbox_550_and_outside_554_in_one_transaction(tmp_path: Path, pki: Pki) -> None:
    async with running(listener_settings(tmp_path, pki, "operator"), "operator") as gateway:
        unknown, outside = f"nobody@{OUR_DOMAIN}", "x@outside.test"
        raw = message(sender=PEER, to=MAILBOX)
        answers = await smtp(gateway.port, operator_session(pki, PEER, [unknown, outside, MAILBOX], raw))
        assert answers[unknown] == f"550 5.1.1 <{unknown}>: no such mailbox here"
        assert answers[outside].startswith("554 5.7.1")
        assert answers["DATA"].startswith("250")
        assert len(gateway.messages()) == 1 and gateway.deliveries() == []


@pytest.mark.parametrize("policy", ["record", "refuse"])
async def test_dkim_is_verified_and_recorded(tmp_path: Path, pki: Pki, policy: str) -> None:
    key = make_dkim_key(tmp_path / "dkim", "rsa")
    sender = f"dr@{DOMAIN}"
    settings = listener_settings(
        tmp_path, pki, "operator", inbound={"trusted_domains": [DOMAIN], "dkim_policy": policy}
    )
    good = key.sign(message(sender=sender, to=MAILBOX))
    tampered = good.replace(b"Hello", b"Hullo")
    async with running(settings, "operator", dnsfunc=key.dnsfunc) as gateway:
        passed = await smtp(gateway.port, operator_session(pki, sender, [MAILBOX], good))
        failed = await smtp(gateway.port, operator_session(pki, sender, [MAILBOX], tampered))
        assert passed["DATA"].startswith("250")
        stored = gateway.messages()
        assert stored[0][2].startswith(
            f"Authentication-Results: mssgw.hopital.test.mssante.fr; dkim=pass header.d={DOMAIN} "
            f"header.s={key.selector}\r\n".encode()
        )
        if policy == "refuse":
            assert failed["DATA"].startswith("550 5.7.20 DKIM verification failed")
            assert len(stored) == 1
        else:
            assert failed["DATA"].startswith("250")
            assert b"dkim=fail" in stored[1][2]


@pytest.mark.parametrize("policy", ["record", "refuse"])
async def test_a_dns_timeout_on_the_dkim_key_is_a_temporary_error(
    tmp_path: Path, pki: Pki, policy: str
) -> None:
    key = make_dkim_key(tmp_path / "dkim", "rsa")
    sender = f"dr@{DOMAIN}"
    settings = listener_settings(
        tmp_path, pki, "operator", inbound={"trusted_domains": [DOMAIN], "dkim_policy": policy}
    )

    def timing_out(name: bytes, timeout: float = 5) -> bytes | None:
        raise dns.exception.Timeout(timeout=timeout)

    async with running(settings, "operator", dnsfunc=timing_out) as gateway:
        signed = key.sign(message(sender=sender, to=MAILBOX))
        answers = await smtp(gateway.port, operator_session(pki, sender, [MAILBOX], signed))
        if policy == "refuse":
            assert answers["DATA"] == (
                f"451 4.7.5 DKIM key of d={DOMAIN} could not be fetched (DNS timeout): please try again later"
            )
            assert gateway.messages() == []
        else:
            assert answers["DATA"].startswith("250")
            [(_, _, stored)] = gateway.messages()
            assert stored.startswith(
                f"Authentication-Results: mssgw.hopital.test.mssante.fr; dkim=temperror header.d={DOMAIN} "
                f"header.s={key.selector}\r\n".encode()
            )


async def test_results_under_our_name_and_submission_instructions_from_outside_are_removed(
    tmp_path: Path, pki: Pki
) -> None:
    ours = "Authentication-Results: MSSGW.hopital.test.mssante.fr;\r\n dkim=pass header.d=forged.test"
    theirs = f"Authentication-Results: mx.{PEER_DOMAIN}; dkim=pass header.d={PEER_DOMAIN}"
    instruction = "X-MSSGW-Patient: matricule=279035121518989;\r\n birth-name=DUPONT"
    raw = f"{ours}\r\n{theirs}\r\n{instruction}\r\n".encode() + message(sender=PEER, to=MAILBOX)
    async with running(listener_settings(tmp_path, pki, "operator"), "operator") as gateway:
        answers = await smtp(gateway.port, operator_session(pki, PEER, [MAILBOX], raw))
        assert answers["DATA"].startswith("250")
        [(_, _, stored)] = gateway.messages()
    head = stored.partition(b"\r\n\r\n")[0].decode()
    assert head.startswith("Authentication-Results: mssgw.hopital.test.mssante.fr; dkim=none\r\n")
    assert "forged.test" not in head and "X-MSSGW" not in head and "DUPONT" not in head
    assert f"{theirs}\r\n" in head
