"""Small messages and inbound settings for the intake and listener tests (no network, no store)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime

from gateway.settings import InboundSettings, MailboxSettings, SubmissionClientSettings

OUR_DOMAIN = "hopital.test.mssante.fr"
MAILBOX = f"secretariat@{OUR_DOMAIN}"
APP = f"dpi@{OUR_DOMAIN}"
OUTSIDE = "dr.martin@cabinet.test.mssante.fr"
PEER_DOMAIN = "clinique.test.mssante.fr"

_numbers = itertools.count(1)


def message(
    sender: str = APP, to: str = OUTSIDE, *, subject: str = "Bonjour", body: str = "Hello\n", **headers: str
) -> bytes:
    """A plain CRLF message with a fresh Message-ID (pass ``Message_ID`` to fix one)."""
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = to
    mail["Subject"] = subject
    mail["Date"] = format_datetime(datetime(2026, 11, 23, 9, 0, tzinfo=UTC))
    mail["Message-ID"] = headers.pop("Message_ID", f"<t{next(_numbers)}@{OUR_DOMAIN}>")
    for name, value in headers.items():
        mail[name.replace("_", "-")] = value
    mail.set_content(body)
    return mail.as_bytes(policy=mail.policy.clone(linesep="\r\n"))


def inbound_settings(**overrides: object) -> InboundSettings:
    """Our domain with one stored mailbox; keyword arguments replace fields."""
    values: dict[str, object] = {
        "domains": (OUR_DOMAIN,),
        "mailboxes": (MailboxSettings(MAILBOX),),
        "trusted_domains": (PEER_DOMAIN,),
    }
    values.update(overrides)
    return InboundSettings(**values)  # type: ignore[arg-type]


CLIENTS = (SubmissionClientSettings("dpi", senders=(APP,)),)
