"""``mssgw queue list|show|retry|hold|release|delete``: inspect and repair the outbound queue.

A queue id is the id ``mssgw send`` printed (a message); ``--json`` prints machine-readable output.
``list`` and ``show`` mask the INS in patient addresses unless ``--reveal`` (a terminal, a ticket or a
script's log is no place for it); ``list`` stops at ``--limit`` messages and says so.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from datetime import datetime

from gateway import wake
from gateway.cli.common import add_config_option, load_settings, now, open_store_of, stamp, to_json
from gateway.errors import InputError
from gateway.report_routes import ReportRoutes
from gateway.store.queue_admin import PENDING, QueueAdmin, QueueEntry
from mappers import ins

DEFAULT_LIMIT = 1000

_ACTIONS = {
    "retry": "make waiting or failed deliveries due now",
    "hold": "put waiting deliveries aside until released",
    "release": "send held deliveries again",
    "delete": "remove the message and its deliveries",
}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    queue = subparsers.add_parser("queue", help="inspect and repair the outbound queue")
    actions = queue.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="messages with deliveries still to do (or --all)")
    listing.add_argument("--all", action="store_true", help="include delivered messages")
    listing.add_argument("--state", action="append", choices=[*PENDING, "sent", "notified"])
    listing.add_argument(
        "--limit", type=int, default=DEFAULT_LIMIT, help=f"messages to list (default {DEFAULT_LIMIT})"
    )
    listing.set_defaults(handler=_list)
    show = actions.add_parser("show", help="one message: deliveries, attempts and audit trail")
    show.add_argument("id", type=int, metavar="ID")
    show.add_argument("--raw", action="store_true", help="print the message itself, as stored")
    show.set_defaults(handler=_show)
    for name, description in _ACTIONS.items():
        action = actions.add_parser(name, help=description)
        action.add_argument("id", type=int, metavar="ID")
        action.set_defaults(handler=_act)
    for parser in (listing, show):
        parser.add_argument("--reveal", action="store_true", help="show patient addresses in full")
    for parser in (listing, show, *(actions.choices[n] for n in _ACTIONS)):
        add_config_option(parser)
        parser.add_argument("--json", action="store_true", help="machine-readable output")


def _masked(entry: QueueEntry, reveal: bool) -> QueueEntry:
    """``entry`` with the INS in patient addresses masked, wherever an address may be quoted."""
    if reveal:
        return entry

    def hide(text: str | None) -> str | None:
        return None if text is None else ins.mask_addresses(text)

    deliveries = tuple(
        dataclasses.replace(
            d,
            recipient=ins.mask_addresses(d.recipient),
            last_reply=hide(d.last_reply),
            receipt_detail=hide(d.receipt_detail),
            history=tuple(dataclasses.replace(a, reply=hide(a.reply)) for a in d.history),
        )
        for d in entry.deliveries
    )
    return dataclasses.replace(
        entry,
        envelope_from=ins.mask_addresses(entry.envelope_from),
        state_reason=hide(entry.state_reason),
        deliveries=deliveries,
        zams=tuple(dataclasses.replace(z, address=ins.mask_addresses(z.address)) for z in entry.zams),
    )


def _admin(args: argparse.Namespace) -> tuple[QueueAdmin, Callable[[], None]]:
    settings = load_settings(args)
    store = open_store_of(settings)
    return store.queue, store.close


def _list(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise InputError("--limit", f"{args.limit} lists nothing; give at least 1")
    admin, close = _admin(args)
    try:
        if args.state:
            states = tuple(args.state)
        elif args.all:
            states = (*PENDING, "sent", "notified")
        else:
            states = PENDING
        found = admin.entries(states, limit=args.limit + 1)
    finally:
        close()
    entries = [_masked(e, args.reveal) for e in found[: args.limit]]
    more = ""
    if len(found) > args.limit:
        more = f"stopped at {args.limit} messages (the oldest); more are queued: raise --limit to see them"
    if args.json:
        print(to_json(entries))
        if more:
            print(more, file=sys.stderr)
        return 0
    if not entries:
        print("queue is empty")
        return 0
    print(f"{'ID':>8}  {'QUEUED (UTC)':19}  {'SIZE':>9}  {'SENDER':30}  DELIVERIES")
    for entry in entries:
        summary = ", ".join(f"{d.state}:{d.recipient}" for d in entry.deliveries)
        print(
            f"{entry.id:>8}  {stamp(entry.created_at)}  {entry.size:>9}  {entry.envelope_from:30}  {summary}"
        )
    if more:
        print(more)
    return 0


def _show(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    store = open_store_of(settings)
    try:
        if args.raw:
            sys.stdout.buffer.write(store.queue.raw(args.id))
            return 0
        entry = _masked(store.queue.show(args.id), args.reveal)
    finally:
        store.close()
    routes = ReportRoutes(settings.inbound, settings.submission.clients)
    route = routes.route(entry.envelope_from, entry.source, entry.client)
    entry = dataclasses.replace(entry, reports=route.description)
    print(to_json(entry) if args.json else _describe(entry))
    return 0


def _describe(entry: QueueEntry) -> str:
    lines = [
        f"queue id:    {entry.id}",
        f"message-id:  {entry.message_id or '-'}",
        f"kind:        {entry.direction} {entry.kind}",
        f"sender:      {entry.envelope_from or '<>'}",
        f"queued:      {stamp(entry.created_at)} UTC",
        f"size:        {entry.size} bytes",
    ]
    if entry.reports:
        lines.append(f"delivery reports: {entry.reports}")
    if entry.related_id:
        lines.append(f"answers:     queue id {entry.related_id}")
    if entry.state != "stored":
        lines.append(
            f"state:       {entry.state}" + (f" ({entry.state_reason})" if entry.state_reason else "")
        )
    for d in entry.deliveries:
        lines.append(f"delivery {d.id} to {d.recipient}: {d.state}, {d.attempts} attempt(s)")
        if d.held_reason:
            lines.append(f"    held by the gateway: {d.held_reason} (mssgw queue release {entry.id})")
        if d.next_attempt_at:
            lines.append(f"    next attempt {stamp(d.next_attempt_at)} UTC")
        if d.sent_at:
            lines.append(f"    delivered {stamp(d.sent_at)} UTC")
        if d.notice_id:
            lines.append(f"    delivery report written for the sender: queue id {d.notice_id}")
        if d.receipt_status:
            detail = f" ({d.receipt_detail})" if d.receipt_detail else ""
            lines.append(
                f"    receipt: {d.receipt_status}{detail}, {stamp(d.receipt_at)} UTC, queue id {d.receipt_id}"
            )
        for attempt in d.history:
            lines.append(
                f"    {stamp(attempt.at)} {attempt.outcome:8} {attempt.peer or '-'}: {attempt.reply or '-'}"
            )
    for z in entry.zams:
        result = "Y" if z.failure_code is None else f"N {z.failure_code}"
        lines.append(
            f"ZAM {z.id} {z.event} to producer {z.producer} for {z.address} ({result}): {z.state}, "
            f"{z.attempts} attempt(s)"
        )
        if z.acked_at:
            lines.append(f"    acknowledged {stamp(z.acked_at)} UTC")
        else:
            lines.append(f"    next attempt {stamp(z.next_attempt_at)} UTC")
        if z.last_error:
            lines.append(f"    last error: {z.last_error}")
    for m in entry.mdms:
        lines.append(
            f"MDM {m.id} {m.event} to consumer {m.consumer} for {m.name}: {m.state}, {m.attempts} attempt(s)"
        )
        if m.settled_at:
            answer = f"ACK {m.ack_code}" if m.ack_code else "no ACK"
            result = (
                "integrated" if m.result_code is None else f"error {m.result_code}^{m.result_label or ''}"
            )
            lines.append(f"    {answer} {stamp(m.settled_at)} UTC: {result}")
            if m.result_detail:
                lines.append(f"    consumer said: {m.result_detail}")
        else:
            lines.append(f"    next attempt {stamp(m.next_attempt_at)} UTC")
        if m.last_error:
            lines.append(f"    last error: {m.last_error}")
        if m.mdn_id:
            lines.append(f"    MDN to the sender: queue id {m.mdn_id}")
    if entry.events:
        lines.append("audit trail:")
        lines.extend(
            f"    {stamp(at)} {kind}" + (f" (delivery {d})" if d else "") for at, kind, d in entry.events
        )
    return "\n".join(lines)


def _act(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    store = open_store_of(settings)
    admin = store.queue
    actions: dict[str, Callable[[int, datetime], int]] = {
        "retry": admin.retry,
        "hold": admin.hold,
        "release": admin.release,
        "delete": admin.delete,
    }
    try:
        count = actions[args.action](args.id, now())
    finally:
        store.close()
    if args.action in ("retry", "release"):
        wake.ping(settings.gateway.state_dir)
    if args.json:
        print(to_json({"id": args.id, "action": args.action, "deliveries": count}))
    else:
        print(f"queue id {args.id}: {args.action} applied to {count} deliveries")
    return 0
