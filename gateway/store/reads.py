"""Read-only transactions that take no write lock, and on PostgreSQL no transaction at all.

On SQLite every transaction otherwise opens with ``BEGIN IMMEDIATE`` (``gateway.store.db``) so that writers
queue instead of failing; a transaction that only reads needs none of that: in WAL mode a deferred
transaction reads a snapshot without waiting for the writer, and the writer never waits for it. The
relay's loads and the queue's look-ups go through this engine so they no longer queue behind commits.

On PostgreSQL they run in autocommit: a read was three round trips, ``BEGIN``, the ``SELECT`` and the
``ROLLBACK`` when the connection went back to the pool, and is now one (issue 16). What they see is the
same: at the default ``READ COMMITTED`` each statement of a transaction takes its own snapshot anyway, so
no read here ever relied on one spanning several statements.
"""

from __future__ import annotations

from sqlalchemy import Engine

READ_ONLY = "mssgw_read_only"
"""The execution option that tells the SQLite ``begin`` hook to open a deferred transaction."""


def read_engine(engine: Engine) -> Engine:
    """``engine`` (same pool) for transactions that never write."""
    if engine.dialect.name == "postgresql":
        return engine.execution_options(isolation_level="AUTOCOMMIT", **{READ_ONLY: True})
    return engine.execution_options(**{READ_ONLY: True})
