"""``mssgw send``: put a message into the store for delivery, as an internal application would.

It builds the message with the mappers, commits it with one delivery per recipient, prints the queue id and
wakes the running daemon. Bad input is refused before anything is stored, with the field named.
"""

from __future__ import annotations

import argparse
import json
import mimetypes
from datetime import date
from pathlib import Path

from gateway import wake
from gateway.cli.common import add_config_option, load_settings, now, open_store_of
from gateway.errors import InputError
from gateway.store.repository import AttachmentInfo, NewMessage, Recipient
from mappers import ins
from mappers.addresses import check_address
from mappers.errors import MappingError
from mappers.mime import build_message
from mappers.patient import Patient, Sex
from mappers.records import Attachment, Mailbox, MessageRecord

_PATIENT_FIELDS = ("matricule", "oid", "birth_name", "given_name", "birth_date", "sex")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("send", help="queue a message for delivery and print its queue id")
    add_config_option(parser)
    parser.add_argument("--from", dest="sender", required=True, metavar="ADDR", help="From address")
    parser.add_argument("--from-name", default="", help="From display name (Titre_Prénom_NOM_Entité)")
    parser.add_argument("--to", action="append", required=True, metavar="ADDR", help="recipient (repeat)")
    parser.add_argument("--subject", required=True)
    parser.add_argument("--body-file", type=Path, help="UTF-8 text body (default: empty)")
    parser.add_argument("--attach", type=Path, action="append", default=[], metavar="FILE")
    parser.add_argument(
        "--patient",
        type=Path,
        metavar="FILE.json",
        help=f"the patient the message is about: JSON with {', '.join(_PATIENT_FIELDS)}",
    )
    parser.set_defaults(handler=_send)


def _send(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    record = _record_from(args)
    moment = now()
    try:
        message = build_message(
            record,
            nil_reference=settings.gateway.nil_reference,
            hostname=settings.gateway.hostname,
            now=moment,
        )
    except MappingError as error:
        raise InputError("message", str(error)) from error
    new = NewMessage(
        raw=message.as_bytes(),
        envelope_from=record.author.address,
        direction="outbound",
        source="cli",
        recipients=tuple(Recipient(m.address) for m in record.to),
        message_id=str(message["Message-ID"]),
        patient=record.patient,
        attachments=tuple(AttachmentInfo(a.filename, a.content_type, a.content) for a in record.attachments),
    )
    store = open_store_of(settings)
    try:
        stored = store.repository.add_messages([new], moment)[0]
    finally:
        store.close()
    wake.ping(settings.gateway.state_dir)
    print(stored.pk)
    return 0


def _record_from(args: argparse.Namespace) -> MessageRecord:
    sender = _address(args.sender, "--from")
    recipients = tuple(Mailbox(_address(a, "--to")) for a in args.to)
    body = _read_text(args.body_file, "--body-file") if args.body_file else ""
    attachments = tuple(_attachment(path) for path in args.attach)
    patient = _patient(args.patient) if args.patient else None
    return MessageRecord(
        author=Mailbox(sender, args.from_name),
        to=recipients,
        subject=args.subject,
        body_text=body,
        attachments=attachments,
        patient=patient,
    )


def _address(value: str, field: str) -> str:
    try:
        return check_address(value.strip(), field=field)
    except MappingError as error:
        raise InputError(field, str(error).removeprefix(f"{field}: ")) from error


def _read_text(path: Path, field: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as error:
        raise InputError(field, f"cannot read {path}: {error.strerror}") from error
    except UnicodeDecodeError as error:
        raise InputError(field, f"{path} is not UTF-8 text") from error


def _attachment(path: Path) -> Attachment:
    try:
        content = path.read_bytes()
    except OSError as error:
        raise InputError("--attach", f"cannot read {path}: {error.strerror}") from error
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return Attachment(path.name, content_type, content)


def _patient(path: Path) -> Patient:
    field = f"--patient {path}"
    try:
        data = json.loads(_read_text(path, "--patient"))
    except json.JSONDecodeError as error:
        raise InputError(field, f"not valid JSON ({error.msg} at line {error.lineno})") from error
    if not isinstance(data, dict):
        raise InputError(field, "expected a JSON object")
    missing = [name for name in _PATIENT_FIELDS if not data.get(name)]
    if missing:
        raise InputError(field, f"missing {', '.join(missing)}")
    try:
        matricule = ins.parse_matricule(str(data["matricule"])).value
    except MappingError as error:
        raise InputError(f"{field}: matricule", str(error)) from error
    if not ins.is_ins_oid(str(data["oid"])):
        raise InputError(f"{field}: oid", f"{data['oid']!r} is not an INS OID (1.2.250.1.213.1.4.8 …)")
    try:
        birth_date = date.fromisoformat(str(data["birth_date"]))
    except ValueError as error:
        raise InputError(f"{field}: birth_date", "expected YYYY-MM-DD") from error
    try:
        sex = Sex(str(data["sex"]).upper())
    except ValueError as error:
        raise InputError(f"{field}: sex", "expected M, F or U") from error
    return Patient(
        matricule=matricule,
        oid=str(data["oid"]),
        birth_name=str(data["birth_name"]),
        given_name=str(data["given_name"]),
        birth_date=birth_date,
        sex=sex,
    )
