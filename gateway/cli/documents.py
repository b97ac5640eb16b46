"""``mssgw ins …`` and ``mssgw xdm …``: look at INS matricules and XDM packages from the shell."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``ins`` and ``xdm`` sub-commands (filled in by the mappers issue)."""
