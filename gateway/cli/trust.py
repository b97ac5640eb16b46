"""``mssgw trust update|list|check``: the MSSanté trust list ("liste blanche") kept in the state directory.

``update`` replaces the last good copy only with a list that parses and names domains, and says what
changed; the running daemon puts it in force at its next reload (``systemctl reload mssgw``) or refresh.
"""

from __future__ import annotations

import argparse
import json

from gateway import trust
from gateway.cli.common import add_config_option, load_settings, now
from gateway.errors import InputError, NotFoundError
from mappers.trustlist import TrustListError, normalise_domain


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = subparsers.add_parser("trust", help="the MSSanté trust list of domains")
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    update = actions.add_parser("update", help="load the trust list XML from a file or an https:// URL")
    update.add_argument("--from", dest="source", required=True, metavar="FILE_OR_URL")
    update.set_defaults(handler=_update)
    listing = actions.add_parser("list", help="the domains of the list in the state directory")
    listing.set_defaults(handler=_list)
    check = actions.add_parser("check", help="is DOMAIN on the list? (exit 66 when it is not)")
    check.add_argument("domain", metavar="DOMAIN")
    check.set_defaults(handler=_check)
    for parser in (update, listing, check):
        add_config_option(parser)
        parser.add_argument("--json", action="store_true", help="machine-readable output")


def _saved(args: argparse.Namespace) -> trust.TrustList:
    settings = load_settings(args)
    try:
        return trust.load_saved(trust.saved_path(settings))
    except TrustListError as error:
        raise InputError(str(trust.saved_path(settings)), str(error)) from error


def _update(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    data = trust.fetch(args.source, settings)
    try:
        change = trust.update(trust.saved_path(settings), data, now())
    except TrustListError as error:
        raise InputError("--from", f"{error}") from error
    if args.json:
        print(
            json.dumps(
                {
                    "total": change.total,
                    "added": change.added,
                    "removed": change.removed,
                    "rejected": change.rejected,
                },
                ensure_ascii=False,
                indent=2,
            )
        )
        return 0
    added, removed = len(change.added), len(change.removed)
    print(f"trust list updated: {change.total} domains, {added} added, {removed} removed")
    for domain in change.added:
        print(f"  + {domain}")
    for domain in change.removed:
        print(f"  - {domain}")
    for entry in change.rejected:
        print(f"  ! ignored {entry!r}: not a domain name")
    print("the running daemon uses it after: systemctl reload mssgw")
    return 0


def _list(args: argparse.Namespace) -> int:
    current = _saved(args)
    domains = sorted(current.domains)
    if args.json:
        loaded = current.loaded_at.isoformat() if current.loaded_at else None
        print(json.dumps({"loaded_at": loaded, "domains": domains}, indent=2))
        return 0
    for domain in domains:
        print(domain)
    return 0


def _check(args: argparse.Namespace) -> int:
    current = _saved(args)
    try:
        domain = normalise_domain(args.domain)
    except TrustListError as error:
        raise InputError("DOMAIN", str(error)) from error
    trusted = current.is_trusted(domain)
    if args.json:
        print(json.dumps({"domain": domain, "trusted": trusted}))
    if not trusted:
        raise NotFoundError(f"{args.domain} ({domain}) is not on the trust list")
    if not args.json:
        print(f"{args.domain} ({domain}) is on the trust list")
    return 0
