"""The ``mssgw`` command: one parser, sub-commands registered by the modules of this package.

Each module exposes ``register(subparsers)`` and sets ``handler=`` on its parsers; a handler returns the exit
code. This is the only place that turns exceptions into exit codes (0 ok, 1 unexpected, 65 bad input,
66 no such item, 75 store unavailable, 78 configuration, 141 output pipe closed by its reader).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from gateway import __version__
from gateway.errors import ConfigError, GatewayError, InputError, NotFoundError, StoreError

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_BAD_INPUT = 65
EXIT_NOT_FOUND = 66
EXIT_TEMPORARY = 75
EXIT_CONFIG = 78
EXIT_BROKEN_PIPE = 128 + 13
"""What a shell reports for a tool killed by SIGPIPE: ``mssgw … | head -1`` behaves like ``cat``."""

_EXIT_CODES: tuple[tuple[type[GatewayError], int], ...] = (
    (ConfigError, EXIT_CONFIG),
    (InputError, EXIT_BAD_INPUT),
    (NotFoundError, EXIT_NOT_FOUND),
    (StoreError, EXIT_TEMPORARY),
)


def build_parser() -> argparse.ArgumentParser:
    """Assemble the parser from every sub-command module."""
    from gateway.cli import channels, daemon, directory, documents, hl7, imap, passwords, queue, send, trust

    parser = argparse.ArgumentParser(prog="mssgw", description="MSSanté mail gateway")
    parser.add_argument("--version", action="version", version=f"mssgw {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (daemon, send, queue, documents, trust, directory, passwords, imap, channels, hl7):
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
        sys.stdout.flush()  # here, not at exit, so that a closed pipe is caught below
    except BrokenPipeError:
        # The reader stopped reading (``| head -1``): nothing more to say, and no traceback at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except GatewayError as error:
        prefix = "store unavailable: " if isinstance(error, StoreError) else ""
        print(f"mssgw: {prefix}{error}", file=sys.stderr)
        return next((code for kind, code in _EXIT_CODES if isinstance(error, kind)), EXIT_UNEXPECTED)
    return code


if __name__ == "__main__":
    sys.exit(main())
