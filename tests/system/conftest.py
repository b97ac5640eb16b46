"""Fixtures of the system tests, which run ``mssgw`` as a subprocess."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.fake_operator import FakeOperator, FakeOperatorFactory
from tests.support.gateway import Gateway


@pytest.fixture
def gateways() -> Iterator[list[Gateway]]:
    """Gateways a test started; any still running at teardown is killed."""
    started: list[Gateway] = []
    yield started
    for gateway in started:
        gateway.cleanup()


@pytest.fixture
def operator(fake_operator: FakeOperatorFactory) -> FakeOperator:
    """The one fake MSSanté operator a test's gateway relays to."""
    return fake_operator()
