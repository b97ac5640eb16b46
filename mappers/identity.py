"""The INS identity of two descriptions of one patient, compared item by item (ECO.2.1.2, ECO.2.4.2).

The one rule behind "one patient per message": outbound (``mappers.patient_match``), a declared patient
against each CDA; inbound (``mappers.xdm``, the ANS MDN codes 904), METADATA.XML against each CDA. Same INS
matricule and OID, same birth name, first given name, birth date and sex; names compare without case or
extra white space. Pure; INS matricules come out masked (``ins.mask``), as replies and logs show them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Final

from mappers import ins
from mappers.patient import Patient, Sex

INS_ITEMS: Final = ("INS matricule", "INS OID")


@dataclass(frozen=True, slots=True)
class Difference:
    """One identity item on which two descriptions of a patient disagree; INS values come masked."""

    item: str  # "INS matricule", "INS OID", "birth name", "first given name", "birth date", "sex"
    declared: str
    named: str


def fold_name(name: str) -> str:
    """Names compared as a person would: case and runs of white space do not count."""
    return " ".join(name.split()).casefold()


def _day(value: date | None) -> str:
    return value.isoformat() if value else "no birth date"


def differences(declared: Patient, named: Patient, *, present_only: bool = False) -> tuple[Difference, ...]:
    """Every item of the INS identity (matricule, OID, the four traits) on which the two disagree.

    ``present_only``: a trait ``named`` does not give (empty name, no birth date, unknown sex) is not a
    difference — a METADATA.XML entry without sourcePatientInfo (an XML signature) names nobody else.
    """
    found = [
        d
        for d in _all_differences(declared, named)
        if not present_only or d.item in INS_ITEMS or _given(named, d.item)
    ]
    return tuple(found)


def _given(patient: Patient, item: str) -> bool:
    value = {
        "birth name": patient.birth_name.strip(),
        "first given name": patient.given_name.strip(),
        "birth date": patient.birth_date,
        "sex": patient.sex is not Sex.UNKNOWN,
    }[item]
    return bool(value)


def _all_differences(declared: Patient, named: Patient) -> list[Difference]:
    found: list[Difference] = []
    if ins.normalize(declared.matricule) != ins.normalize(named.matricule):
        found.append(Difference("INS matricule", ins.mask(declared.matricule), ins.mask(named.matricule)))
    if declared.oid.strip() != named.oid.strip():
        found.append(Difference("INS OID", declared.oid.strip(), named.oid.strip()))
    for item, left, right in (
        ("birth name", declared.birth_name, named.birth_name),
        ("first given name", declared.given_name, named.given_name),
    ):
        if fold_name(left) != fold_name(right):
            found.append(Difference(item, " ".join(left.split()), " ".join(right.split())))
    if declared.birth_date != named.birth_date:
        found.append(Difference("birth date", _day(declared.birth_date), _day(named.birth_date)))
    if declared.sex is not named.sex:
        found.append(Difference("sex", declared.sex.value, named.sex.value))
    return found
