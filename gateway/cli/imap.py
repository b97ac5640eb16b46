"""``mssgw imap status``: per account and folder, when the IMAP bridge last synced, its lag, its last error.

Read from the cursors the running daemon keeps in the store, so it works from any shell with the config file.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from datetime import datetime

from gateway.cli.common import add_config_option, load_settings, now, open_store_of, stamp, to_json
from gateway.store.imap_cursors import FolderStatus


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    imap = subparsers.add_parser("imap", help="the IMAP bridge (operator mailboxes)")
    actions = imap.add_subparsers(dest="action", required=True, metavar="ACTION")
    status = actions.add_parser("status", help="last sync, lag and last error per account and folder")
    add_config_option(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=_status)


def _status(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    store = open_store_of(settings)
    try:
        known = {(s.account, s.folder): s for s in store.imap_cursors.statuses()}
    finally:
        store.close()
    # Configured folders the daemon has not reached yet are shown too: "never synced" is news.
    rows = [
        known.pop((account.name, folder), FolderStatus(account.name, folder, None, None, None, None))
        for account in settings.imap.accounts
        for folder in account.folders
    ] + sorted(known.values(), key=lambda s: (s.account, s.folder))
    moment = now()
    if args.json:
        print(to_json([{**asdict(row), "lag_seconds": _lag(row.last_sync_at, moment)} for row in rows]))
        return 0
    if not rows:
        print("no IMAP account configured")
        return 0
    print(f"{'ACCOUNT':20}  {'FOLDER':20}  {'LAST SYNC (UTC)':19}  {'LAG':>8}  {'LAST UID':>9}  LAST ERROR")
    for row in rows:
        lag = _lag(row.last_sync_at, moment)
        shown_lag = "-" if lag is None else f"{lag}s"
        last_uid = "-" if row.last_uid is None else str(row.last_uid)
        print(
            f"{row.account:20}  {row.folder:20}  {stamp(row.last_sync_at):19}  {shown_lag:>8}  "
            f"{last_uid:>9}  {row.last_error or '-'}"
        )
    return 0


def _lag(last_sync: datetime | None, moment: datetime) -> int | None:
    return None if last_sync is None else max(0, int((moment - last_sync).total_seconds()))
