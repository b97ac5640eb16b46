"""The patient in XDS metadata: patientId (CX) and sourcePatientInfo (PID-3/5/7/8/11) both ways.

Used by ``mappers.metadata`` when writing and reading METADATA.XML (MSSANTE.md §5.4). Pure; the matricule
is neither checked nor logged here (``mappers.xdm`` reports identity problems).
"""

from __future__ import annotations

from collections.abc import Sequence

from mappers import xds
from mappers.patient import Patient, Sex


def format_source_patient_info(patient: Patient) -> list[str]:
    """PID-5 (birth name, type L; used name, type D), PID-7, PID-8 and PID-11 values."""
    esc = xds.hl7_escape
    birth = f"{esc(patient.birth_name)}^{esc(patient.given_name)}^{esc(patient.other_given_names or '')}"
    values = [f"PID-5|{birth}^^^^L"]
    if patient.used_name:
        values.append(f"PID-5|{esc(patient.used_name)}^{esc(patient.given_name)}^^^^^D")
    if patient.birth_date:
        values.append(f"PID-7|{xds.format_date(patient.birth_date)}")
    values.append(f"PID-8|{patient.sex.value}")
    if patient.birth_place_code:
        values.append(f"PID-11|^^^^^^BDL^^{esc(patient.birth_place_code)}")
    return values


def parse_patient(
    patient_id: str | None, source_patient_id: str | None, info: Sequence[str]
) -> tuple[Patient | None, list[str]]:
    """The patient described by a DocumentEntry, and sentences for values that could not be read."""
    problems: list[str] = []
    matricule = oid = ""
    if patient_id:
        try:
            matricule, oid, _ = xds.parse_cx(patient_id)
        except xds.MetadataValueError as error:
            problems.append(str(error))
    fields: dict[str, list[str]] = {}
    for value in info:
        field, _, rest = value.partition("|")
        fields.setdefault(field.strip().upper(), []).append(rest)
    birth_name = given = ""
    other_given: str | None = None
    used_name: str | None = None
    for name in fields.get("PID-5", []):
        parts = [xds.hl7_unescape(p) for p in name.split("^")] + [""] * 7
        if parts[6] == "D":
            used_name = parts[0] or None
        elif parts[6] in ("L", "") and not birth_name:
            birth_name, given, other_given = parts[0], parts[1], parts[2] or None
    birth_date = None
    for value in fields.get("PID-7", [])[:1]:
        try:
            birth_date = xds.parse_date(value)
        except xds.MetadataValueError as error:
            problems.append(str(error))
    sex = Sex.UNKNOWN
    for value in fields.get("PID-8", [])[:1]:
        try:
            sex = Sex(value.strip().upper())
        except ValueError:
            problems.append(f"sex {value!r} in PID-8 is not M, F or U")
    place = None
    for value in fields.get("PID-11", [])[:1]:
        parts = value.split("^")
        place = xds.hl7_unescape(parts[8]) if len(parts) > 8 and parts[8] else None
    local_id = local_root = None
    if source_patient_id:
        try:
            ident, root, kind = xds.parse_cx(source_patient_id)
        except xds.MetadataValueError as error:
            problems.append(str(error))
        else:
            if kind == "PI":
                local_id, local_root = ident, root
    if not matricule and not birth_name:
        return None, problems
    patient = Patient(
        matricule=matricule,
        oid=oid,
        birth_name=birth_name,
        given_name=given,
        birth_date=birth_date,
        sex=sex,
        used_name=used_name,
        other_given_names=other_given,
        birth_place_code=place,
        local_id=local_id,
        local_id_root=local_root,
    )
    return patient, problems
