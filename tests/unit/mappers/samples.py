"""Sample patients and documents for the INS / CDA / XDM tests (ANS test identities, test OID)."""

from __future__ import annotations

from datetime import UTC, date, datetime

from mappers import cda, ins, xds
from mappers.documents import Author, Code, Document
from mappers.patient import Patient, Sex

NOW = datetime(2024, 1, 16, 15, 11, 12, tzinfo=UTC)
CR_IMAGERIE = Code("18748-4", "CR d'imagerie médicale", xds.LOINC_OID)
CR_BIOLOGIE = Code("11502-2", "CR d'examens biologiques", xds.LOINC_OID)
CLASS_IMAGERIE = Code("31", "Imagerie médicale", xds.CLASS_CODE_OID)
PDF = b"%PDF-1.4\n% test document\n%%EOF\n"


def patient(**changes: object) -> Patient:
    """PAT-TROIS Dominique, the ANS test patient of MSSANTE.md §5.7."""
    values: dict[str, object] = {
        "matricule": "279035121518989",
        "oid": ins.TEST_OID,
        "birth_name": "PAT-TROIS",
        "given_name": "DOMINIQUE",
        "birth_date": date(1979, 3, 28),
        "sex": Sex.FEMALE,
        "used_name": "MARTIN",
        "birth_place_code": "63220",
        "local_id": "1234567890121",
        "local_id_root": "1.2.3.4.567.8.9.10",
    }
    values.update(changes)
    return Patient(**values)  # type: ignore[arg-type]


def author() -> Author:
    """The KIT test professional of the ANS sample METADATA.XML."""
    return Author(
        rpps="899700367909",
        family_name="DOC0036790",
        given_name="KIT",
        institution_name="BCOM",
        institution_id="499700367909006",
        specialty=Code("G15_10/SM44", "Médecin - Radio-diagnostic (SM)", "1.2.250.1.213.1.1.4.5"),
    )


def cda_document(the_patient: Patient | None = None, **changes: object) -> Document:
    """A PDF wrapped in a CDA R2 N1 with full metadata."""
    values: dict[str, object] = {
        "title": "CR d'imagerie - Scanner",
        "type_code": CR_IMAGERIE,
        "effective_time": NOW,
        "document_id": "1.2.250.1.213.1.1.1.45.2^7",
        "author": author(),
        "class_code": CLASS_IMAGERIE,
        "confidentiality": (xds.MASQUE_PS, xds.INVISIBLE_PATIENT),
        "service_start": datetime(2024, 1, 16, 9, 22, tzinfo=UTC),
        "service_stop": datetime(2024, 1, 16, 16, 5, tzinfo=UTC),
        "healthcare_facility_type": Code("SA25", "Centre de santé", xds.FACILITY_TYPE_OID),
        "practice_setting": Code("AMBULATOIRE", "Ambulatoire", xds.PRACTICE_SETTING_OID),
    }
    values.update(changes)
    return cda.pdf_document(PDF, the_patient or patient(), **values)  # type: ignore[arg-type]


def pdf_document() -> Document:
    """The PDF copy, as a second (non-CDA) document of the same submission."""
    return Document(
        filename="compte-rendu.pdf",
        content=PDF,
        mime_type="application/pdf",
        title="CR d'imagerie - Scanner (PDF)",
        type_code=CR_IMAGERIE,
        creation_time=NOW,
        unique_id="1.2.250.1.213.1.1.1.45.2^8",
        format_code=xds.PDF_FORMAT,
        author=author(),
    )
