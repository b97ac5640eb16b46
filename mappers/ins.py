"""INS matricules: check the key, decode the traits, know the OIDs, build citizen addresses, mask for logs.

Used before anything is sent to ``<matricule>@patient.mssante.fr`` and when an inbound package is checked
(MSSANTE.md §6). Pure functions; never logs a matricule (callers log ``mask(matricule)`` only).

Public API (stable):
    parse_matricule(text: str) -> Matricule            # raises InsError (InsFormatError, InsKeyError, ...)
    is_valid_matricule(text: str) -> bool
    normalize(text: str) -> str
    compute_key(first13: str) -> int
    mask(matricule: str) -> str ; mask_address(address: str) -> str ; mask_addresses(text: str) -> str
    check_patient_id(matricule: str, oid: str) -> str | None   # a sentence (masked) or None
    oid_name(oid: str) -> str | None ; is_ins_oid(oid: str) -> bool ; is_test_oid(oid: str) -> bool
    citizen_address(matricule: str) -> str ; parse_citizen_address(address: str) -> Matricule
    is_citizen_address(address: str) -> bool
    is_qualified(patient: Patient | None) -> bool       # ECO.2.4.2: matricule + OID + 4 traits
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from mappers.errors import MappingError
from mappers.patient import Patient, Sex

NIR_OID: Final = "1.2.250.1.213.1.4.8"
NIA_OID: Final = "1.2.250.1.213.1.4.9"
TEST_OID: Final = "1.2.250.1.213.1.4.10"
DEMO_OID: Final = "1.2.250.1.213.1.4.11"

# FR Core INS profile (MSSANTE.md §6.1, P5): the identifier type names of the four INS assigning authorities.
OID_NAMES: Final[dict[str, str]] = {
    NIR_OID: "INS-NIR",
    NIA_OID: "INS-NIA",
    TEST_OID: "INS-NIR-TEST",
    DEMO_OID: "INS-NIR-DEMO",
}

CITIZEN_DOMAIN: Final = "patient.mssante.fr"

MATRICULE_LENGTH: Final = 15
BODY_LENGTH: Final = 13
ABROAD: Final = "99"

# CNAM NirKey (MSSANTE.md §6.2): Corsican departments are replaced by numbers before the modulo.
_CORSICA: Final[dict[str, str]] = {"2A": "19", "2B": "18"}
_OVERSEAS_PREFIXES: Final = frozenset({"97", "98"})
# The departments a reader cannot tell from their number alone (INSEE codes): Corsica's letters, and
# the overseas departments and collectivities whose number has three digits.
DEPARTMENT_NAMES: Final[dict[str, str]] = {
    "2A": "Corse-du-Sud",
    "2B": "Haute-Corse",
    "971": "Guadeloupe",
    "972": "Martinique",
    "973": "Guyane",
    "974": "La Réunion",
    "975": "Saint-Pierre-et-Miquelon",
    "976": "Mayotte",
    "977": "Saint-Barthélemy",
    "978": "Saint-Martin",
    "986": "Wallis-et-Futuna",
    "987": "Polynésie française",
    "988": "Nouvelle-Calédonie",
}
_SPACES: Final = " \t\u00a0\u202f"


class InsError(MappingError):
    """A matricule INS (or a citizen address) that cannot be used; the message says what is wrong.

    Messages never quote the matricule (at most one character or the key), so they are safe in logs.
    """


class InsFormatError(InsError):
    """The text is not shaped like a matricule (length, characters, month, department)."""


class InsMissingKeyError(InsError):
    """A 13-character NIR was given: the 2-digit key, which MSSanté addresses require, is missing."""

    def __init__(self, expected_key: int) -> None:
        super().__init__(
            f"the matricule has 13 characters: its 2-digit key is missing "
            f"(it would be {expected_key:02d}); an INS matricule has 15 characters"
        )
        self.expected_key = expected_key


class InsKeyError(InsError):
    """The key does not match the first 13 characters (usually a typo)."""

    def __init__(self, expected: int, got: int) -> None:
        super().__init__(f"key {expected:02d} expected, got {got:02d}")
        self.expected = expected
        self.got = got


class CitizenAddressError(InsError):
    """An address that is not ``<matricule>@patient.mssante.fr``."""


@dataclass(frozen=True, slots=True)
class Matricule:
    """A checked 15-character matricule and what it says about the person.

    The year has two digits only: ``birth_year(current_year)`` picks the century. ``sex`` is ``UNKNOWN``
    when the first digit is neither 1 nor 2 (special registrations exist; MSSANTE.md §6.2 says not to reject
    on it). ``place_code`` is the 5-character INSEE code: department + commune, or 99 + country code.
    """

    value: str
    sex_digit: str
    sex: Sex
    birth_yy: int
    birth_month: int
    department: str
    commune: str
    order: str
    key: int

    @property
    def born_abroad(self) -> bool:
        """Department 99 means born outside France; the commune digits are then a country code."""
        return self.department == ABROAD

    @property
    def country_code(self) -> str | None:
        """INSEE country code for people born abroad, ``None`` otherwise."""
        return self.commune if self.born_abroad else None

    @property
    def place_code(self) -> str:
        """INSEE code of the birth place (commune, or 99xxx country), as in PID-11 / CDA birthplace."""
        return self.department + self.commune

    def birth_year(self, current_year: int) -> int:
        """Four-digit year: the latest one ending in ``birth_yy`` that is not after ``current_year``."""
        return current_year - (current_year - self.birth_yy) % 100

    @property
    def birth_department(self) -> str:
        """The department as people know it: three digits overseas (971 …), where the NIR's two (97) and
        the first commune digit belong together; ``2A``/``2B`` for Corsica; ``99`` abroad."""
        if self.department in _OVERSEAS_PREFIXES:
            return self.department + self.commune[0]
        return self.department

    def describe(self, current_year: int) -> str:
        """A sentence for a person checking who the patient is (Ref#2 §3.4.2.2)."""
        who = {Sex.FEMALE: "woman", Sex.MALE: "man"}.get(self.sex, f"sex digit {self.sex_digit}")
        year = self.birth_year(current_year)
        department = self.birth_department
        if self.born_abroad:
            where = f"department {department} (born abroad, country code {self.commune})"
        elif department in DEPARTMENT_NAMES:
            where = f"department {department} ({DEPARTMENT_NAMES[department]})"
        else:
            where = f"department {department}"
        return f"{who}, born {year:04d}-{self.birth_month:02d}, {where}, key {self.key:02d}"


def normalize(text: str) -> str:
    """Upper-case and drop the spaces people type between groups (``2 79 03 51 215 189 89``)."""
    return "".join(ch for ch in text if ch not in _SPACES).upper()


def compute_key(first13: str) -> int:
    """Key of a 13-character NIR: 97 − (n mod 97), with 2A → 19 and 2B → 18 (CNAM NirKey, MSSANTE.md §6.2)."""
    body = normalize(first13)
    if len(body) != BODY_LENGTH:
        raise InsFormatError(f"a key is computed on 13 characters, got {len(body)}")
    digits = body[:5] + _CORSICA.get(body[5:7], body[5:7]) + body[7:]
    if not digits.isdigit() or not digits.isascii():
        raise InsFormatError(f"{mask(body)} has characters other than digits (and 2A/2B)")
    return 97 - int(digits) % 97


def _check_body(body: str) -> None:
    """Explain the first shape problem of a 13-character body, position by position."""
    for index, char in enumerate(body, start=1):
        if index in (6, 7) and body[5:7] in _CORSICA:
            continue
        if not (char.isascii() and char.isdigit()):
            raise InsFormatError(f"character {char!r} at position {index} is not a digit")
    month = int(body[3:5])
    if not 1 <= month <= 12:
        # CNAM NirValidator accepts months 01–12 only (MSSANTE.md §6.2).
        raise InsFormatError(f"month {month} is not a month")
    if body[5:7] == "00":
        raise InsFormatError("department 00 does not exist")


def parse_matricule(text: str) -> Matricule:
    """Check a matricule INS (spaces tolerated) and decode it, or say exactly what is wrong."""
    value = normalize(text)
    if not value:
        raise InsFormatError("the matricule is empty")
    if len(value) == BODY_LENGTH:
        _check_body(value)
        raise InsMissingKeyError(compute_key(value))
    if len(value) != MATRICULE_LENGTH:
        raise InsFormatError(
            f"a matricule has {MATRICULE_LENGTH} characters (13 + 2-digit key), got {len(value)}"
        )
    body, key_text = value[:BODY_LENGTH], value[BODY_LENGTH:]
    _check_body(body)
    if not (key_text.isascii() and key_text.isdigit()):
        raise InsFormatError(f"the key {key_text!r} is not two digits")
    expected, got = compute_key(body), int(key_text)
    if expected != got:
        raise InsKeyError(expected, got)
    sex_digit = body[0]
    sex = {"1": Sex.MALE, "2": Sex.FEMALE}.get(sex_digit, Sex.UNKNOWN)
    return Matricule(
        value=value,
        sex_digit=sex_digit,
        sex=sex,
        birth_yy=int(body[1:3]),
        birth_month=int(body[3:5]),
        department=body[5:7],
        commune=body[7:10],
        order=body[10:13],
        key=got,
    )


def is_valid_matricule(text: str) -> bool:
    """True when ``parse_matricule`` accepts the text."""
    try:
        parse_matricule(text)
    except InsError:
        return False
    return True


def mask(matricule: str) -> str:
    """Hide a matricule for logs: first character and key stay, the 12 middle ones become ``*``.

    ``279035121518989`` → ``2************89``: enough to tell two log lines apart by eye, never the
    birth date, place or order number. Inputs of other lengths are fully starred (length kept), since a
    truncated value could still be most of a real matricule.
    """
    value = normalize(matricule)
    if len(value) != MATRICULE_LENGTH:
        return "*" * len(value)
    return value[0] + "*" * (MATRICULE_LENGTH - 3) + value[-2:]


def mask_address(address: str) -> str:
    """A citizen address with its matricule masked; other addresses are returned unchanged."""
    local, at, domain = address.rpartition("@")
    if at and domain.lower().rstrip(".") == CITIZEN_DOMAIN:
        return f"{mask(local.strip('<'))}@{domain.rstrip('>')}"
    return address


_CITIZEN_ADDRESS = re.compile(rf"[^\s<>\"'(),;:@]+@{re.escape(CITIZEN_DOMAIN)}\b", re.IGNORECASE)


def mask_addresses(text: str) -> str:
    """``text`` with the matricule of every citizen address in it masked (reply texts, reasons, lists)."""
    return _CITIZEN_ADDRESS.sub(lambda m: mask(m.group(0).partition("@")[0]) + "@" + CITIZEN_DOMAIN, text)


def check_patient_id(matricule: str, oid: str) -> str | None:
    """What is wrong with an (INS, OID) pair received in metadata, as a sentence safe for logs.

    ``None`` when the OID is an INS authority and the matricule checks; NIA matricules are only checked for
    length (their key rule is not published, MSSANTE.md §6.2).
    """
    shown = mask(matricule)
    if not is_ins_oid(oid):
        return f"patient id {shown} is not an INS: OID {oid or '(none)'} is not an INS authority"
    if oid.strip() == NIA_OID:
        value = normalize(matricule)
        if len(value) == MATRICULE_LENGTH:
            return None
        return f"INS-NIA {shown} has {len(value)} characters, not {MATRICULE_LENGTH}"
    try:
        parse_matricule(matricule)
    except InsError as error:
        return f"INS {shown} is not a valid matricule: {error}"
    return None


def oid_name(oid: str) -> str | None:
    """``INS-NIR``, ``INS-NIA``, ``INS-NIR-TEST`` or ``INS-NIR-DEMO``; ``None`` for any other OID."""
    return OID_NAMES.get(oid.strip())


def is_ins_oid(oid: str) -> bool:
    """True for the four INS assigning authorities (not the legacy INS-C 1.2.250.1.213.1.4.2)."""
    return oid.strip() in OID_NAMES


def is_test_oid(oid: str) -> bool:
    """True for the test (.10) and demonstration (.11) authorities, refused in production mode."""
    return oid.strip() in (TEST_OID, DEMO_OID)


def citizen_address(matricule: str) -> str:
    """``<15-character matricule>@patient.mssante.fr`` for a checked matricule (ECO.3.1.5)."""
    return f"{parse_matricule(matricule).value}@{CITIZEN_DOMAIN}"


def parse_citizen_address(address: str) -> Matricule:
    """The matricule of a Mon espace santé address; the domain is compared case-insensitively."""
    local, at, domain = address.strip().strip("<>").rpartition("@")
    if not at:
        raise CitizenAddressError("not an e-mail address (no @)")
    if domain.lower().rstrip(".") != CITIZEN_DOMAIN:
        raise CitizenAddressError(f"domain {domain!r} is not {CITIZEN_DOMAIN}")
    return parse_matricule(local)


def is_citizen_address(address: str) -> bool:
    """True when the address is on the citizen domain (the matricule is not checked)."""
    return address.strip().strip("<>").rpartition("@")[2].lower().rstrip(".") == CITIZEN_DOMAIN


def is_qualified(patient: Patient | None) -> bool:
    """Qualified INS per ECO.2.4.2: matricule + INS OID + the four traits, with a valid key.

    NIA matricules are only checked for length: their key rule is not published (MSSANTE.md §6.2).
    """
    if patient is None or not patient.is_qualified or not is_ins_oid(patient.oid):
        return False
    if patient.oid.strip() == NIA_OID:
        value = normalize(patient.matricule)
        return len(value) == MATRICULE_LENGTH and value.isalnum() and value.isascii()
    return is_valid_matricule(patient.matricule)
