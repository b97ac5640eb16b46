"""The directory in the store, on SQLite and PostgreSQL: a generation loaded beside the one in force and
switched in one transaction, duplicated addresses folded with every role, searches on the current one."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import text

from gateway.store.db import Store, open_store
from gateway.store.directory import SearchQuery
from gateway.store.tables import SCHEMA_VERSION, Delivery, Message
from mappers.directory import DirectoryReader
from tests.support.directory import HEADER, SAMPLE_LINES, generated_lines, line

NOW = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)


def load(store: Store, *lines: str) -> int:
    generation = store.directory.begin_import("test", None, None, NOW)
    counts = store.directory.load(generation, DirectoryReader(f"{x}\n".encode() for x in (HEADER, *lines)))
    store.directory.publish(generation, counts, NOW)
    return generation


def found(store: Store, *words: str, **filters: str) -> list[str]:
    return [e.address for e in store.directory.search(SearchQuery(words=words, **filters))]


def test_a_loaded_directory_is_searched_on_the_start_of_any_word(store: Store) -> None:
    load(store, *SAMPLE_LINES)
    current = store.directory.current()
    assert current is not None and (current.lines, current.addresses, current.duplicates) == (6, 5, 1)
    assert found(store, "lefe") == ["marie.lefevre@chu-exemple.mssante.fr"]
    assert found(store, "marie", "neonat") == ["marie.lefevre@chu-exemple.mssante.fr"]
    assert found(store, "ledu") == [] and found(store, "le", "du") == ["yann.le-du@medecin.mssante.fr"]
    assert found(store, "medecin", department="75") == ["dr.martin@medecin.mssante.fr"]
    assert found(store, "cardio") == [
        "secretariat.cardio@chu-exemple.mssante.fr",
        "jean.dupont@medecin.mssante.fr",
    ]
    assert found(store, "42") == [
        "secretariat.cardio@chu-exemple.mssante.fr",
        "marie.lefevre@chu-exemple.mssante.fr",
    ]


def test_filters_match_every_role_of_a_mailbox(store: Store) -> None:
    load(store, *SAMPLE_LINES)
    assert found(store, speciality="neonatologie") == ["marie.lefevre@chu-exemple.mssante.fr"]
    assert found(store, speciality="Pédiatrie", city="saint etienne") == [
        "marie.lefevre@chu-exemple.mssante.fr"
    ]
    assert found(store, "sophie", profession="médecin", city="PARIS") == ["dr.martin@medecin.mssante.fr"]
    assert found(store, "sophie", profession="infirmier") == []


def test_a_duplicated_address_is_one_entry_with_every_role(store: Store) -> None:
    load(store, *SAMPLE_LINES)
    shown = store.directory.show("Marie.Lefevre@CHU-exemple.mssante.fr")
    assert shown is not None and shown.holder == "MME Marie-Hélène LEFÈVRE"
    assert [(r.speciality, r.organisation, r.service) for r in shown.roles] == [
        ("Pédiatrie", "CHU de Saint-Étienne", ""),
        ("Néonatologie", "Clinique du Forez", "Maternité"),
    ]
    assert store.directory.show("nobody@medecin.mssante.fr") is None
    assert store.directory.knows("MARIE.lefevre@chu-exemple.mssante.fr")


def test_a_new_import_replaces_the_old_one_whose_rows_are_removed(store: Store) -> None:
    first = load(store, *SAMPLE_LINES)
    second = load(store, line(address="new@medecin.mssante.fr", last_name="NOUVEAU"))
    assert store.directory.current().id == second  # type: ignore[union-attr]
    assert found(store, "nouveau") == ["new@medecin.mssante.fr"] and found(store, "lefevre") == []
    assert [(i.id, i.state) for i in store.directory.imports()] == [(second, "current"), (first, "replaced")]
    assert store.directory.knows("jean.dupont@medecin.mssante.fr") is False


def test_a_generation_being_loaded_is_invisible_until_published(store: Store) -> None:
    load(store, *SAMPLE_LINES)
    generation = store.directory.begin_import("test", None, None, NOW)
    store.directory.load(
        generation, DirectoryReader(iter([HEADER.encode(), line(last_name="CACHÉ").encode()]))
    )
    assert found(store, "cache") == [] and found(store, "lefevre") != []
    store.directory.discard(generation, "refused", "too small", None, NOW)
    assert [(i.id, i.state, i.reason) for i in store.directory.imports(1)] == [
        (generation, "refused", "too small")
    ]
    assert found(store, "lefevre") != []


def test_suggestions_come_from_the_same_domain_and_the_same_start(store: Store) -> None:
    load(
        store,
        *SAMPLE_LINES,
        line(address="dr.martini@medecin.mssante.fr"),
        line(address="zz@medecin.mssante.fr"),
    )
    assert sorted(store.directory.neighbours("dr.martn@medecin.mssante.fr")) == [
        "dr.martin@medecin.mssante.fr",
        "dr.martini@medecin.mssante.fr",
    ]


def test_without_any_import_nothing_is_known(store: Store) -> None:
    assert store.directory.current() is None and found(store, "jean") == []
    assert store.directory.knows("jean.dupont@medecin.mssante.fr") is None


def test_a_store_of_schema_version_3_gets_the_directory_tables(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/old.db"
    opened = open_store(url)
    with opened.engine.begin() as connection:
        for table in ("directory_terms", "directory_roles", "directory_entries", "directory_imports"):
            connection.execute(text(f"DROP TABLE {table}"))
        # Nor what later versions added (the ZAM of schema 5, the MDMs of schema 6).
        connection.execute(text("DROP TABLE hl7_mdms"))
        connection.execute(text("DROP TABLE hl7_zams"))
        connection.execute(text("ALTER TABLE hl7_transmissions DROP COLUMN zam_events"))
        connection.execute(text("UPDATE schema_version SET version = 3"))
    opened.close()
    opened = open_store(url)
    try:
        load(opened, *SAMPLE_LINES)
        assert found(opened, "lefevre") == ["marie.lefevre@chu-exemple.mssante.fr"]
        with opened.sessions() as session:
            assert session.execute(text("SELECT version FROM schema_version")).scalar() == SCHEMA_VERSION
    finally:
        opened.close()


def test_an_address_delivered_to_before_is_known_to_the_queue(store: Store) -> None:
    assert not store.repository.delivered_to("liste.rouge@medecin.mssante.fr")
    with store.sessions.begin() as session:
        message = Message(
            direction="outbound", source="cli", digest="0" * 64, envelope_from="a@b.fr", size=1, raw=b"x",
            created_at=NOW,
        )  # fmt: skip
        session.add(message)
        session.flush()
        for recipient, sent in (
            ("Liste.Rouge@medecin.mssante.fr", NOW),
            ("pending@medecin.mssante.fr", None),
        ):
            session.add(
                Delivery(
                    message_pk=message.id, recipient=recipient, state="sent" if sent else "queued",
                    next_attempt_at=NOW, created_at=NOW, updated_at=NOW, sent_at=sent,
                )
            )  # fmt: skip
    assert store.repository.delivered_to("liste.rouge@medecin.mssante.fr")
    assert not store.repository.delivered_to("pending@medecin.mssante.fr")


def test_searches_of_several_words_find_what_the_words_of_each_entry_say(store: Store) -> None:
    # 6,000 lines: more words than one copy of the staged words (SQLite), duplicated addresses, common
    # words ranked against rare ones, prefixes standing for one word or for many, a word found nowhere.
    # 40 names starting "zed" (more words than a prefix is expanded to), 5 of them with a rare first name.
    lines = [
        *generated_lines(6000),
        *(
            line(
                address=f"zed{i}@medecin.mssante.fr",
                last_name=f"ZED{i:02d}",
                first_name="Quentin" if i < 5 else "Paul",
            )
            for i in range(40)
        ),
    ]
    load(store, *lines)
    words: dict[str, set[str]] = {}
    for entry in DirectoryReader(f"{x}\n".encode() for x in (HEADER, *lines)):
        words.setdefault(entry.address, set()).update(entry.terms())
    with store.sessions() as session:
        assert session.execute(text("SELECT count(*) FROM directory_terms")).scalar() == sum(
            len(terms) for terms in words.values()
        )
    for query in (
        ("dupont", "jean"),
        ("moreau", "sophie", "paris"),
        ("roux", "42"),
        ("m", "lyon"),
        ("le", "go"),
    ):
        expected = sorted(
            address
            for address, terms in words.items()
            if all(any(term.startswith(word) for term in terms) for word in query)
        )
        got = [e.address for e in store.directory.search(SearchQuery(words=query, limit=len(words)))]
        assert sorted(got) == expected and expected, query
    assert found(store, "dupont", "nowhere") == []
