"""Giving freed heap back to the system after a burst of large mail.

glibc keeps the memory of freed large messages in its arenas (one per thread that parsed or committed one),
so RSS stays at the burst's peak long after it (issue 11: 2.3 GB kept). ``malloc_trim`` returns it.
Elsewhere than glibc there is nothing to call and nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
_trim: Callable[[int], int] | None = getattr(_libc, "malloc_trim", None)


def release() -> None:
    """Return free heap pages to the system (cheap when there are none: called when a listener idles)."""
    if _trim is not None:
        _trim(0)
