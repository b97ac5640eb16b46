"""Fixtures shared by every test layer: a test PKI, the fake MSSanté operator, PostgreSQL schemas, and the
check of every CDA N1 wrapper a test builds against the shipped schema.

They only build throw-away peers and places (tmp_path, loopback ports, a schema of their own); they never
start the gateway itself, and never touch a database object they did not create.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import SQLAlchemyError

from mappers import cda
from tests.support import pg
from tests.support.cda_schema import assert_valid_n1
from tests.support.fake_operator import FakeOperator, FakeOperatorFactory
from tests.support.pki import Pki, make_pki

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def _wrappers_keep_to_the_n1_schema(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every CDA N1 that ``cda.wrap_pdf`` builds in this process, in any test (``pdf_document``, the
    ``send``/``xdm build`` commands, ``X-MSSGW-*`` submissions, HL7 producers), is validated against
    ``mappers/schemas/cda_n1.xsd`` before the test gets it: the real function runs, its output is checked.
    A test marked ``hostile_cda`` builds a wrapper with forged values on purpose (to test a reader)."""
    if request.node.get_closest_marker("hostile_cda"):
        return
    build = cda.wrap_pdf

    def validated(*args: Any, **kwargs: Any) -> bytes:
        data = build(*args, **kwargs)
        assert_valid_n1(data)
        return data

    monkeypatch.setattr(cda, "wrap_pdf", validated)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    """A fresh trusted + untrusted PKI under ``tmp_path / "pki"``."""
    return make_pki(tmp_path / "pki")


@pytest.fixture
def fake_operator(pki: Pki) -> Iterator[FakeOperatorFactory]:
    """Start fake operators: ``fake_operator(**FakeOperator options) -> FakeOperator`` (started).

    Defaults: ``cert=pki.server``, ``client_ca=pki.ca``, STARTTLS and a trusted client certificate
    required. Every operator started here is stopped at teardown.
    """
    started: list[FakeOperator] = []

    def start(**options: Any) -> FakeOperator:
        options.setdefault("cert", pki.server)
        options.setdefault("client_ca", pki.ca)
        operator = FakeOperator(**options).start()
        started.append(operator)
        return operator

    yield start
    for operator in reversed(started):
        operator.stop()


@pytest.fixture(scope="session")
def pg_url() -> str:
    """The PostgreSQL URL under test (``MSSGW_TEST_PG_URL``); skips if unreachable.

    With ``MSSGW_REQUIRE_PG=1`` (CI) an unreachable server fails the test instead, so a broken
    database cannot silently turn the PostgreSQL suite into skips.
    """
    url = os.environ.get("MSSGW_TEST_PG_URL", pg.PG_DEFAULT_URL)
    try:
        pg.probe(url)
    except SQLAlchemyError as error:
        reason = (
            f"PostgreSQL not reachable at {pg.shown(url)}; set MSSGW_TEST_PG_URL "
            f"({type(getattr(error, 'orig', None) or error).__name__})"
        )
        if os.environ.get("MSSGW_REQUIRE_PG") == "1":
            pytest.fail(reason + " (MSSGW_REQUIRE_PG=1)", pytrace=False)
        pytest.skip(reason)
    return url


@pytest.fixture
def pg_schema_url(pg_url: str) -> Iterator[str]:
    """A URL (str) whose connections use a new, empty schema ``mssgw_t_<hex>``, dropped afterwards.

    Works for engines in this process and for ``mssgw`` subprocesses alike (the schema rides in the
    URL). Dispose your engines before teardown.
    """
    with pg.temporary_schema(pg_url) as url:
        yield url
