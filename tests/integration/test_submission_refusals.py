"""Content refusals on the submission listener reach the client as the permanent reply they are.

Their sentences come from the patient rules and the submission instructions, which may hold French letters
or an ellipsis; the listener must still send them (as ASCII), never fail to encode them into a ``451``.
"""

from __future__ import annotations

import dataclasses
import email
import email.policy
import smtplib
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

from gateway.trust import TrustList
from tests.support.listener import open_submission_settings, running, smtp
from tests.support.mail import APP, OUR_DOMAIN, OUTSIDE, message
from tests.support.pki import Pki

PATIENT = "279035121518989@patient.mssante.fr"
PATIENT_FIELD = (
    "matricule=279035121518989; birth-name=DUPONT; given-name=Hélène; birth-date=1979-03-05; sex=F"
)


def settings(tmp_path: Path, pki: Pki, patient_max_size: int = 25 * 1024 * 1024):  # type: ignore[no-untyped-def]
    """Client "lab" submits from 127.0.0.1 without TLS or AUTH."""
    return open_submission_settings(tmp_path, pki, {"channels": {"patient_max_size": patient_max_size}})


def data_reply(port: int, recipient: str, raw: bytes):  # type: ignore[no-untyped-def]
    def session(client: smtplib.SMTP) -> str:
        client.ehlo()
        client.mail(APP)
        client.rcpt(recipient)
        code, text = client.data(raw)
        return f"{code} {text.decode('ascii')}"

    return smtp(port, session)


def with_pdf(raw: bytes) -> bytes:
    mail = email.message_from_bytes(raw, _class=EmailMessage, policy=email.policy.default)
    assert isinstance(mail, EmailMessage)
    mail.add_attachment(b"%PDF-1.4 compte rendu\n", maintype="application", subtype="pdf", filename="cr.pdf")
    return mail.as_bytes(policy=email.policy.SMTP)


async def test_a_package_without_document_type_gets_a_permanent_ascii_refusal(
    tmp_path: Path, pki: Pki
) -> None:
    async with running(settings(tmp_path, pki), "submission") as gateway:
        raw = with_pdf(message(X_MSSGW_Patient=PATIENT_FIELD))
        answer = await data_reply(gateway.port, OUTSIDE, raw)
        assert answer.startswith("554 5.6.0 Submission instruction refused: X-MSSGW-Document-Type"), answer
        assert gateway.messages() == []


async def test_a_message_over_the_patient_limit_gets_552_naming_mon_espace_sante(
    tmp_path: Path, pki: Pki
) -> None:
    # The same refusal as for a 27 MB message under the 25 MB default, with a limit small enough to send
    # quickly on a shared test machine.
    async with running(settings(tmp_path, pki, patient_max_size=2000), "submission", citizen=True) as gateway:
        raw = message(to=PATIENT, body="x" * 3000 + "\n", X_MSSGW_Patient=PATIENT_FIELD)
        answer = await data_reply(gateway.port, PATIENT, raw)
        assert answer.startswith("552 5.3.4 message of "), answer
        assert "(Mon Espace Sante limit, channels.patient_max_size)" in answer
        assert gateway.messages() == []


def rcpt_replies(port: int, recipients: list[str]):  # type: ignore[no-untyped-def]
    """The reply to each ``RCPT TO:`` argument (written as is, angle brackets included)."""

    def session(client: smtplib.SMTP) -> dict[str, str]:
        client.ehlo()
        client.mail(APP)
        answers = {}
        for recipient in recipients:
            code, text = client.docmd("RCPT TO:" + recipient)
            answers[recipient] = f"{code} {text.decode('ascii')}"
        return answers

    return smtp(port, session)


async def test_client_mode_refuses_recipients_off_the_trust_list_and_routed_addresses(
    tmp_path: Path, pki: Pki
) -> None:
    client_mode = settings(tmp_path, pki)
    client_mode = dataclasses.replace(
        client_mode, gateway=dataclasses.replace(client_mode.gateway, mode="client")
    )
    official = TrustList(frozenset({OUTSIDE.rpartition("@")[2]}), datetime.now(UTC))
    routed = "553 5.1.3 <{}>: routing inside an address (%, source route, quoted @) is not accepted: "
    async with running(client_mode, "submission", official=official) as gateway:
        answers = await rcpt_replies(
            gateway.port,
            [
                f"<{OUTSIDE}>",
                f"<{PATIENT}>",
                "<victim@gmail.com>",
                f"<victim%gmail.com@{OUR_DOMAIN}>",
                "<@relay.example:victim@gmail.com>",
                f'<"victim@gmail.com"@{OUR_DOMAIN}>',
            ],
        )
    assert answers[f"<{OUTSIDE}>"].startswith("250")
    assert answers[f"<{PATIENT}>"].startswith("250")
    assert answers["<victim@gmail.com>"] == (
        "550 5.7.1 Recipient domain gmail.com is not on the MSSante trust list: "
        "this gateway only sends to MSSante"
    )
    assert answers[f"<victim%gmail.com@{OUR_DOMAIN}>"].startswith(
        routed.format(f"victim%gmail.com@{OUR_DOMAIN}")
    )
    assert answers["<@relay.example:victim@gmail.com>"].startswith(
        routed.format("@relay.example:victim@gmail.com")
    )
    assert answers[f'<"victim@gmail.com"@{OUR_DOMAIN}>'].startswith("553 5.1.3")


async def test_without_a_loaded_trust_list_outside_domains_are_left_to_the_operator(
    tmp_path: Path, pki: Pki
) -> None:
    async with running(settings(tmp_path, pki), "submission", official=TrustList()) as gateway:
        answers = await rcpt_replies(gateway.port, ["<victim@gmail.com>"])
    assert answers["<victim@gmail.com>"].startswith("250")
