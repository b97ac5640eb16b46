"""The modes of what the gateway creates on disk, set explicitly so that no umask decides who reads mail.

Two audiences. The state directory and the store's database hold every message and patient identity: only
the daemon's user reads them (``0700``/``0600``). Drop folders and their ``.documents/`` are written for
business software, which reads them through a group (``0750``/``0640``): give the drop folder that group
and the setgid bit (``chown mssgw:GROUP DIR && chmod 2750 DIR``) and every file and directory created in it
inherits the group, since the setgid bit is kept on the directories made here. Directories that already
exist keep the mode their owner gave them.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
SHARED_DIR = 0o750
SHARED_FILE = 0o640


def make_dirs(path: Path, mode: int) -> None:
    """Create ``path`` and its missing parents with ``mode`` (plus an inherited setgid bit)."""
    missing: list[Path] = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode)
        except FileExistsError:
            continue  # made meanwhile by another writer, who chose its mode
        made = directory.stat().st_mode
        # Under the unit's UMask=0027 mkdir already gave ``mode``; chmod only when another umask did not,
        # because the unit's RestrictSUIDSGID=yes refuses a chmod that keeps the inherited setgid bit.
        if stat.S_IMODE(made) & 0o777 != mode:
            os.chmod(directory, mode | (made & stat.S_ISGID))


def create_file(path: Path, mode: int, *, exclusive: bool = False) -> int:
    """Open ``path`` for writing, created or truncated, with exactly ``mode``; the descriptor.

    ``exclusive``: only create, never truncate (``FileExistsError`` when it is there).
    """
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    handle = os.open(path, flags, mode)
    try:
        os.fchmod(handle, mode)
    except BaseException:
        os.close(handle)
        raise
    return handle
