"""Directory files in the format of the ANS "Extraction Correspondance MSSanté" (MSSANTE.md §10), made up.

Every name, address and identifier here is invented; the shape (header, 31 ``|``-separated columns, UTF-8,
PER and ORG lines, addresses on several lines) is the published one. ``generated_lines`` writes a file the
size of the real one for the benchmark without holding it in memory.
"""

from __future__ import annotations

import contextlib
import random
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from mappers.directory import COLUMNS, normalise

HEADER = "|".join(COLUMNS)
FILE_NAME = "Extraction_Correspondance_MSSante_202612060300.txt"

_FIELDS = (
    "type",
    "address",
    "pp_id_type",
    "pp_id",
    "pp_national_id",
    "structure_id_type",
    "structure_id",
    "service",
    "civility",
    "last_name",
    "first_name",
    "category_code",
    "category_label",
    "profession_code",
    "profession_label",
    "skill_code",
    "skill_label",
    "dematerialisation",
    "organisation",
    "trade_name",
    "l2",
    "l3",
    "street_number",
    "street_number_complement",
    "street_type",
    "street_name",
    "l5",
    "routing_line",
    "postal_code",
    "department",
    "country",
)
assert len(_FIELDS) == len(COLUMNS)


def line(**values: Any) -> str:
    """One data line: a cardiologist in Lyon unless told otherwise (keys are the names in ``_FIELDS``)."""
    defaults = {
        "type": "PER",
        "address": "jean.dupont@medecin.mssante.fr",
        "pp_id_type": "8",
        "pp_id": "810000000001",
        "pp_national_id": "810000000001",
        "structure_id_type": "",
        "structure_id": "",
        "service": "",
        "civility": "DR",
        "last_name": "DUPONT",
        "first_name": "Jean",
        "category_code": "C",
        "category_label": "Civil",
        "profession_code": "10",
        "profession_label": "Médecin",
        "skill_code": "SM04",
        "skill_label": "Cardiologie et maladies vasculaires",
        "dematerialisation": "O",
        "organisation": "Cabinet du Dr Dupont",
        "trade_name": "",
        "l2": "",
        "l3": "",
        "street_number": "12",
        "street_number_complement": "",
        "street_type": "R",
        "street_name": "de la République",
        "l5": "",
        "routing_line": "69003 LYON",
        "postal_code": "69003",
        "department": "69",
        "country": "France",
    }
    unknown = set(values) - set(defaults)
    assert not unknown, f"unknown directory fields {unknown}"
    defaults.update({k: str(v) for k, v in values.items()})
    return "|".join(defaults[name] for name in _FIELDS)


def write_file(path: Path, lines: Iterable[str], *, header: str = HEADER, zipped: bool = False) -> Path:
    """The file at ``path`` (CRLF line ends, as the ANS writes); a ZIP holding it with ``zipped``. Written
    line by line: the benchmark's file is as large as the real one, and a child process's peak memory
    counts its parent's at the fork."""
    with contextlib.ExitStack() as stack:
        if zipped:
            archive = stack.enter_context(zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED))
            handle = stack.enter_context(archive.open(FILE_NAME, "w"))
        else:
            handle = stack.enter_context(path.open("wb"))
        handle.write(f"{header}\r\n".encode())
        for item in lines:
            handle.write(f"{item}\r\n".encode())
    return path


SAMPLE_LINES = (
    line(),
    line(
        address="marie.lefevre@chu-exemple.mssante.fr",
        pp_id="810000000002",
        pp_national_id="810000000002",
        civility="MME",
        last_name="LEFÈVRE",
        first_name="Marie-Hélène",
        skill_label="Pédiatrie",
        skill_code="SM40",
        organisation="CHU de Saint-Étienne",
        routing_line="42055 SAINT-ÉTIENNE CEDEX 2",
        postal_code="42055",
        department="42",
    ),
    # The same address on a second line: another role, kept with the first.
    line(
        address="marie.lefevre@chu-exemple.mssante.fr",
        pp_id="810000000002",
        pp_national_id="810000000002",
        civility="MME",
        last_name="LEFÈVRE",
        first_name="Marie-Hélène",
        skill_label="Néonatologie",
        skill_code="SM41",
        service="Maternité",
        organisation="Clinique du Forez",
        routing_line="42600 MONTBRISON",
        postal_code="42600",
        department="42",
    ),
    line(
        type="ORG",
        address="secretariat.cardio@chu-exemple.mssante.fr",
        pp_id_type="",
        pp_id="",
        pp_national_id="",
        civility="",
        last_name="",
        first_name="",
        category_code="",
        category_label="",
        profession_code="",
        profession_label="",
        skill_code="",
        skill_label="",
        structure_id_type="1",
        structure_id="420000000001",
        service="Cardiologie",
        organisation="CHU de Saint-Étienne",
        routing_line="42055 SAINT-ÉTIENNE CEDEX 2",
        postal_code="42055",
        department="42",
    ),
    line(
        address="yann.le-du@medecin.mssante.fr",
        pp_id="810000000003",
        pp_national_id="810000000003",
        last_name="LE DÛ",
        first_name="Yann",
        skill_label="Médecine générale",
        skill_code="SM54",
        organisation="Maison de santé de Quimper",
        routing_line="29000 QUIMPER",
        postal_code="29000",
        department="29",
    ),
    line(
        address="dr.martin@medecin.mssante.fr",
        pp_id="810000000004",
        pp_national_id="810000000004",
        last_name="MARTIN",
        first_name="Sophie",
        skill_label="Médecine générale",
        skill_code="SM54",
        organisation="",
        routing_line="75013 PARIS",
        postal_code="75013",
        department="75",
    ),
)


_LAST = (
    "MARTIN",
    "BERNARD",
    "DUBOIS",
    "THOMAS",
    "ROBERT",
    "RICHARD",
    "PETIT",
    "DURAND",
    "LEROY",
    "MOREAU",
    "SIMON",
    "LAURENT",
    "LEFÈVRE",
    "MICHEL",
    "GARCIA",
    "DAVID",
    "BERTRAND",
    "ROUX",
    "VINCENT",
    "FOURNIER",
    "MOREL",
    "GIRARD",
    "ANDRÉ",
    "MERCIER",
    "DUPONT",
    "LAMBERT",
    "BONNET",
    "FRANÇOIS",
    "MARTINEZ",
    "LE GOFF",
)
_FIRST = (
    "Jean",
    "Marie",
    "Pierre",
    "Anne",
    "Michel",
    "Sophie",
    "Hélène",
    "François",
    "Zoé",
    "Jérôme",
    "Cécile",
    "Loïc",
    "Gaëlle",
    "Noël",
    "Benoît",
    "Élodie",
    "Agnès",
    "Raphaël",
    "Inès",
    "Océane",
)
_PROFESSIONS = (
    ("10", "Médecin"),
    ("40", "Chirurgien-dentiste"),
    ("50", "Sage-femme"),
    ("60", "Infirmier"),
    ("21", "Pharmacien"),
    ("70", "Masseur-kinésithérapeute"),
)
_SKILLS = (
    ("SM54", "Médecine générale"),
    ("SM04", "Cardiologie et maladies vasculaires"),
    ("SM40", "Pédiatrie"),
    ("SM26", "Psychiatrie"),
    ("SM15", "Gynécologie-obstétrique"),
    ("", ""),
)
_TOWNS = (
    ("69003", "LYON", "69"),
    ("75013", "PARIS", "75"),
    ("13005", "MARSEILLE", "13"),
    ("42000", "SAINT-ÉTIENNE", "42"),
    ("29000", "QUIMPER", "29"),
    ("31000", "TOULOUSE", "31"),
    ("97200", "FORT-DE-FRANCE", "972"),
    ("20000", "AJACCIO", "2A"),
    ("67000", "STRASBOURG", "67"),
)
_DOMAINS = (
    "medecin.mssante.fr",
    "pharmacien.mssante.fr",
    "infirmier.mssante.fr",
    "chu-exemple.mssante.fr",
    "ch-exemple.mssante.fr",
    "clinique-exemple.mssante.fr",
)


def generated_lines(count: int, seed: int = 15, duplicates: int = 170) -> Iterator[str]:
    """``count`` data lines shaped like the real file (about 170 bytes each, ~90 MB for 535,000 lines),
    ``duplicates`` of them repeating an earlier address with another role."""
    rng = random.Random(seed)
    duplicates = min(duplicates, count // 100)
    every = count // duplicates if duplicates else count + 1
    for number in range(count):
        index = number - 1 if number % every == every - 1 else number
        rng_line = random.Random(index * 7919 + seed)
        last, first = rng_line.choice(_LAST), rng_line.choice(_FIRST)
        postal, town, department = rng_line.choice(_TOWNS)
        code, profession = rng_line.choice(_PROFESSIONS)
        skill_code, skill = rng.choice(_SKILLS)
        local = normalise(f"{first} {last}").replace(" ", ".")
        organisation = rng.choice(("Cabinet médical", "Centre hospitalier", "Clinique", "Maison de santé"))
        yield line(
            type="PER" if index % 9 else "ORG",
            address=f"{local}.{index}@{rng_line.choice(_DOMAINS)}",
            pp_id=f"81{index:010d}",
            pp_national_id=f"81{index:010d}",
            last_name=last,
            first_name=first,
            profession_code=code,
            profession_label=profession,
            skill_code=skill_code,
            skill_label=skill,
            organisation=f"{organisation} de {town.title()}",
            street_number=str(rng.randint(1, 200)),
            street_name=rng.choice(("de la République", "Victor Hugo", "du Général de Gaulle", "Pasteur")),
            routing_line=f"{postal} {town}",
            postal_code=postal,
            department=department,
        )
