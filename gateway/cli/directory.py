"""``mssgw directory update|search|show|status``: the national MSSanté directory in the store.

``update`` imports the ANS extraction (a file or an ``https://`` URL, ZIP or text) and puts it in force
only when it passes the checks (``gateway.directory.update``); every instance sharing the store sees it at
once. ``search`` finds mailboxes as the seeds' directory search does: words that begin a name, a label, the
organisation, the city, postal code or department, accents and case ignored.
"""

from __future__ import annotations

import argparse

from gateway.cli.common import add_config_option, load_settings, now, open_store_of, stamp, to_json
from gateway.directory.update import update_directory
from gateway.errors import InputError, NotFoundError
from gateway.store.directory import Listing, SearchQuery
from mappers.directory import query_words


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = subparsers.add_parser("directory", help="the national MSSanté directory (Annuaire Santé)")
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    update = actions.add_parser("update", help="import the ANS extraction from a file or an https:// URL")
    update.add_argument("--from", dest="source", required=True, metavar="FILE_OR_URL")
    update.add_argument(
        "--accept-smaller",
        action="store_true",
        help="accept a file with fewer addresses than directory.min_share of the one in force",
    )
    update.set_defaults(handler=_update)
    search = actions.add_parser("search", help="find mailboxes by name, profession, speciality, place")
    search.add_argument("terms", nargs="*", metavar="TERMS")
    search.add_argument("--profession", default="")
    search.add_argument("--speciality", default="")
    place = search.add_mutually_exclusive_group()
    place.add_argument("--city", default="")
    place.add_argument("--department", default="")
    search.add_argument("--limit", type=int, default=20)
    search.set_defaults(handler=_search)
    show = actions.add_parser("show", help="one mailbox with every role (exit 66 when it is not there)")
    show.add_argument("address", metavar="ADDRESS")
    show.set_defaults(handler=_show)
    status = actions.add_parser("status", help="the directory in force and the latest imports")
    status.set_defaults(handler=_status)
    for parser in (update, search, show, status):
        add_config_option(parser)
        parser.add_argument("--json", action="store_true", help="machine-readable output")


def _update(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    store = open_store_of(settings)
    try:
        record = update_directory(
            store.directory, args.source, settings, now(), accept_smaller=args.accept_smaller
        )
    finally:
        store.close()
    if args.json:
        print(to_json(record))
        return 0
    print(
        f"directory updated: {record.addresses} addresses from {record.lines} lines "
        f"({record.duplicates} lines repeating an address), file of {stamp(record.file_timestamp)} UTC"
    )
    return 0


def _search(args: argparse.Namespace) -> int:
    words = query_words(" ".join(args.terms))
    if not (words or args.profession or args.speciality or args.city or args.department):
        raise InputError("TERMS", "give words to look for (a name, a town…) or a filter")
    settings = load_settings(args)
    store = open_store_of(settings)
    try:
        if store.directory.current() is None:
            raise NotFoundError("no directory loaded: run mssgw directory update --from FILE_OR_URL")
        query = SearchQuery(words, args.profession, args.speciality, args.city, args.department, args.limit)
        found = store.directory.search(query)
    finally:
        store.close()
    more = len(found) > args.limit
    found = found[: args.limit]
    if args.json:
        print(to_json({"results": [_summary(e) for e in found], "more": more}))
        return 0
    for entry in found:
        print("  ".join(v for v in _summary(entry).values() if v))
    if more:
        print(f"… more than {args.limit} mailboxes: add a word or a filter")
    if not found:
        print("no mailbox found")
    return 0


def _summary(entry: Listing) -> dict[str, str]:
    return {
        "address": entry.address,
        "type": entry.mailbox_type,
        "holder": entry.holder,
        "profession": entry.profession,
        "speciality": entry.speciality,
        "organisation": entry.organisation if entry.organisation != entry.holder else "",
        "place": f"{entry.postal_code} {entry.city}".strip(),
    }


def _show(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    store = open_store_of(settings)
    try:
        entry = store.directory.show(args.address)
    finally:
        store.close()
    if entry is None:
        raise NotFoundError(f"{args.address} is not in the national directory")
    if args.json:
        print(to_json(entry))
        return 0
    print(f"{entry.address}  ({entry.mailbox_type})")
    print(f"  holder: {entry.holder}" + (f"  (RPPS/ADELI {entry.pp_id})" if entry.pp_id else ""))
    for role in entry.roles:
        what = ", ".join(v for v in (role.profession, role.speciality, role.service) if v)
        where = f" at {role.organisation}" if role.organisation else ""
        print(f"  role: {what or '-'}{where}")
    address = ", ".join(
        v for v in (entry.street, f"{entry.postal_code} {entry.city}".strip(), entry.country) if v
    )
    print(f"  address: {address}")
    return 0


def _status(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    store = open_store_of(settings)
    try:
        imports = store.directory.imports()
    finally:
        store.close()
    if args.json:
        print(to_json(imports))
        return 0
    if not any(i.state == "current" for i in imports):
        print("no directory in force: run mssgw directory update --from FILE_OR_URL")
    for item in imports:
        print(
            f"{item.id:>5}  {item.state:<8}  {stamp(item.started_at)}  file {stamp(item.file_timestamp)}  "
            f"{item.addresses} addresses  {item.source}" + (f"  ({item.reason})" if item.reason else "")
        )
    return 0
