"""The local transport: mail for one of our mailboxes, dropped as files and/or forwarded inside the hospital.

Drop folder: ``<queue id>-<recipient hash>.documents/`` (what ``mappers.drop_files`` extracts: METADATA.XML,
each document, the PDF of a CDA, the attachments; built under a temporary name and renamed whole) and then
``<same>.eml`` (atomic write), so software that watches for ``.eml`` files only ever sees complete ones with
their documents beside them; a retry rewrites the same names. Forwarding: SMTP or LMTP (one recipient per
transaction, so one reply) to the internal MTA, with STARTTLS when offered (certificate checked against the
system CAs). Blocking work runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import smtplib
import ssl
from pathlib import Path

from gateway.file_modes import SHARED_DIR, make_dirs
from gateway.outbound.routing import Destination
from gateway.outbound.transports.base import (
    OutboundMessage,
    Outcome,
    RecipientResult,
    all_recipients,
    unsendable,
)
from gateway.outbound.transports.folder import sync_directory, write_atomically
from mappers.drop_files import drop_files
from mappers.errors import MappingError
from mappers.mime import parse_message


class LocalTransport:
    """Delivers to one mailbox's drop folder and/or internal MTA."""

    def __init__(self, destination: Destination, local_hostname: str, timeout: float) -> None:
        self.destination = destination
        self.local_hostname = local_hostname
        self.timeout = timeout

    async def send(self, message: OutboundMessage) -> list[RecipientResult]:
        destination = self.destination
        if destination.path is None and not destination.host:
            # routing.UNROUTABLE: a report's mailbox or client stopped delivering since it was queued.
            reply = "4.3.5 no way back to the sender is configured any more (mailbox or return_host)"
            return all_recipients(message, Outcome.TEMPORARY, reply)
        if destination.path is not None:
            try:
                name = await asyncio.to_thread(self._drop, message, destination.path)
            except OSError as error:
                return all_recipients(
                    message, Outcome.TEMPORARY, f"cannot write into {destination.path}: {error}"
                )
            if not destination.host:
                return all_recipients(
                    message, Outcome.DELIVERED, f"written as {name}", peer=f"folder:{destination.path}"
                )
        refused = unsendable(message)
        return refused if refused is not None else await asyncio.to_thread(self._forward, message)

    def _drop(self, message: OutboundMessage, folder: Path) -> str:
        recipients = ",".join(r.address.lower() for r in message.recipients)
        stem = f"{message.queue_id or 0:010d}-{hashlib.sha256(recipients.encode()).hexdigest()[:12]}"
        files = _extracted(message.content)
        if files:
            make_dirs(folder, SHARED_DIR)
            building, final = folder / f".tmp-{stem}.documents", folder / f"{stem}.documents"
            for stale in (building, final):
                if stale.exists():
                    shutil.rmtree(stale)  # an earlier attempt's, whose .eml may never have been written
            make_dirs(building, SHARED_DIR)
            for filename, content in files.items():
                write_atomically(building, filename, content)
            os.replace(building, final)
            sync_directory(folder)
        write_atomically(folder, f"{stem}.eml", message.content)
        return f"{stem}.eml"

    def _forward(self, message: OutboundMessage) -> list[RecipientResult]:
        # One transaction per recipient: LMTP answers DATA once per recipient, and smtplib reads one reply.
        return [self._forward_one(message, recipient.address) for recipient in message.recipients]

    def _forward_one(self, message: OutboundMessage, recipient: str) -> RecipientResult:
        destination = self.destination
        peer = f"{destination.host}:{destination.port}"
        client_class = smtplib.LMTP if destination.lmtp else smtplib.SMTP
        try:
            with client_class(
                destination.host, destination.port, self.local_hostname, timeout=self.timeout
            ) as client:
                client.ehlo_or_helo_if_needed()
                if client.has_extn("starttls"):
                    client.starttls(context=ssl.create_default_context())
                client.sendmail(message.envelope_from, [recipient], message.content)
        except smtplib.SMTPRecipientsRefused as error:
            code, text = error.recipients[recipient]
            return _refused(recipient, code, _text(text), peer)
        except smtplib.SMTPResponseException as error:
            return _refused(recipient, error.smtp_code, _text(error.smtp_error), peer)
        except (OSError, smtplib.SMTPException) as error:
            return RecipientResult(
                recipient, Outcome.TEMPORARY, f"cannot forward to {peer}: {error}", None, peer
            )
        return RecipientResult(recipient, Outcome.DELIVERED, "250 forwarded", 250, peer)

    async def close(self) -> None:
        """Nothing is held open between messages."""


def _refused(recipient: str, code: int, text: str, peer: str) -> RecipientResult:
    outcome = Outcome.PERMANENT if code >= 500 else Outcome.TEMPORARY
    return RecipientResult(recipient, outcome, f"{code} {text}", code, peer)


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply


def _extracted(content: bytes) -> dict[str, bytes]:
    """The files of ``mappers.drop_files`` for the message (none when it cannot be read)."""
    try:
        record = parse_message(content)
    except MappingError:
        return {}
    return drop_files(record)
