"""The ANS "Extraction Correspondance MSSanté": lines of the national directory → entries, search terms.

Pure: byte lines in, entries out (MSSANTE.md §10: UTF-8, ``|``-separated, one header line, 31 columns; the
address is the key, PER and ORG mailboxes only). The gateway (``gateway.directory``) fetches the file and
the store keeps it; this module never opens a file. A line that cannot be read is named with its line number
and the reader goes on, so one run reports every problem (up to a limit) and the importer refuses the file.

Searching is accent- and case-insensitive because the importer stores ``normalise``d forms: professionals
type ``ledu`` for « Le Dû », ``st etienne`` for « SAINT-ÉTIENNE »… (the seeds' directory search). Terms are
the words of the names, labels, organisation, city, postal code and department of an entry; a search word
matches the start of a term.

Public API (stable):
    COLUMNS: tuple[str, ...]
    DirectoryFormatError
    DirectoryEntry, DirectoryReader(lines: Iterable[bytes], max_problems=20)
    normalise(text) -> str; search_words(text), query_words(text) -> tuple[str, ...]
    edit_distance(a, b, limit) -> int
    closest(address, candidates, limit=3, max_distance=2) -> tuple[str, ...]
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Final

from mappers.addresses import check_address
from mappers.errors import MappingError

COLUMNS: Final = (
    "Type de BAL",
    "Adresse BAL",
    "Type Identifiant PP",
    "Identifiant PP",
    "Identification nationale PP",
    "Type identifiant structure",
    "Identification Structure",
    "Service de rattachement",
    "Civilité d'exercice",
    "Nom d'exercice",
    "Prénom d'exercice",
    "Catégorie profession",
    "Libellé de catégorie profession",
    "Code Profession",
    "Libellé Profession",
    "Code savoir-faire",
    "Libellé savoir-faire",
    "Dématérialisation",
    "Raison Sociale structure BAL",
    "Enseigne commerciale structure BAL",
    "L2COMPLEMENTLOCALISATION",
    "L3COMPLEMENTDISTRIBUTION",
    "L4NUMEROVOIE",
    "L4COMPLEMENTNUMEROVOIE",
    "NL4TYPEVOIE",
    "L4LIBELLEVOIE",
    "L5LIEUDITMENTION",
    "L6LIGNEACHEMINEMENT",
    "Code postal",
    "Département",
    "Pays",
)
"""The 31 columns of the extraction, in file order."""

SEPARATOR: Final = "|"
MAILBOX_TYPES: Final = frozenset({"PER", "ORG", "APP", "CAB"})
"""TRE_R257-TypeBAL; the extraction holds PER and ORG only, the others are accepted should they appear."""

# Columns whose place the header must confirm (compared normalised): a file with these elsewhere is another
# format, and reading it would fill the directory with shifted values. The other titles may vary in spelling.
_KEY_COLUMNS: Final = (0, 1, 9, 10, 14, 28)
_STOP_WORDS: Final = frozenset(
    {"de", "du", "des", "la", "le", "les", "et", "d", "l", "en", "au", "aux", "sur"}
)
_NOT_ALNUM: Final = re.compile(r"[^a-z0-9]+")
_LIGATURES: Final = str.maketrans({"œ": "oe", "æ": "ae", "ø": "o", "ł": "l", "đ": "d", "ð": "d", "þ": "th"})
_LEADING_POSTCODE: Final = re.compile(r"^\s*\d{4,5}\s+")


class DirectoryFormatError(MappingError):
    """A file that is not the extraction (no header, another header); the message says why."""


@lru_cache(maxsize=65536)
def normalise(text: str) -> str:
    """Lower case ASCII words separated by one space: accents, case and punctuation do not count.

    Cached: the labels, towns and organisations of the directory repeat on thousands of lines."""
    folded = unicodedata.normalize("NFKD", text.casefold().translate(_LIGATURES))
    ascii_text = folded.encode("ascii", "ignore").decode("ascii")
    return _NOT_ALNUM.sub(" ", ascii_text).strip()


@lru_cache(maxsize=65536)
def search_words(text: str) -> tuple[str, ...]:
    """The words of a label or an organisation a search matches on (normalised, without the little French
    linking words that would match half the directory)."""
    return tuple(w for w in normalise(text).split() if w not in _STOP_WORDS)


def query_words(text: str) -> tuple[str, ...]:
    """The words a search looks for: linking words dropped unless they are all there is (« Le Dû »), since
    names keep theirs; one letter is no word."""
    words = [w for w in normalise(text).split() if len(w) > 1]
    meaningful = [w for w in words if w not in _STOP_WORDS]
    return tuple(meaningful or words)


@dataclass(frozen=True, slots=True)
class Role:
    """What one line says the mailbox's holder does and where: the varying part of a duplicated address."""

    category_code: str
    category_label: str
    profession_code: str
    profession_label: str
    skill_code: str
    skill_label: str
    service: str
    structure_id_type: str
    structure_id: str
    organisation: str
    trade_name: str


@dataclass(frozen=True, slots=True)
class DirectoryEntry:
    """One line of the extraction: a mailbox, its holder, one role, the structure's postal address."""

    line: int
    mailbox_type: str
    address: str
    pp_id_type: str
    pp_id: str
    pp_national_id: str
    civility: str
    last_name: str
    first_name: str
    dematerialisation: str
    role: Role
    street: str
    routing_line: str
    postal_code: str
    department: str
    country: str

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]

    @property
    def local_part(self) -> str:
        return self.address.rpartition("@")[0]

    @property
    def city(self) -> str:
        """The town of the routing line (« 69003 LYON » → « LYON »)."""
        return _LEADING_POSTCODE.sub("", self.routing_line).strip()

    @property
    def holder(self) -> str:
        """Who the mailbox is for: the person (PER) or the organisation."""
        person = " ".join(p for p in (self.civility, self.first_name, self.last_name) if p)
        if self.mailbox_type == "PER" and (self.first_name or self.last_name):
            return person
        return self.role.organisation or self.role.trade_name or person

    def terms(self) -> frozenset[str]:
        """The words a search may match this line on."""
        role = self.role
        names = normalise(f"{self.last_name} {self.first_name}").split()
        fields = (
            role.profession_label,
            role.skill_label,
            role.organisation,
            role.trade_name,
            role.service,
            self.city,
            self.postal_code,
            self.department,
        )
        words = [*names, *(word for text in fields if text for word in search_words(text))]
        return frozenset(word for word in words if len(word) > 1)


@dataclass
class DirectoryReader:
    """Reads the extraction line by line (never the whole file); iterate it for the entries.

    The header is checked first (``DirectoryFormatError`` when it is not the extraction's); a data line
    that cannot be read is skipped and named in ``problems`` (``line N: …``, at most ``max_problems``, all
    counted in ``problem_count``). ``lines`` counts the data lines read, good or bad.
    """

    source: Iterable[bytes]
    max_problems: int = 20
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0
    lines: int = 0

    def __iter__(self) -> Iterator[DirectoryEntry]:
        numbered = enumerate(self.source, start=1)
        first = next(numbered, None)
        if first is None:
            raise DirectoryFormatError("the file is empty: no header line")
        check_header(_decode(first[1], 1))
        for number, raw in numbered:
            if not raw.strip():
                continue
            self.lines += 1
            try:
                yield parse_line(_decode(raw, number), number)
            except DirectoryFormatError as error:
                self.problem_count += 1
                if len(self.problems) < self.max_problems:
                    self.problems.append(str(error))


def _decode(raw: bytes, number: int) -> str:
    try:
        return raw.decode("utf-8").removeprefix("\ufeff").rstrip("\r\n")
    except UnicodeDecodeError as error:
        raise DirectoryFormatError(
            f"line {number}: not UTF-8 ({error.reason} at byte {error.start})"
        ) from None


def check_header(line: str) -> None:
    """Refuse a first line that is not the extraction's header (31 titles, the key ones in place)."""
    titles = line.split(SEPARATOR)
    if len(titles) != len(COLUMNS):
        raise DirectoryFormatError(
            f"line 1: the header has {len(titles)} columns, the extraction has {len(COLUMNS)} "
            f"({SEPARATOR!r}-separated, starting {COLUMNS[0]!r}): not an Extraction Correspondance MSSanté"
        )
    for index in _KEY_COLUMNS:
        if normalise(titles[index]) != normalise(COLUMNS[index]):
            raise DirectoryFormatError(
                f"line 1: column {index + 1} is {titles[index].strip()!r}, expected {COLUMNS[index]!r}"
            )


def parse_line(line: str, number: int) -> DirectoryEntry:
    """One data line; ``DirectoryFormatError`` naming the line when it has the wrong shape."""
    values = [value.strip() for value in line.split(SEPARATOR)]
    if len(values) != len(COLUMNS):
        raise DirectoryFormatError(f"line {number}: {len(values)} columns, expected {len(COLUMNS)}")
    mailbox_type = values[0].upper()
    if mailbox_type not in MAILBOX_TYPES:
        raise DirectoryFormatError(f"line {number}: mailbox type {values[0]!r} is not PER, ORG, APP or CAB")
    try:
        address = check_address(values[1], field=f"line {number}").lower()
    except MappingError as error:
        raise DirectoryFormatError(str(error)) from None
    role = Role(
        category_code=values[11],
        category_label=values[12],
        profession_code=values[13],
        profession_label=values[14],
        skill_code=values[15],
        skill_label=values[16],
        service=values[7],
        structure_id_type=values[5],
        structure_id=values[6],
        organisation=values[18],
        trade_name=values[19],
    )
    return DirectoryEntry(
        line=number,
        mailbox_type=mailbox_type,
        address=address,
        pp_id_type=values[2],
        pp_id=values[3],
        pp_national_id=values[4],
        civility=values[8],
        last_name=values[9],
        first_name=values[10],
        dematerialisation=values[17],
        role=role,
        street=" ".join(v for v in values[20:27] if v),
        routing_line=values[27],
        postal_code=values[28],
        department=values[29],
        country=values[30],
    )


def edit_distance(left: str, right: str, limit: int) -> int:
    """Levenshtein distance, or ``limit + 1`` as soon as it is known to exceed ``limit`` (cheap refusals)."""
    if abs(len(left) - len(right)) > limit:
        return limit + 1
    previous = list(range(len(right) + 1))
    for i, a in enumerate(left, start=1):
        current = [i]
        for j, b in enumerate(right, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a != b)))
        if min(current) > limit:
            return limit + 1
        previous = current
    return min(previous[-1], limit + 1)


def closest(
    address: str, candidates: Iterable[str], limit: int = 3, max_distance: int = 2
) -> tuple[str, ...]:
    """The candidates of ``address``'s domain nearest to it (at most ``max_distance`` edits of the local
    part), nearest first: what a person who mistyped one letter meant."""
    local, _, domain = address.lower().rpartition("@")
    scored: list[tuple[int, str]] = []
    for candidate in candidates:
        other, _, other_domain = candidate.lower().rpartition("@")
        if other_domain != domain or other == local:
            continue
        distance = edit_distance(local, other, max_distance)
        if distance <= max_distance:
            scored.append((distance, candidate))
    return tuple(candidate for _, candidate in sorted(scored)[:limit])
