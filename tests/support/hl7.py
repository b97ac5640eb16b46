"""ER7 messages in the ANS "Transmission de document(s) CDA en HL7v2" shape, written from the profile
(not copied from the ANS files), for the mapper tests and the MLLP system tests."""

from __future__ import annotations

import base64
from datetime import UTC, date, datetime

from mappers import cda, xds
from mappers.documents import Code
from mappers.hl7_transmission import REQUIRED_FLAGS
from mappers.patient import Patient, Sex
from tests.support import cda_header

CDA = b"<ClinicalDocument xmlns='urn:hl7-org:v3'/>"
PROS_AND_PATIENT = {name: False for name in REQUIRED_FLAGS} | {"DESTMSSANTEPS": True, "DESTMSSANTEPAT": True}
PROS_ONLY = {name: False for name in REQUIRED_FLAGS} | {"DESTMSSANTEPS": True, "INVISIBLE_PATIENT": True}
#: The patient ``message`` writes in PID (the ANS test INS, test OID).
PID_PATIENT = Patient(
    matricule="279035121518989",
    oid="1.2.250.1.213.1.4.10",
    birth_name="TEST",
    given_name="ANNE",
    birth_date=date(1979, 3, 21),
    sex=Sex.FEMALE,
)


#: The id of ``patient_cda``'s first version, the one ``replacement_cda`` replaces.
FIRST_VERSION_ID = "1.2.250.1.999.3"


def patient_cda(
    patient: Patient = PID_PATIENT, *, document_id: str = FIRST_VERSION_ID, replaces: str | None = None
) -> bytes:
    """A CDA R2 N1 (our own builder) naming ``patient``, as the ED OBX carries it; with ``replaces``, a
    later version (``relatedDocument`` RPLC naming that id)."""
    return cda.wrap_pdf(
        b"%PDF-1.4\n% cr\n%%EOF\n", patient, title="Compte rendu de consultation",
        type_code=Code("11488-4", "Compte rendu de consultation", xds.LOINC_OID),
        effective_time=datetime(2026, 12, 7, 8, 0, tzinfo=UTC), document_id=document_id,
        version=2 if replaces else 1, replaces=replaces, **cda_header.WRAPPER,
    )  # fmt: skip


def replacement_cda() -> bytes:
    """Version 2 of ``patient_cda``: its own id, and the RPLC link to the first version."""
    return patient_cda(document_id="1.2.250.1.999.4", replaces=FIRST_VERSION_ID)


def structured_cda(patient: Patient = PID_PATIENT) -> bytes:
    """The same report as a structured CDA (the N3 an ORU may carry beside its N1): same header, a
    ``structuredBody`` section instead of the PDF, its own document id."""
    header, _, _ = patient_cda(patient).partition(b"<component>\n    <nonXMLBody>")
    body = (
        b"<component><structuredBody><component><section><title>Conclusion</title>"
        b"<text>Examen normal.</text></section></component></structuredBody></component>\n"
        b"</ClinicalDocument>"
    )
    return header.replace(b"1.2.250.1.999.3", b"1.2.250.1.999.33") + body


def message(
    kind: str = "ORU^R01^ORU_R01",
    application: str = "DPI",
    version: str = "2.5",
    flags: dict[str, bool] | None = None,
    recipients: tuple[str, ...] = ("dr.martin@hopital.mssante.fr",),
    cdas: tuple[bytes, ...] = (CDA,),
    extra: tuple[str, ...] = (),
    nte_fin: bool = False,
    status: str = "F",
) -> str:
    """A message in the profile's shape: the document OBX with its PRT, then the MetaDMPMSS OBX in order.

    ``status`` is the documents' OBX-11: F original, C replacement, D deletion."""
    values = flags if flags is not None else PROS_AND_PATIENT
    coded = "CE" if version == "2.5" else "CWE"
    segments = [
        f"MSH|^~\\&|{application}|CHU_X|PFI|CHU_X|20261207083000||{kind}|MSG-42|P|{version}|||||FRA|"
        "UNICODE UTF-8|||2.1^CISIS_CDA_HL7_V2",
        "PID|||1234^^^CHU_X&1.2.250.1.999&ISO^PI~279035121518989^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.10"
        "&ISO^INS||TEST^ANNE MARIE^CLAUDE^^^^L||19790321|F",
        "PV1|1|O",
    ]
    for number, document in enumerate(cdas, start=1):
        data = base64.b64encode(document).decode()
        segments.append(
            f"OBX|{number}|ED|11488-4^CR de consultation^LN||^TEXT^XML^Base64^{data}||||||{status}"
        )
    segments.append("PRT||UC||SB^Send by^participation||||CHU X")
    segments += [f"PRT||UC||RCT^Result Copies To^participation|||||||||||^^X.400^{a}" for a in recipients]
    segments.append("PRT||UC||REPLY^Reply to^participation|||||||||||^^X.400^secretariat@hopital.mssante.fr")
    for number, name in enumerate(REQUIRED_FLAGS, start=10):
        value = "Y" if values[name] else "N"
        segments.append(
            f"OBX|{number}|{coded}|{name}^{name}^MetaDMPMSS||{value}^^expandedYes-NoIndicator||||||F"
        )
        if name == "DESTMSSANTEPAT" and nte_fin:
            segments.append("NTE|1|||FIN")
    segments += list(extra)
    return "\r".join(segments) + "\r"


def body_obx(code: str, text: str, encoding: str = "utf-8") -> str:
    """A CORPSMAIL_* OBX as the profile sends it: ED, the text base64 in OBX-5.5."""
    data = base64.b64encode(text.encode(encoding)).decode("ascii")
    return f"OBX|40|ED|{code}^Corps du mail^MetaDMPMSS||^TEXT^^Base64^{data}||||||F"
