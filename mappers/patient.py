"""The patient a message is about: INS identity and the four traits MSSanté calls "qualified".

A record type only; checking and decoding the INS matricule lives in ``mappers.ins``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from enum import StrEnum


class Sex(StrEnum):
    """Administrative sex as HL7 v2 PID-8 writes it (MSSANTE.md §5.4)."""

    MALE = "M"
    FEMALE = "F"
    UNKNOWN = "U"


@dataclass(frozen=True, slots=True)
class Patient:
    """One patient (MSSanté allows one per message).

    ``matricule`` is the 15-character INS matricule (13 characters + 2-digit key), ``oid`` its assigning
    authority (1.2.250.1.213.1.4.8 NIR, .9 NIA, .10 test, .11 demo). The identity is *qualified* only when the
    matricule, the OID and the four traits (birth name, first given name, birth date, sex) are all present.
    """

    matricule: str
    oid: str
    birth_name: str
    given_name: str
    birth_date: date | None
    sex: Sex
    used_name: str | None = None
    other_given_names: str | None = None
    birth_place_code: str | None = None
    local_id: str | None = None
    local_id_root: str | None = None

    @property
    def is_qualified(self) -> bool:
        """True when matricule, OID and the four traits are all known (ECO.2.4.2)."""
        return bool(
            self.matricule
            and self.oid
            and self.birth_name
            and self.given_name
            and self.birth_date is not None
            and self.sex is not Sex.UNKNOWN
        )
