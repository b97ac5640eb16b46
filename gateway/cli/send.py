"""``mssgw send``: put a message into the store for delivery, as an internal application would.

It builds the message with the mappers, hands it to intake (the same door as the SMTP listeners, so the same
policy), prints the queue id and wakes the running daemon. Bad input is refused before anything is stored,
with the field named.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import mimetypes
import sys
from pathlib import Path

from gateway import trust, wake
from gateway.channels.steps import citizen_intake
from gateway.cli.clinical import (
    PATIENT_HELP,
    add_document_options,
    content_type_from_args,
    document_time,
    documents_from_args,
    load_patient,
    missing_xds_codes,
    read_input,
)
from gateway.cli.common import add_config_option, load_settings, now, open_store_of
from gateway.errors import InputError, StoreError
from gateway.inbound.intake import Arrival, Decision, Recipient
from mappers import headers, patient_match
from mappers.addresses import check_address
from mappers.documents import Document, HeaderDefaults
from mappers.errors import MappingError
from mappers.mime import build_message
from mappers.records import Attachment, Mailbox, MessageRecord
from mappers.trustlist import TrustListError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("send", help="queue a message for delivery and print its queue id")
    add_config_option(parser)
    parser.add_argument("--from", dest="sender", required=True, metavar="ADDR", help="From address")
    parser.add_argument("--from-name", default="", help="From display name (Titre_Prénom_NOM_Entité)")
    parser.add_argument("--to", action="append", required=True, metavar="ADDR", help="recipient (repeat)")
    parser.add_argument("--subject", required=True)
    parser.add_argument("--body-file", type=Path, help="UTF-8 text body (default: empty)")
    parser.add_argument("--attach", type=Path, action="append", default=[], metavar="FILE")
    parser.add_argument("--patient", type=Path, metavar="FILE.json", help=PATIENT_HELP)
    parser.add_argument(
        "--reply-to", metavar="ADDR", help="Reply-To: where the recipient (a patient) answers"
    )
    parser.add_argument(
        "--read-receipt", action="store_true", help="ask for a read receipt (Disposition-Notification-To)"
    )
    add_document_options(parser, required=False)
    parser.set_defaults(handler=_send)


def _send(args: argparse.Namespace) -> int:
    settings = load_settings(args, check_required=True)
    defaults = settings.documents.header_defaults()
    record = _record_from(args, defaults)
    moment = now()
    content_type = content_type_from_args(args, defaults)
    try:
        message = build_message(
            record,
            nil_reference=settings.gateway.nil_reference,
            hostname=settings.gateway.hostname,
            now=moment,
            content_type=content_type,
        )
    except MappingError as error:
        raise InputError("message", str(error)) from error
    arrival = Arrival(
        raw=message.as_bytes(),
        envelope_from=record.author.address,
        recipients=tuple(Recipient(m.address) for m in record.to),
        source="cli",
        # A message without documents does not carry its patient: the patient rules get it from here.
        patient=record.patient,
    )
    store = open_store_of(settings)
    try:
        # The saved trust list tells the directory check which recipients are MSSanté ones.
        try:
            mssante: trust.TrustList | None = trust.load_saved(trust.saved_path(settings))
        except TrustListError:
            mssante = None
        intake, _ = citizen_intake(settings, store, lambda: moment, mssante=mssante)
        result = asyncio.run(intake.receive(arrival))
    finally:
        store.close()
    refused = [v for v in result.verdicts if v.decision is not Decision.ACCEPTED]
    if result.message_pk is None or refused:
        reasons = "; ".join(v.reply for v in refused)
        if any(v.decision is Decision.TEMPORARY for v in refused):
            raise StoreError(reasons)
        raise InputError("--to", reasons)
    stored_pk = result.message_pk
    wake.ping(settings.gateway.state_dir)
    notices = _notices(record, str(message["Subject"]))
    notices += missing_xds_codes(record.documents, content_type, with_settings=True)
    for notice in notices:
        print(f"mssgw: note: {notice}", file=sys.stderr)
    print(stored_pk)
    return 0


def _record_from(args: argparse.Namespace, defaults: HeaderDefaults) -> MessageRecord:
    sender = _address(args.sender, "--from")
    recipients = tuple(Mailbox(_address(a, "--to")) for a in args.to)
    body = _body(args.body_file) if args.body_file else ""
    attachments = tuple(_attachment(path) for path in args.attach)
    patient = load_patient(args.patient) if args.patient else None
    documents: list[Document] = []
    if args.docs:
        patient, documents = documents_from_args(args, patient, document_time(args.date), defaults)
    author = Mailbox(sender, args.from_name)
    record = MessageRecord(
        author=author,
        to=recipients,
        subject=args.subject,
        body=body,
        attachments=attachments,
        patient=patient,
        documents=tuple(documents),
        reply_to=Mailbox(_address(args.reply_to, "--reply-to")) if args.reply_to else None,
        disposition_notification_to=author if args.read_receipt else None,
        # [FIN] in the subject closes the exchange: X-MSS-MES: FIN tells Mon Espace Santé too.
        end_of_exchange=headers.subject_closes_exchange(args.subject),
    )
    try:
        # Attached CDAs and packages must name the same patient too; without any declared, theirs.
        settled = patient_match.settle_patient(record, patient, "the patient file")
    except MappingError as error:
        raise InputError("--attach", str(error)) from error
    return dataclasses.replace(record, patient=settled)


def _notices(record: MessageRecord, subject: str) -> list[str]:
    """What the sender should know although the message goes: choices made for them, advice the ANS gives."""
    notices = []
    if subject != record.subject.strip():
        notices.append(f"--subject replaced by the document subject {subject!r} (ECO.2.1.3)")
    if not record.author.display_name:
        notices.append(
            "--from has no display name: MSSanté asks for one that says who writes, "
            "e.g. --from-name 'Dr Jean MARTIN - Cardiologie CH Exemple' (ECO.2.2.7)"
        )
    return notices


def _address(value: str, field: str) -> str:
    try:
        return check_address(value.strip(), field=field)
    except MappingError as error:
        raise InputError(field, str(error).removeprefix(f"{field}: ")) from error


def _body(path: Path) -> str:
    try:
        return read_input(path, "body").decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputError(str(path), "the body is not UTF-8 text") from error


def _attachment(path: Path) -> Attachment:
    content = read_input(path, "attachment")
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return Attachment(path.name, content_type, content)
