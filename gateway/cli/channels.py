"""``mssgw channels list|show|close|refused``: the citizen channels and the patient mail they refused.

The INS is masked unless ``--reveal`` is given (the terminal, a ticket or a script's log are not the place
for a full INS); ``close`` sends nothing to the patient, it only stops their replies, and records who
closed. ``--json`` prints machine-readable output.
"""

from __future__ import annotations

import argparse
import dataclasses
import getpass
from collections.abc import Sequence

from gateway.cli.common import add_config_option, load_settings, now, open_store_of, stamp, to_json
from gateway.errors import InputError
from gateway.store.channels import ChannelView, RefusedMessage
from gateway.store.states import ChannelState
from mappers import ins


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    channels = subparsers.add_parser("channels", help="citizen channels (exchanges with patients)")
    actions = channels.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="channels, newest first")
    which = listing.add_mutually_exclusive_group()
    which.add_argument("--open", action="store_true", help="only open channels")
    which.add_argument("--closed", action="store_true", help="only closed or expired channels")
    listing.add_argument("--patient", metavar="MATRICULE", help="one patient's channels")
    listing.add_argument("--mailbox", metavar="ADDR", help="one mailbox's channels")
    listing.set_defaults(handler=_list)
    show = actions.add_parser("show", help="one channel and its history")
    show.add_argument("id", type=int, metavar="ID")
    show.set_defaults(handler=_show)
    close = actions.add_parser(
        "close", help="close a channel (nothing is sent; the patient can no longer reply)"
    )
    close.add_argument("id", type=int, metavar="ID")
    close.add_argument("--by", default=None, help="who closes it (default: your login name)")
    close.set_defaults(handler=_close)
    refused = actions.add_parser("refused", help="patient mail kept aside because no channel was open")
    refused.set_defaults(handler=_refused)
    for parser in (listing, show, close, refused):
        add_config_option(parser)
        parser.add_argument("--reveal", action="store_true", help="show full INS matricules")
        parser.add_argument("--json", action="store_true", help="machine-readable output")


def _masked(view: ChannelView, reveal: bool) -> ChannelView:
    return view if reveal else dataclasses.replace(view, matricule=ins.mask(view.matricule))


def _list(args: argparse.Namespace) -> int:
    states: tuple[str, ...] = ()
    if args.open:
        states = (ChannelState.OPEN.value,)
    elif args.closed:
        states = (ChannelState.CLOSED.value, ChannelState.EXPIRED.value)
    matricule = None
    if args.patient:
        try:
            matricule = ins.parse_matricule(args.patient).value
        except ins.InsError as error:
            raise InputError("--patient", str(error)) from error
    store = open_store_of(load_settings(args))
    try:
        found = [_masked(v, args.reveal) for v in store.channels.find(states, matricule, args.mailbox)]
    finally:
        store.close()
    header = f"{'ID':>6}  {'STATE':8}  {'PATIENT':15}  {'MAILBOX':36}  {'LAST ACTIVITY':19}  CLOSED"
    lines = [
        f"{v.id:>6}  {v.state:8}  {v.matricule:15}  {v.mailbox:36}  {stamp(v.last_activity_at)}  {_closed(v)}"
        for v in found
    ]
    return _print(args, found, "no channels", [header, *lines])


def _print(args: argparse.Namespace, found: Sequence[object], empty: str, lines: list[str]) -> int:
    """``--json``, the sentence for nothing found, or the lines."""
    if args.json:
        print(to_json(list(found)))
    else:
        print("\n".join(lines) if found else empty)
    return 0


def _closed(view: ChannelView) -> str:
    if view.closed_at is None:
        return "-"
    who = f" by {view.closed_by}" if view.closed_by else ""
    return f"{stamp(view.closed_at)}{who} ({view.reason})"


def _show(args: argparse.Namespace) -> int:
    store = open_store_of(load_settings(args))
    try:
        view = _masked(store.channels.show(args.id), args.reveal)
    finally:
        store.close()
    if args.json:
        print(to_json(view))
        return 0
    lines = [
        f"channel:       {view.id}",
        f"state:         {view.state}",
        f"patient:       {view.matricule}@{ins.CITIZEN_DOMAIN}",
        f"mailbox:       {view.mailbox}",
        f"opened:        {stamp(view.opened_at)} UTC by {view.opened_by or '-'}",
        f"last activity: {stamp(view.last_activity_at)} UTC",
        f"closed:        {_closed(view)}",
        "history:",
    ]
    lines.extend(
        f"    {stamp(at)} {kind}" + (f" (queue id {pk})" if pk else "") for at, kind, pk in view.events
    )
    print("\n".join(lines))
    return 0


def _close(args: argparse.Namespace) -> int:
    who = args.by or getpass.getuser()
    store = open_store_of(load_settings(args))
    try:
        view = _masked(store.channels.close(args.id, who, now()), args.reveal)
    finally:
        store.close()
    if args.json:
        print(to_json(view))
    else:
        print(f"channel {view.id} closed by {who}: {view.matricule} can no longer reply to {view.mailbox}")
    return 0


def _refused(args: argparse.Namespace) -> int:
    store = open_store_of(load_settings(args))
    try:
        found = store.channels.refused()
    finally:
        store.close()
    if not args.reveal:
        found = [dataclasses.replace(r, sender=ins.mask_address(r.sender)) for r in found]
    return _print(args, found, "no refused patient mail", [_describe_refused(m) for m in found])


def _describe_refused(message: RefusedMessage) -> str:
    return (
        f"queue id {message.id}  {stamp(message.received_at)} UTC  by {message.source}  "
        f"from {message.sender}\n    {message.reason or '-'}"
    )
