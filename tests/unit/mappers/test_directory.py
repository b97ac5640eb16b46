"""The directory extraction mapper: header checked, 31 columns per line, every problem named with its line,
searches that ignore accents and case, suggestions one typo away."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mappers.directory import (
    COLUMNS,
    DirectoryFormatError,
    DirectoryReader,
    closest,
    edit_distance,
    normalise,
    query_words,
    search_words,
)
from tests.support.directory import HEADER, SAMPLE_LINES, line


def read(*lines: str, header: str = HEADER) -> tuple[list[str], DirectoryReader]:
    reader = DirectoryReader(f"{item}\r\n".encode() for item in (header, *lines))
    return [entry.address for entry in reader], reader


def test_the_sample_lines_give_entries_with_their_roles_and_place() -> None:
    reader = DirectoryReader(f"{item}\n".encode() for item in (HEADER, *SAMPLE_LINES))
    entries = list(reader)
    assert reader.problems == [] and reader.lines == len(SAMPLE_LINES)
    marie = entries[1]
    assert marie.address == "marie.lefevre@chu-exemple.mssante.fr" and marie.line == 3
    assert marie.holder == "MME Marie-Hélène LEFÈVRE"
    assert marie.role.skill_label == "Pédiatrie" and marie.city == "SAINT-ÉTIENNE CEDEX 2"
    assert {"lefevre", "marie", "helene", "pediatrie", "saint", "etienne", "42055", "42"} <= marie.terms()
    service = entries[3]
    assert service.mailbox_type == "ORG" and service.holder == "CHU de Saint-Étienne"
    assert "cardiologie" in service.terms()


def test_accents_case_and_punctuation_do_not_count() -> None:
    assert normalise("SAINT-ÉTIENNE") == normalise("saint etienne") == "saint etienne"
    assert normalise("Le Dû") == "le du"
    assert normalise("Œdème Cœur") == "oedeme coeur"
    assert search_words("Centre hospitalier de la Côte") == ("centre", "hospitalier", "cote")
    assert query_words("centre de la côte") == ("centre", "cote")
    assert query_words("Le Dû") == ("le", "du") and query_words("d l") == ()


@given(st.text())
def test_a_normalised_text_is_plain_words_and_stays_as_it_is(text: str) -> None:
    folded = normalise(text)
    assert all(word.isascii() and word.isalnum() and word == word.lower() for word in folded.split())
    assert normalise(folded) == folded
    assert "  " not in folded


def test_a_file_without_a_header_or_with_another_one_is_refused() -> None:
    with pytest.raises(DirectoryFormatError, match="the file is empty"):
        list(DirectoryReader(iter([])))
    with pytest.raises(DirectoryFormatError, match="line 1: the header has 3 columns"):
        read(line(), header="a|b|c")
    shifted = "|".join(("Adresse BAL", "Type de BAL", *COLUMNS[2:]))
    with pytest.raises(DirectoryFormatError, match="line 1: column 1 is 'Adresse BAL'"):
        read(line(), header=shifted)


def test_a_header_with_a_byte_order_mark_and_other_spellings_of_the_titles_is_read() -> None:
    header = "\ufeff" + HEADER.replace("Civilité d'exercice", "Civilite exercice").upper()
    addresses, reader = read(line(), header=header)
    assert addresses == ["jean.dupont@medecin.mssante.fr"] and reader.problems == []


def test_every_bad_line_is_named_with_its_number_and_the_good_ones_are_read() -> None:
    truncated = line(address="cut@medecin.mssante.fr")[:40]
    addresses, reader = read(
        line(),
        line(address="a@medecin.mssante.fr") + "|extra",
        truncated,
        line(type="XYZ", address="b@medecin.mssante.fr"),
        line(address="not an address"),
        line(address="c@medecin.mssante.fr"),
    )
    assert addresses == ["jean.dupont@medecin.mssante.fr", "c@medecin.mssante.fr"]
    assert reader.problem_count == 4 and reader.lines == 6
    assert reader.problems[0] == "line 3: 32 columns, expected 31"
    assert reader.problems[1].startswith("line 4: ") and "columns, expected 31" in reader.problems[1]
    assert reader.problems[2].startswith("line 5: mailbox type 'XYZ'")
    assert reader.problems[3].startswith("line 6: 'not an address' is not a valid mail address")


def test_a_line_that_is_not_utf8_is_named() -> None:
    reader = DirectoryReader(iter([HEADER.encode(), line(last_name="LEFÈVRE").encode("latin-1")]))
    assert list(reader) == [] and reader.problems[0].startswith("line 2: not UTF-8")


def test_problems_beyond_the_limit_are_counted_not_kept() -> None:
    reader = DirectoryReader((item.encode() for item in (HEADER, *["x|y"] * 30)), max_problems=5)
    assert list(reader) == [] and len(reader.problems) == 5 and reader.problem_count == 30


def test_addresses_are_compared_in_lower_case() -> None:
    addresses, _ = read(line(address="Jean.DUPONT@Medecin.MSSante.fr"))
    assert addresses == ["jean.dupont@medecin.mssante.fr"]


_field = st.text(st.characters(blacklist_characters="|\r\n", blacklist_categories=("Cs",)), max_size=20)


@given(last=_field, first=_field, city=_field)
def test_any_field_values_without_the_separator_make_one_entry_whose_words_are_normalised(
    last: str, first: str, city: str
) -> None:
    addresses, reader = read(line(last_name=last, first_name=first, routing_line=f"75013 {city}"))
    assert addresses == ["jean.dupont@medecin.mssante.fr"] and reader.problems == []
    entry = next(iter(DirectoryReader(iter([HEADER.encode(), line(last_name=last).encode()]))))
    assert entry.last_name == last.strip()
    assert all(word == normalise(word) and len(word) > 1 for word in entry.terms())


@given(st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=5))
def test_any_column_count_but_31_is_a_named_problem(counts: list[int]) -> None:
    lines = ["|".join(["PER", "a@b.fr", *["x"] * max(n - 2, 0)])[: None if n else 0] for n in counts]
    lines = [text for text, n in zip(lines, counts, strict=True) if n != len(COLUMNS) and text]
    _, reader = read(*lines)
    assert reader.problem_count == len(lines)
    assert all(problem.startswith(f"line {i + 2}: ") for i, problem in enumerate(reader.problems))


@given(st.text(alphabet="abcdefgh", max_size=8), st.text(alphabet="abcdefgh", max_size=8))
def test_the_edit_distance_is_a_distance_bounded_by_the_limit(left: str, right: str) -> None:
    exact = edit_distance(left, right, 100)
    assert exact == edit_distance(right, left, 100)
    assert (exact == 0) == (left == right)
    assert edit_distance(left, right, 2) == min(exact, 3)


def test_suggestions_are_of_the_same_domain_and_nearest_first() -> None:
    candidates = [
        "dr.martin@medecin.mssante.fr",
        "dr.martini@medecin.mssante.fr",
        "dr.marton@autre.mssante.fr",
        "dr.dupont@medecin.mssante.fr",
        "dr.mrtn@medecin.mssante.fr",
    ]
    assert closest("dr.martn@medecin.mssante.fr", candidates) == (
        "dr.martin@medecin.mssante.fr",
        "dr.mrtn@medecin.mssante.fr",
        "dr.martini@medecin.mssante.fr",
    )
    assert closest("dr.martin@medecin.mssante.fr", candidates, limit=1) == ("dr.martini@medecin.mssante.fr",)
