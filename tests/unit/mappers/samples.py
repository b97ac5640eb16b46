"""Samples for the INS / CDA / XDM tests: ANS test identities (test OID), documents, forged archives."""

from __future__ import annotations

import io
import struct
import zipfile
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
        event_codes=(
            Code("ACQH004", "Scanographie du crâne avec injection", "1.2.250.1.213.2.5"),
            Code("CT", "Computed Tomography", "1.2.250.1.213.1.1.5.618"),
        ),
        legal_authenticator=Author(rpps="899700367909", family_name="DOC0036790", given_name="KIT"),
    )


def zip_members(*members: tuple[str, bytes], mode: int = 0o644) -> bytes:
    """A ZIP with the given members and Unix mode (to forge links and odd names)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as out:
        for name, content in members:
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.external_attr = mode << 16
            info.create_system = 3
            info.compress_type = zipfile.ZIP_DEFLATED
            out.writestr(info, content)
    return buffer.getvalue()


def set_declared_size(data: bytes, size: int) -> bytes:
    """Rewrite the uncompressed size in the local header and the central directory (APPNOTE 4.3.7/12)."""
    patched = bytearray(data)
    local = patched.find(b"PK\x03\x04")
    central = patched.rfind(b"PK\x01\x02")
    struct.pack_into("<I", patched, local + 22, size)
    struct.pack_into("<I", patched, central + 24, size)
    return bytes(patched)


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol9 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<lcm:SubmitObjectsRequest xmlns:lcm="urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
 >&lol9;</lcm:SubmitObjectsRequest>
"""


def ans_shaped_mdn(original_id: str, final_recipient: str, to: str) -> bytes:
    """An error 902 MDN in the shape of the ANS page's example (struct-msg-mdn), written anew.

    Its quirks, all seen from peers: no blank line after the header section nor in any part, the
    disposition fields in the part's own header, trailing spaces, a space inside the Original-Message-ID
    brackets, 8-bit UTF-8 in the header, and a closing boundary with a dash that is not one (so the last
    part never closes).
    """
    return f"""Date: Tue, 14 May 2024 09:12:00 +0200
From: {final_recipient}
Message-Id: <20240514091200.777@chb.mssante.fr>
Subject: [KO Intégration système !][902] XDM/1.0/DDM+ECHOGRAPHIE ABDOMINOPELVIENNE CORSE FIGATELLIX 12/10/1988
To: {to}
MIME-Version: 1.0
Content-Type: multipart/report; report-type=disposition-notification; boundary="KQZ.5521"
--KQZ.5521
Le document n’a pas pu être intégré.
Le système a retourné l'erreur 902^Identifiant patient inconnu^messageErrorCondition| E^Error^errorSeverity
--KQZ.5521
Content-Type: message/disposition-notification
Original-Recipient: rfc822;{final_recipient} 
Final-Recipient: rfc822; {final_recipient} 
Original-Message-ID: {original_id[:-1]} >
Disposition:automatic-action/MDN-sent-automatically; processed/Error: 902^Identifiant patient inconnu^messageErrorCondition| E^Error^errorSeverity
--KQZ.5521
Content-Type: message/rfc822
Le courriel d'origine.
--KQZ.5521—
""".encode()  # noqa: E501, W291
