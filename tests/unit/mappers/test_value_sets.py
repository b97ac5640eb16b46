"""Value sets in the IHE SVS XML form of the ANS NOS, and membership of a code (mappers/value_sets.py)."""

from __future__ import annotations

import pytest

from mappers.documents import Code
from mappers.value_sets import SVS_NS, ValueSetError, parse_value_set
from tests.support.value_sets import SPECIALTIES, svs

RADIO = Code("G15_10/SM44", "Médecin - Radio-diagnostic (SM)", "1.2.250.1.213.1.1.4.5")


def specialties() -> bytes:
    return svs(*SPECIALTIES)


def test_an_svs_file_gives_its_name_oid_and_concepts() -> None:
    value_set = parse_value_set(specialties(), what="JDV_J01.xml")
    assert (value_set.name, value_set.oid) == ("JDV_J01-test", "1.2.3.4.1")
    assert ("G15_10/SM26", "1.2.250.1.213.1.1.4.5") in value_set.concepts and len(value_set.concepts) == 3


def test_a_member_has_no_problem_and_the_label_is_not_compared() -> None:
    value_set = parse_value_set(specialties(), what="JDV_J01.xml")
    assert value_set.problem(RADIO, "documents.author_specialty") is None
    assert value_set.problem(Code(RADIO.code, "Radiologue", RADIO.scheme), "k") is None


def test_a_code_outside_the_value_set_is_named_with_the_key_and_the_value_set() -> None:
    value_set = parse_value_set(specialties(), what="JDV_J01.xml")
    problem = value_set.problem(Code("G15_10/SM99", "?", RADIO.scheme), "documents.author_specialty")
    assert problem == (
        "documents.author_specialty: 'G15_10/SM99' (code system 1.2.250.1.213.1.1.4.5) is not in the value "
        "set JDV_J01-test (1.2.3.4.1)"
    )


def test_a_code_known_under_another_code_system_says_which() -> None:
    value_set = parse_value_set(specialties(), what="JDV_J01.xml")
    problem = value_set.problem(Code("10", "Médecin", "1.2.250.1.213.1.1.4.5"), "documents.author_role")
    assert problem == (
        "documents.author_role: '10' is in the value set JDV_J01-test (1.2.3.4.1) under the "
        "code system 1.2.250.1.71.1.2.7, not 1.2.250.1.213.1.1.4.5"
    )


def test_a_described_value_set_of_a_multiple_value_sets_response_is_read() -> None:
    data = (
        specialties()
        .replace(b"<ValueSet ", b"<DescribedValueSet ")
        .replace(b"</ValueSet>", b"</DescribedValueSet>")
    )
    assert parse_value_set(data, what="x").problem(RADIO, "k") is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'<ClinicalDocument xmlns="urn:hl7-org:v3"/>', "is not one IHE SVS value set .* found 0"),
        (
            f'<RetrieveMultipleValueSetsResponse xmlns="{SVS_NS}"><ValueSet id="1.2"/><ValueSet id="1.3"/>'
            "</RetrieveMultipleValueSetsResponse>".encode(),
            "found 2",
        ),
        (svs("JDV_VIDE", "1.2.3", []), "the value set JDV_VIDE holds no concept"),
        (b"code;libelle\nSA01;Etablissement\n", "not well-formed XML"),
        (
            b'<?xml version="1.0"?><!DOCTYPE v [<!ENTITY a "aaaa">]><v>&a;</v>',
            "entity declarations are refused",
        ),
    ],
)
def test_what_is_not_one_usable_value_set_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(ValueSetError, match=message):
        parse_value_set(data, what="JDV.xml")
