"""The trust list mapper: ANS XML in, IDNA-normalised domains out; anything unusable is refused whole."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mappers.trustlist import NAMESPACE, TrustListError, normalise_domain, parse_trust_list

SAMPLE = Path(__file__).parents[2] / "data" / "trustlist" / "listeblanche.xml"


def trust_list_xml(*names: str, namespace: str = NAMESPACE) -> bytes:
    entries = "".join(f"<Domaine><Nom>{name}</Nom></Domaine>" for name in names)
    return f'<?xml version="1.0"?><ListeBlanche xmlns="{namespace}">{entries}</ListeBlanche>'.encode()


def test_the_sample_list_gives_normalised_domains_including_a_unicode_one() -> None:
    parsed = parse_trust_list(SAMPLE.read_bytes())
    assert parsed.domains == {
        "mssante.fr",
        "ch-exemple.mssante.fr",
        "xn--hpital-rgional-ikb2o.mssante.fr",
        "cabinet.test.mssante.fr",
    }
    assert parsed.rejected == ()


def test_unicode_upper_case_and_a_trailing_dot_compare_equal() -> None:
    assert normalise_domain("Hôpital-Régional.MSSANTE.fr.") == normalise_domain(
        "xn--hpital-rgional-ikb2o.mssante.fr"
    )


def test_entries_that_are_not_domain_names_are_set_aside_and_reported() -> None:
    parsed = parse_trust_list(trust_list_xml("ok.mssante.fr", "not a domain", "single", "-bad-.fr"))
    assert parsed.domains == {"ok.mssante.fr"}
    assert parsed.rejected == ("not a domain", "single", "-bad-.fr")


@pytest.mark.parametrize(
    ("data", "said"),
    [
        (trust_list_xml(), "no Domaine/Nom entry"),
        (trust_list_xml("x.fr", namespace="urn:other"), "no Domaine/Nom entry"),
        (trust_list_xml("not a domain"), "1 entries, none a domain name"),
        (b"<ListeBlanche><Domaine>", "not well-formed"),
        (b"", "not well-formed"),
    ],
    ids=["empty", "wrong-namespace", "no-valid-entry", "truncated", "nothing"],
)
def test_an_empty_or_malformed_list_is_refused(data: bytes, said: str) -> None:
    with pytest.raises(TrustListError, match=said):
        parse_trust_list(data)


def test_entity_tricks_are_refused_before_expansion() -> None:
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
        b'<ListeBlanche xmlns="https://listeblanche.mssante.fr/schema"><Domaine><Nom>&b;.fr</Nom></Domaine>'
        b"</ListeBlanche>"
    )
    with pytest.raises(TrustListError, match="entity"):
        parse_trust_list(bomb)


_LABEL = st.from_regex(r"[a-zàéèôç0-9]([a-zàéèôç0-9-]{0,10}[a-zàéèôç0-9])?", fullmatch=True)


@given(st.lists(_LABEL, min_size=2, max_size=4))
def test_normalising_is_idempotent_and_ignores_case(labels: list[str]) -> None:
    name = ".".join(labels)
    try:
        normal = normalise_domain(name)
    except TrustListError:
        return  # a label IDNA refuses (e.g. "--" in positions 3–4); the property is about accepted ones
    assert normalise_domain(normal) == normal
    assert normalise_domain(name.upper()) == normal
    assert normal.isascii() and normal == normal.lower()


@given(st.text(max_size=60))
def test_any_text_is_either_a_domain_or_a_trust_list_error(text: str) -> None:
    try:
        normal = normalise_domain(text)
    except TrustListError:
        return
    assert normal.isascii() and len(normal) <= 253


def _by_idna(name: str) -> str | None:
    """What the IDNA codec and the label rules make of ``name`` (None: refused), the fast path aside."""
    text = name.strip().rstrip(".")
    try:
        ascii_form = text.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return None
    labels = ascii_form.split(".")
    valid = all(
        0 < len(label) <= 63
        and label[0] != "-"
        and label[-1] != "-"
        and all(c.isalnum() or c == "-" for c in label)
        for label in labels
    )
    spaced = any(c.isspace() for c in text)
    return (
        ascii_form if text and not spaced and valid and len(labels) >= 2 and len(ascii_form) <= 253 else None
    )


@given(
    st.lists(st.text(alphabet="aZ09-_ .Kä", min_size=0, max_size=66), min_size=1, max_size=5).map(".".join)
)
def test_a_plain_ascii_name_reads_as_the_idna_codec_reads_it(name: str) -> None:
    try:
        found: str | None = normalise_domain(name)
    except TrustListError:
        found = None
    assert found == _by_idna(name)
