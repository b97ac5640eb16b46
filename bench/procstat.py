"""What a server under test costs, read from /proc: CPU time of a process tree, peak resident memory.

CPU is ``utime + stime + cutime + cstime``: a child that exits is reaped by its parent (Postfix's master),
whose ``cutime``/``cstime`` then carry it, so the difference of two readings of the tree counts every
daemon that ran in between, short-lived ones too.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after its closing one.
    return text[text.rindex(")") + 2 :].split()


def _children(root: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))) is not None:
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, pending = [], [root]
    while pending:
        pid = pending.pop()
        tree.append(pid)
        pending.extend(parents.get(pid, ()))
    return tree


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds used so far by ``pid`` and its descendants, exited ones included."""
    ticks = 0
    for member in _children(pid):
        fields = _stat_fields(member)
        if fields is not None:
            ticks += sum(int(value) for value in fields[11:15])
    return ticks / _TICKS


def peak_rss(pid: int) -> int | None:
    """The sum of ``VmHWM`` (the kernel's high-water mark of resident memory) over ``pid`` and its live
    descendants, in bytes: with the relay in a second process both count. A sum of peaks, so at least
    the tree's true peak, never less."""
    total = None
    for member in _children(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text(encoding="ascii")
        except OSError:
            continue
        found = re.search(r"^VmHWM:\s+(\d+) kB$", status, re.MULTILINE)
        if found:
            total = (total or 0) + int(found.group(1)) * 1024
    return total
