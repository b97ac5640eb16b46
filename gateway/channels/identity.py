"""The ``X-MSSGW-Patient`` submission header: the patient of a message to Mon Espace Santé that has no
IHE_XDM package to name one (a plain text message, an attachment).

An internal application (or ``mssgw send``) writes the patient's INS and traits there; the intake reads
it to apply the patient rules and link the message to its patient, then strips every ``X-MSSGW-*`` field
before the message is queued, so it never leaves the hospital. Values are percent-encoded, so the field is
plain ASCII whatever the names: ``matricule=279035121518989; oid=1.2.250.1.213.1.4.8;
birth_name=PAT-TROIS; given_name=DOMINIQUE; birth_date=1979-03-28; sex=F``.
"""

from __future__ import annotations

from datetime import date
from email.parser import BytesHeaderParser
from urllib.parse import quote, unquote

from mappers.folding import READ_POLICY
from mappers.patient import Patient, Sex

PATIENT_HEADER = "X-MSSGW-Patient"
_KEYS = ("matricule", "oid", "birth_name", "given_name", "birth_date", "sex")


def patient_field(patient: Patient) -> str:
    """The header value for ``patient`` (INS and the four traits)."""
    values = {
        "matricule": patient.matricule,
        "oid": patient.oid,
        "birth_name": patient.birth_name,
        "given_name": patient.given_name,
        "birth_date": patient.birth_date.isoformat() if patient.birth_date else "",
        "sex": patient.sex.value,
    }
    return "; ".join(f"{key}={quote(values[key], safe='')}" for key in _KEYS)


def read_patient_field(raw: bytes) -> Patient | None:
    """The patient a submitted message names in ``X-MSSGW-Patient``; ``None`` when absent or unreadable
    (the patient rules then say which part of the identity is missing)."""
    value = BytesHeaderParser(policy=READ_POLICY).parsebytes(raw).get(PATIENT_HEADER)
    if value is None:
        return None
    fields: dict[str, str] = {}
    for item in str(value).split(";"):
        key, equals, text = item.strip().partition("=")
        if equals:
            fields[key.strip().lower()] = unquote(text.strip())
    try:
        birth = date.fromisoformat(fields["birth_date"]) if fields.get("birth_date") else None
        sex = Sex(fields.get("sex", "U").upper() or "U")
    except ValueError:
        return None
    return Patient(
        matricule=fields.get("matricule", ""),
        oid=fields.get("oid", ""),
        birth_name=fields.get("birth_name", ""),
        given_name=fields.get("given_name", ""),
        birth_date=birth,
        sex=sex,
    )
