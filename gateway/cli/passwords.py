"""``mssgw hash-password``: the line to put in ``submission.credentials_file`` for one client.

Reads the password from the terminal (asked twice, not echoed) or from standard input, and prints
``NAME:scrypt$…``; the password itself is never printed or written anywhere.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from gateway.errors import InputError
from gateway.inbound.credentials import hash_password


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "hash-password", help="print a credentials-file line (scrypt hash) for a submission client"
    )
    parser.add_argument("name", help="the client's login (its submission.clients name)")
    parser.set_defaults(handler=_hash)


def _hash(args: argparse.Namespace) -> int:
    if ":" in args.name or not args.name.strip():
        raise InputError("name", "a login must be non-empty and contain no ':'")
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise InputError("password", "the two passwords differ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise InputError("password", "an empty password is not accepted")
    print(f"{args.name}:{hash_password(password)}")
    return 0
