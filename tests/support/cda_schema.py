"""Validation of CDA documents against mssgw's own CDA N1 XML Schema (``mappers.cda.N1_SCHEMA``) with lxml.

lxml is a test dependency only: the gateway writes the wrapper by construction, the tests prove that what
it writes keeps to the schema. ``tests/conftest.py`` runs ``assert_valid_n1`` on every wrapper any
in-process test builds.
"""

from __future__ import annotations

from functools import cache

from lxml import etree

from mappers import cda

PARSER = etree.XMLParser(resolve_entities=False, no_network=True)


@cache
def n1_schema() -> etree.XMLSchema:
    """The shipped schema, read once from the package data as an installed gateway would find it."""
    with cda.N1_SCHEMA.open("rb") as handle:
        return etree.XMLSchema(etree.parse(handle, PARSER))


def n1_errors(data: bytes) -> list[str]:
    """The schema's complaints about ``data`` (empty when it is valid), one line each."""
    schema = n1_schema()
    if schema.validate(etree.fromstring(data, PARSER)):
        return []
    return [f"line {error.line}: {error.message}" for error in schema.error_log]


def assert_valid_n1(data: bytes) -> None:
    errors = n1_errors(data)
    assert not errors, "the CDA N1 wrapper breaks mappers/schemas/cda_n1.xsd:\n" + "\n".join(errors)
