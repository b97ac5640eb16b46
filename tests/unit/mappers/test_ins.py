"""INS matricule checking and decoding (MSSANTE.md §6), with ANS test identities and generated values."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mappers import ins
from mappers.errors import MappingError
from mappers.patient import Sex

from .samples import patient

ANS_TEST_IDENTITIES = ["279035121518989", "146026322000196", "162018885045327"]


@pytest.mark.parametrize("matricule", ANS_TEST_IDENTITIES)
def test_ans_test_identities_are_valid(matricule: str) -> None:
    decoded = ins.parse_matricule(matricule)
    assert decoded.value == matricule
    assert ins.is_valid_matricule(matricule)


def test_decodes_the_traits() -> None:
    decoded = ins.parse_matricule("279035121518989")
    assert decoded.sex is Sex.FEMALE
    assert (decoded.birth_yy, decoded.birth_month) == (79, 3)
    assert decoded.birth_year(2026) == 1979
    assert (decoded.department, decoded.commune, decoded.order, decoded.key) == ("51", "215", "189", 89)
    assert decoded.place_code == "51215"
    assert not decoded.born_abroad
    assert decoded.describe(2026) == "woman, born 1979-03, department 51, key 89"


def test_born_abroad_is_department_99_with_a_country_code() -> None:
    body = "2880799216001"
    matricule = body + f"{ins.compute_key(body):02d}"
    decoded = ins.parse_matricule(matricule)
    assert decoded.born_abroad
    assert decoded.country_code == "216"
    assert decoded.describe(2026) == (
        "woman, born 1988-07, department 99 (born abroad, country code 216), key 29"
    )


def test_spaces_and_case_are_tolerated() -> None:
    assert ins.parse_matricule(" 2 79 03 51 215 189 89 ").value == "279035121518989"
    assert ins.normalize("2 88 07 2a 123 456") == "28807" + "2A123456"


def test_wrong_key_says_which_key_was_expected() -> None:
    with pytest.raises(ins.InsKeyError, match="^key 89 expected, got 88$") as caught:
        ins.parse_matricule("279035121518988")
    assert (caught.value.expected, caught.value.got) == (89, 88)


def test_thirteen_characters_are_reported_as_missing_key() -> None:
    with pytest.raises(ins.InsMissingKeyError, match="key is missing") as caught:
        ins.parse_matricule("2790351215189")
    assert caught.value.expected_key == 89


@pytest.mark.parametrize(("department", "replacement"), [("2A", "19"), ("2B", "18")])
def test_corsican_departments(department: str, replacement: str) -> None:
    body = f"18807{department}123456"
    key = 97 - int(f"18807{replacement}123456") % 97
    decoded = ins.parse_matricule(f"{body}{key:02d}")
    assert decoded.department == department
    assert ins.compute_key(body) == key
    # The same digits with the numeric department give the other key: 2A is not just "19".
    with pytest.raises(ins.InsError):
        ins.parse_matricule(f"18807{replacement}123456{(key % 97) + 1:02d}")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("27903512151898", "15 characters"),
        ("2790351215189890", "got 16"),
        ("279X35121518989", "character 'X' at position 4 is not a digit"),
        ("2791351215189" + "00", "month 13 is not a month"),
        ("2790051215189" + "00", "month 0 is not a month"),
        ("27903512151898A", "not two digits"),
        ("2790300215189" + "00", "department 00"),
        ("27903512A5189" + "00", "position 9 is not a digit"),
        ("٢79035121518989", "position 1 is not a digit"),
    ],
)
def test_malformed_inputs_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ins.InsFormatError, match=message):
        ins.parse_matricule(text)
    assert not ins.is_valid_matricule(text)


def test_errors_are_mapping_errors() -> None:
    assert issubclass(ins.InsError, MappingError)


def test_sex_digit_alone_does_not_reject() -> None:
    # MSSANTE.md §6.2: special registrations use other first digits.
    body = "3790351215189"
    decoded = ins.parse_matricule(body + f"{ins.compute_key(body):02d}")
    assert decoded.sex is Sex.UNKNOWN
    assert decoded.describe(2026).startswith("sex digit 3, born 1979-03")


def test_birth_year_picks_the_century() -> None:
    decoded = ins.parse_matricule("162018885045327")
    assert decoded.birth_year(2026) == 1962
    body = "1250175123456"
    recent = ins.parse_matricule(body + f"{ins.compute_key(body):02d}")
    assert recent.birth_year(2026) == 2025
    assert recent.birth_year(2024) == 1925


def test_oids() -> None:
    assert ins.oid_name("1.2.250.1.213.1.4.8") == "INS-NIR"
    assert ins.oid_name("1.2.250.1.213.1.4.9") == "INS-NIA"
    assert ins.oid_name("1.2.250.1.213.1.4.10") == "INS-NIR-TEST"
    assert ins.oid_name("1.2.250.1.213.1.4.11") == "INS-NIR-DEMO"
    assert ins.oid_name("1.2.250.1.213.1.4.2") is None
    assert ins.is_test_oid(ins.TEST_OID) and ins.is_test_oid(ins.DEMO_OID)
    assert not ins.is_test_oid(ins.NIR_OID) and not ins.is_test_oid(ins.NIA_OID)
    assert ins.is_ins_oid(ins.NIA_OID) and not ins.is_ins_oid("1.2.3")


def test_citizen_address_both_ways() -> None:
    assert ins.citizen_address("2 79 03 51 215 189 89") == "279035121518989@patient.mssante.fr"
    assert ins.parse_citizen_address("<279035121518989@Patient.MSSante.FR>").value == "279035121518989"
    assert ins.is_citizen_address("279035121518989@PATIENT.mssante.fr")
    assert not ins.is_citizen_address("dr.x@hopital.mssante.fr")
    with pytest.raises(ins.CitizenAddressError, match="not patient.mssante.fr"):
        ins.parse_citizen_address("279035121518989@mssante.fr")
    with pytest.raises(ins.CitizenAddressError, match="no @"):
        ins.parse_citizen_address("279035121518989")
    with pytest.raises(ins.InsKeyError):
        ins.parse_citizen_address("279035121518988@patient.mssante.fr")
    with pytest.raises(ins.InsKeyError):
        ins.citizen_address("279035121518988")


def test_mask_never_reveals_the_matricule() -> None:
    assert ins.mask("279035121518989") == "2************89"
    assert ins.mask("2 79 03 51 215 189 89") == "2************89"
    assert ins.mask("2790351215189") == "*" * 13
    assert ins.mask("") == ""


def test_qualified_identity() -> None:
    assert ins.is_qualified(patient())
    assert not ins.is_qualified(None)
    assert not ins.is_qualified(patient(birth_date=None))
    assert not ins.is_qualified(patient(sex=Sex.UNKNOWN))
    assert not ins.is_qualified(patient(given_name=""))
    assert not ins.is_qualified(patient(matricule="279035121518988"))
    assert not ins.is_qualified(patient(oid="1.2.250.1.213.1.4.2"))
    # NIA: no published key rule, only the shape is checked.
    assert ins.is_qualified(patient(oid=ins.NIA_OID, matricule="279035121518988"))
    assert not ins.is_qualified(patient(oid=ins.NIA_OID, matricule="2790351"))


# --- property tests -------------------------------------------------------------------------------

_departments = st.one_of(st.integers(1, 99).map(lambda n: f"{n:02d}"), st.sampled_from(["2A", "2B"]))
bodies = st.builds(
    lambda sex, yy, month, dept, rest: f"{sex}{yy:02d}{month:02d}{dept}{rest:06d}",
    st.sampled_from("12345678"),
    st.integers(0, 99),
    st.integers(1, 12),
    _departments,
    st.integers(0, 999_999),
)


@given(bodies)
def test_generated_valid_matricules_round_trip(body: str) -> None:
    matricule = body + f"{ins.compute_key(body):02d}"
    decoded = ins.parse_matricule(matricule)
    assert decoded.value == matricule
    assert 1 <= decoded.key <= 97
    assert ins.parse_citizen_address(ins.citizen_address(matricule)) == decoded
    spaced = " ".join(matricule[i : i + 3] for i in range(0, 15, 3)).lower()
    assert ins.parse_matricule(spaced) == decoded
    masked = ins.mask(matricule)
    assert len(masked) == 15 and masked[1:13] == "*" * 12


@given(bodies, st.integers(0, 99))
def test_generated_wrong_keys_are_refused_with_the_right_key(body: str, key: int) -> None:
    expected = ins.compute_key(body)
    if key == expected:
        return
    with pytest.raises(ins.InsKeyError) as caught:
        ins.parse_matricule(f"{body}{key:02d}")
    assert str(caught.value) == f"key {expected:02d} expected, got {key:02d}"


@given(bodies, st.integers(0, 14), st.characters(codec="ascii"))
def test_generated_single_substitutions_are_caught(body: str, position: int, char: str) -> None:
    """A one-character typo is always detected (the point of the key), or reported as malformed."""
    matricule = body + f"{ins.compute_key(body):02d}"
    typo = matricule[:position] + char + matricule[position + 1 :]
    if ins.normalize(typo) == matricule or char.isspace():
        return
    if position in (5, 6) and ins.normalize(typo)[5:7] in ("2A", "2B", "19", "18"):
        return  # 19 <-> 2A and 18 <-> 2B share a key by construction (CNAM rule)
    with pytest.raises(ins.InsError):
        ins.parse_matricule(typo)


@given(st.text(max_size=30))
def test_arbitrary_text_never_crashes(text: str) -> None:
    try:
        decoded = ins.parse_matricule(text)
    except ins.InsError as error:
        assert str(error)
    else:
        assert len(decoded.value) == 15


def test_mask_address() -> None:
    assert ins.mask_address("279035121518989@patient.mssante.fr") == "2************89@patient.mssante.fr"
    assert ins.mask_address("dr.x@hopital.mssante.fr") == "dr.x@hopital.mssante.fr"


def test_check_patient_id_sentences_are_masked() -> None:
    assert ins.check_patient_id("279035121518989", ins.TEST_OID) is None
    assert ins.check_patient_id("279035121518989", ins.NIA_OID) is None
    assert ins.check_patient_id("279035121518988", ins.NIR_OID) == (
        "INS 2************88 is not a valid matricule: key 89 expected, got 88"
    )
    assert ins.check_patient_id("1234", "1.2.3") == (
        "patient id **** is not an INS: OID 1.2.3 is not an INS authority"
    )
    assert ins.check_patient_id("12", ins.NIA_OID) == "INS-NIA ** has 2 characters, not 15"


@given(st.text(alphabet="0123456789AB ", min_size=13, max_size=17))
def test_error_messages_never_quote_the_matricule(text: str) -> None:
    value = ins.normalize(text)
    try:
        ins.parse_matricule(text)
    except ins.InsError as error:
        assert value[:13] not in str(error)


@given(bodies, st.integers(0, 99).filter(lambda m: not 1 <= m <= 12))
def test_generated_impossible_months_are_named(body: str, month: int) -> None:
    wrong = body[:3] + f"{month:02d}" + body[5:]
    with pytest.raises(ins.InsFormatError, match=f"^month {month} is not a month$"):
        ins.parse_matricule(wrong + "00")


@given(bodies, st.integers(0, 13))
def test_generated_adjacent_transpositions_are_caught(body: str, position: int) -> None:
    """Mod 97 catches every swap of two different adjacent digits (97 is prime and above 9 × 10)."""
    matricule = body + f"{ins.compute_key(body):02d}"
    first, second = matricule[position], matricule[position + 1]
    if first == second or not (first + second).isdigit() or position in (4, 5, 6):
        return
    swapped = matricule[:position] + second + first + matricule[position + 2 :]
    with pytest.raises(ins.InsError):
        ins.parse_matricule(swapped)


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ("180072A123456", "department 2A (Corse-du-Sud)"),
        ("280072B123456", "department 2B (Haute-Corse)"),
        ("180079740512", "department 974 (La Réunion)"),
        ("285119880123", "department 988 (Nouvelle-Calédonie)"),
    ],
)
def test_corsica_and_overseas_departments_are_named(body: str, where: str) -> None:
    body = body.ljust(13, "3")
    decoded = ins.parse_matricule(f"{body}{ins.compute_key(body):02d}".lower())
    assert decoded.value == decoded.value.upper()
    assert f", {where}, key {decoded.key:02d}" in decoded.describe(2026)
