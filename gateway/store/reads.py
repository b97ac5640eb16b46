"""Read-only transactions that take no write lock.

On SQLite every transaction otherwise opens with ``BEGIN IMMEDIATE`` (``gateway.store.db``) so that writers
queue instead of failing; a transaction that only reads needs none of that: in WAL mode a deferred
transaction reads a snapshot without waiting for the writer, and the writer never waits for it. The
relay's loads and the queue's look-ups go through this engine so they no longer queue behind commits.
"""

from __future__ import annotations

from sqlalchemy import Engine

READ_ONLY = "mssgw_read_only"
"""The execution option that tells the SQLite ``begin`` hook to open a deferred transaction."""


def read_engine(engine: Engine) -> Engine:
    """``engine`` (same pool) for transactions that never write."""
    return engine.execution_options(**{READ_ONLY: True})
