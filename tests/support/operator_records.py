"""What the fake operator saw: the records its tests read, and the scripted replies they give it.

Plain frozen dataclasses built by tests/support/operator_protocol.py inside the operator's thread and
read by tests in theirs; nothing here holds a socket or a lock.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Literal

from cryptography import x509
from cryptography.x509.oid import NameOID

Stage = Literal["MAIL", "RCPT", "DATA"]
ScriptEntry = tuple[Stage, int, str] | tuple[Stage, int, str, str]


@dataclass(frozen=True, slots=True)
class ScriptedReply:
    """One reply the operator gives instead of 250; ``address`` narrows it to one sender/recipient."""

    stage: Stage
    code: int
    text: str
    address: str | None = None

    @property
    def line(self) -> str:
        return f"{self.code} {self.text}"


@dataclass(frozen=True, slots=True)
class PeerTls:
    """What the TLS session showed about the client when a command arrived."""

    active: bool
    version: str | None = None
    cert_der: bytes | None = field(default=None, repr=False)
    subject: str | None = None
    cn: str | None = None
    emails: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """One transaction the operator answered 250 after DATA.

    ``mail_options`` and ``rcpt_options`` keep the client's spelling (aiosmtpd upper-cases its own copy,
    which would spoil ORCPT/ENVID xtext); ``rcpt_options[i]`` belongs to ``rcpt_tos[i]``.
    """

    mail_from: str
    mail_options: tuple[str, ...]
    rcpt_tos: tuple[str, ...]
    rcpt_options: tuple[tuple[str, ...], ...]
    content: bytes = field(repr=False)
    tls: PeerTls
    helo: str | None
    auth_login: str | None
    connection: int

    @property
    def tls_active(self) -> bool:
        return self.tls.active

    @property
    def peer_cn(self) -> str | None:
        return self.tls.cn

    @property
    def peer_subject(self) -> str | None:
        return self.tls.subject

    @property
    def mail_params(self) -> dict[str, str | bool]:
        """MAIL parameters by upper-cased keyword, values as sent (``True`` for a bare keyword)."""
        return smtp_params(self.mail_options)

    def rcpt_params(self, recipient: str) -> dict[str, str | bool]:
        """RCPT parameters given with ``recipient`` (first match, case-insensitive)."""
        for address, options in zip(self.rcpt_tos, self.rcpt_options, strict=True):
            if address.lower() == recipient.lower():
                return smtp_params(options)
        raise KeyError(recipient)

    @property
    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass(frozen=True, slots=True)
class Refusal:
    """A scripted non-250 reply the operator actually gave."""

    stage: Stage
    code: int
    text: str
    mail_from: str | None
    address: str | None
    connection: int


def smtp_params(options: Iterable[str]) -> dict[str, str | bool]:
    """MAIL/RCPT parameters as a mapping: keyword upper-cased, value as sent, ``True`` when bare."""
    result: dict[str, str | bool] = {}
    for option in options:
        keyword, eq, value = option.partition("=")
        result[keyword.upper()] = value if eq else True
    return result


def peer_tls(transport: asyncio.BaseTransport | None) -> PeerTls:
    """Read the client certificate off a session's transport (plain, STARTTLS or implicit TLS)."""
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        return PeerTls(active=False)
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return PeerTls(active=True, version=ssl_object.version())
    cert = x509.load_der_x509_certificate(der)
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        emails = tuple(san.get_values_for_type(x509.RFC822Name))
    except x509.ExtensionNotFound:
        emails = ()
    return PeerTls(
        active=True,
        version=ssl_object.version(),
        cert_der=der,
        subject=cert.subject.rfc4514_string(),
        cn=str(cns[0].value) if cns else None,
        emails=emails,
    )
