"""``mssgw hl7 show FILE`` and ``mssgw hl7 send FILE --to HOST:PORT``: the HL7 door from the command line.

``show`` reads an ER7 file as the MLLP listener would (same producers, same rules, same mail) and prints the
mail it would become, or the ACK refusal it would get, without touching the store or sending anything.
``send`` is a plain MLLP client (python-hl7's) that prints the ACK: for trying a listener by hand.
Exit codes: 0 accepted (``show``: would be accepted), 65 refused (AE/AR), 75 no answer.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import sys
from email import message_from_bytes, policy
from pathlib import Path

from gateway.cli.clinical import read_input
from gateway.cli.common import add_config_option, load_settings, now
from gateway.errors import InputError, StoreError
from gateway.inbound.hl7_intake import Hl7Reader, Outcome
from gateway.outbound.transports.mllp import exchange
from gateway.settings_checks import split_host_port
from mappers import ins
from mappers.hl7_consumer_ack import ConsumerAckError, read_consumer_ack

EXIT_REFUSED = 65


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = subparsers.add_parser("hl7", help="HL7v2 producers' messages (ORU^R01, MDM^T02)")
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = actions.add_parser("show", help="the mail an ER7 file would become, or why it would be refused")
    show.add_argument("file", type=Path, metavar="FILE")
    add_config_option(show)
    show.set_defaults(handler=_show)
    send = actions.add_parser("send", help="send an ER7 file over MLLP and print the ACK")
    send.add_argument("file", type=Path, metavar="FILE")
    send.add_argument("--to", required=True, metavar="HOST:PORT")
    send.add_argument(
        "--tls-ca", type=Path, metavar="FILE", help="MLLP over TLS, the server checked by this CA"
    )
    send.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the ACK")
    send.set_defaults(handler=_send)


def read_er7(path: Path) -> bytes:
    """The file's message with CR between segments (files written by hand often have LF or CRLF)."""
    data = read_input(path, "ER7 file").replace(b"\r\n", b"\r").replace(b"\n", b"\r")
    return data.strip(b"\x0b\x1c") if data.startswith(b"\x0b") else data


def _show(args: argparse.Namespace) -> int:
    settings = load_settings(args, check_required=True)
    prepared = asyncio.run(Hl7Reader(settings, now).prepare(read_er7(args.file)))
    producer = prepared.producer.name if prepared.producer is not None else "(unknown)"
    print(f"producer: {producer}")
    if isinstance(prepared.result, Outcome):
        code, text = prepared.result.error or (0, "")
        print(f"refused: {prepared.result.code.value} {code} {text}")
        return EXIT_REFUSED
    arrival, transmission = prepared.result, prepared.transmission
    assert transmission is not None
    mail = message_from_bytes(arrival.raw, policy=policy.default)
    t = transmission
    print(f"would be accepted: {t.message_type} MSH-10 {t.control_id}, route {t.route}, {t.action} document")
    print(f"envelope from: {arrival.envelope_from}")
    for recipient in arrival.recipients:
        address = recipient.address
        # A patient address is an INS: shown masked, as in the logs.
        print(f"to: {ins.mask_address(address) if ins.is_citizen_address(address) else address}")
    for name in ("From", "Reply-To", "Subject", "Disposition-Notification-To", "X-MSS-MES"):
        if mail[name] is not None:
            print(f"{name}: {mail[name]}")
    for part in mail.iter_attachments():
        print(f"attachment: {part.get_filename()} ({part.get_content_type()})")
    if transmission.flags.get("DESTDMP"):
        print("note: DESTDMP=Y: this gateway does not feed the DMP (the ACK says so as a warning)")
    return 0


def _send(args: argparse.Namespace) -> int:
    try:
        host, port = split_host_port(args.to)
    except ValueError as error:
        raise InputError("--to", f"{args.to!r} is not host:port") from error
    data = read_er7(args.file)
    context = ssl.create_default_context(cafile=str(args.tls_ca)) if args.tls_ca else None
    try:
        ack = asyncio.run(exchange(host, port, data, context, args.timeout))
    except (OSError, TimeoutError, asyncio.IncompleteReadError) as error:
        raise StoreError(f"no ACK from {args.to}: {error or type(error).__name__}") from error
    text = ack.decode("utf-8", "replace")
    sys.stdout.write(text.replace("\r", "\n"))
    try:
        accepted = read_consumer_ack(text).code == "AA"
    except ConsumerAckError:
        accepted = False  # printed above: the sysadmin sees what came back
    return 0 if accepted else EXIT_REFUSED
