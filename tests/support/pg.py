"""PostgreSQL places for tests: probe the server named by the environment, lend a throw-away schema.

Used by tests/conftest.py (fixtures ``pg_url``, ``pg_schema_url``); the gateway's own store code never
imports it. It creates and drops only the schema it named itself.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy
from sqlalchemy import make_url

PG_DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PG_CONNECT_TIMEOUT = 3
SCHEMA_PREFIX = "mssgw_t_"


def probe(url: str) -> None:
    """Open and close one connection; raises ``sqlalchemy.exc.SQLAlchemyError`` if that fails."""
    engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": PG_CONNECT_TIMEOUT})
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT 1"))
    finally:
        engine.dispose()


def shown(url: str) -> str:
    """The URL as it may appear in a skip reason or a log: password masked."""
    return make_url(url).render_as_string(hide_password=True)


@contextmanager
def temporary_schema(url: str) -> Iterator[str]:
    """Yield a URL whose connections use a new schema ``mssgw_t_<hex>``; drop it (CASCADE) on exit.

    libpq's ``options=-csearch_path=…`` (sent as a startup parameter, percent-encoded in the URL) picks
    the schema, so it holds for every connection made from the URL, in this process or in a subprocess.
    Dispose your engines before leaving: the DROP waits at most ``lock_timeout`` for their locks.
    """
    schema = SCHEMA_PREFIX + secrets.token_hex(6)
    admin = sqlalchemy.create_engine(url, connect_args={"connect_timeout": PG_CONNECT_TIMEOUT})
    try:
        with admin.begin() as connection:
            connection.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))
        try:
            yield (
                make_url(url)
                .update_query_dict({"options": f"-csearch_path={schema}"})
                .render_as_string(hide_password=False)
            )
        finally:
            with admin.begin() as connection:
                connection.execute(sqlalchemy.text("SET LOCAL lock_timeout = '10s'"))
                connection.execute(sqlalchemy.text(f'DROP SCHEMA "{schema}" CASCADE'))
    finally:
        admin.dispose()
