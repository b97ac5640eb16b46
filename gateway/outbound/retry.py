"""When to try a deferred delivery again, and when to give up (pure).

The schedule is a list of delays: the n-th retry waits the n-th delay, and the last one repeats until the
message is older than ``max_lifetime`` (5 days by default, as Postfix's maximal_queue_lifetime).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta


def next_attempt_at(now: datetime, attempts: int, schedule: Sequence[float]) -> datetime:
    """The time of the next try after ``attempts`` tries (1 = the first one just failed)."""
    index = min(max(attempts, 1), len(schedule)) - 1
    return now + timedelta(seconds=schedule[index])


def gives_up(queued_at: datetime, now: datetime, max_lifetime: float) -> bool:
    """True when a temporary failure should now become final."""
    return now - queued_at >= timedelta(seconds=max_lifetime)
