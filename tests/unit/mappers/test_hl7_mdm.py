"""A received mail's CDA → the MDM the consumer gets: every field the volet's profile names, per event."""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET  # noqa: S405 - parses our own generated METADATA.XML only
from datetime import UTC, datetime

import hl7
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mappers import archive, cda, xdm, xds
from mappers.documents import Document
from mappers.hl7_mdm import MdmError, MdmHeader, build_mdm, cda_documents, control_id_for, masks_sent
from mappers.metadata_read import ACTION_SLOT, DocumentAction, MetadataError, document_actions
from mappers.records import Mailbox, MessageRecord
from tests.unit.mappers import samples

RIM = xds.RIM_NS
HEADER = MdmHeader("MSSGW", "CHU_Y", "DPI", "CHU_Y")
NOW = datetime(2026, 12, 7, 8, 30, tzinfo=UTC)
PARENT = "1.2.250.1.213.1.1.1.45.2^6"


def received(
    *documents: Document, slots: dict[int, str] | None = None, rplc: tuple[int, ...] = (), **mail: object
) -> MessageRecord:
    """A mail as the gateway reads it, its package built here; ``slots``/``rplc`` mark entries (1-based)."""
    data = xdm.build_package(samples.patient(), list(documents), now=samples.NOW)
    members = archive.read_members(data)
    name = f"IHE_XDM/{xdm.SUBSET}/METADATA.XML"
    root = ET.fromstring(members[name])  # noqa: S314 - our own output
    objects = root.find(f"{{{RIM}}}RegistryObjectList")
    assert objects is not None
    for number, value in (slots or {}).items():
        entry = objects.find(f"{{{RIM}}}ExtrinsicObject[@id='Document{number:02d}']")
        assert entry is not None
        slot = ET.Element(f"{{{RIM}}}Slot", {"name": ACTION_SLOT})
        ET.SubElement(ET.SubElement(slot, f"{{{RIM}}}ValueList"), f"{{{RIM}}}Value").text = value
        entry.insert(0, slot)
    for number in rplc:
        ET.SubElement(
            objects,
            f"{{{RIM}}}Association",
            {
                "id": f"Replace{number}",
                "associationType": "urn:ihe:iti:2007:AssociationType:RPLC",
                "sourceObject": f"Document{number:02d}",
                "targetObject": "urn:uuid:0e5c4f3a-6a4e-4a55-9a3b-1d2f3c4b5a69",
            },
        )
    members[name] = ET.tostring(root, xml_declaration=True, encoding="utf-8")
    package = xdm.parse_package(samples.zip_members(*members.items()))
    values: dict[str, object] = {
        "author": Mailbox("dr.durand@cabinet.mssante.fr", "Dr DURAND"),
        "to": (Mailbox("dpi@chu-y.mssante.fr"),),
        "cc": (Mailbox("radiologie@chu-y.mssante.fr"),),
        "subject": "XDM/1.0/DDM+CR d'imagerie PAT-TROIS DOMINIQUE 28/03/1979",
        "body": "Bonjour,\r\nveuillez trouver le compte rendu.\r\n",
        "message_id": "<cr.2026.42@cabinet.mssante.fr>",
        "reply_to": Mailbox("secretariat@cabinet.mssante.fr"),
        "patient": package.patient,
        "documents": package.documents,
        "package_metadata": package.metadata,
    }
    values.update(mail)
    return MessageRecord(**values)  # type: ignore[arg-type]


def version_two(**changes: object) -> Document:
    values: dict[str, object] = {
        "document_id": "1.2.250.1.213.1.1.1.45.2^9",
        "version": 2,
        "replaces": PARENT,
    }
    values.update(changes)
    return samples.cda_document(set_id="1.2.250.1.213.1.1.1.45.2^1", **values)


def mdm_of(mail: MessageRecord, **options: object) -> hl7.Message:
    document = cda_documents(mail)[0]
    actions = document_actions(mail.package_metadata[0])
    action = actions[document.unique_id]
    built = build_mdm(
        mail,
        document,
        header=HEADER,
        control_id=control_id_for(mail, document, action),
        now=NOW,
        action=action,
        **options,  # type: ignore[arg-type]
    )
    return hl7.parse(built.text)


def field(message: hl7.Message, name: str, number: int, comp: int = 1, rep: int = 1, index: int = 1) -> str:
    return str(message.extract_field(name, index, number, rep, comp, 1))


def segments(message: hl7.Message) -> list[str]:
    return [str(seg[0]) for seg in message]


def test_an_original_document_becomes_an_mdm_t02_with_every_profile_field() -> None:
    mail = received(samples.cda_document(), samples.pdf_document())
    m = mdm_of(mail)
    assert (
        segments(m)
        == ["MSH", "EVN", "PID", "PV1", "ORC", "OBR", "TXA", "OBX", "PRT", "PRT", "PRT", "PRT"] + ["OBX"] * 5
    )
    assert [field(m, "MSH", n) for n in (3, 4, 5, 6, 11, 12, 17, 18)] == [
        "MSSGW", "CHU_Y", "DPI", "CHU_Y", "P", "2.6", "FRA", "UNICODE UTF-8",
    ]  # fmt: skip
    assert (
        str(m.segment("MSH")[9]) == "MDM^T02^MDM_T02" and str(m.segment("MSH")[21]) == "1.1^CISIS_CDA_HL7_LPS"
    )
    assert field(m, "MSH", 7) == "20261207083000+0000" and field(m, "EVN", 2) == "20261207083000+0000"
    assert len(field(m, "MSH", 10)) == 20
    # PID: the CDA's ids (INS typed INS with its OID, then the local IPP), birth and used names, traits.
    assert str(m.segment("PID")[3]) == (
        "279035121518989^^^ASIP-SANTE-INS-NIR-TEST&1.2.250.1.213.1.4.10&ISO^INS"
        "~1234567890121^^^&1.2.3.4.567.8.9.10&ISO^PI"
    )
    assert str(m.segment("PID")[5]) == "PAT-TROIS^DOMINIQUE^^^^^L~MARTIN^DOMINIQUE^^^^^D"
    assert (field(m, "PID", 7), field(m, "PID", 8), field(m, "PID", 11, 9)) == ("19790328", "F", "63220")
    assert field(m, "PID", 11, 7) == "BDL"
    assert field(m, "PV1", 2) == "N" and field(m, "ORC", 1) == "NW"
    assert str(m.segment("OBR")[4]) == "18748-4^CR d'imagerie médicale^LN"
    txa = m.segment("TXA")
    assert (str(txa[1]), str(txa[2]), str(txa[3]), str(txa[17])) == ("1", "18748-4", "TEXT", "AU")
    assert str(txa[12]) == "7^^1.2.250.1.213.1.1.1.45.2^ISO" and str(txa[13]) == ""
    document = m.segment("OBX")
    assert (str(document[1]), str(document[2]), str(document[3])) == (
        "1",
        "ED",
        "18748-4^CR d'imagerie médicale^LN",
    )
    assert [field(m, "OBX", 5, c) for c in (2, 3, 4)] == ["text", "XML", "Base64"]
    assert base64.b64decode(field(m, "OBX", 5, 5)) == mail.documents[0].content
    assert field(m, "OBX", 11) == "F"


def test_the_prt_segments_name_sender_recipients_and_reply_to_after_the_document() -> None:
    m = mdm_of(received(samples.cda_document()))
    prts = [seg for seg in m if str(seg[0]) == "PRT"]
    assert [(str(p[2]), str(p[4]), str(p[15])) for p in prts] == [
        ("UC", "SB^Send by^participation", "^^X.400^dr.durand@cabinet.mssante.fr"),
        ("UC", "RCT^Result Copies To^participation", "^^X.400^dpi@chu-y.mssante.fr"),
        ("UC", "RCT^Result Copies To^participation", "^^X.400^radiologie@chu-y.mssante.fr"),
        ("UC", "REPLY^Reply To^participation", "^^X.400^secretariat@cabinet.mssante.fr"),
    ]


def test_the_mail_obx_carries_message_id_subject_and_the_body_in_base64() -> None:
    mail = received(samples.cda_document())
    m = mdm_of(mail)
    assert field(m, "OBX", 1, index=2) == "2" and field(m, "OBX", 2, index=2) == "ED"
    assert field(m, "OBX", 3, index=2) == "<cr.2026.42@cabinet.mssante.fr>"
    assert field(m, "OBX", 3, 2, index=2) == mail.subject
    assert base64.b64decode(field(m, "OBX", 5, 5, index=2)).decode() == mail.body_text
    assert field(m, "OBX", 11, index=2) == "F"


def test_metadmpmss_flags_follow_the_confidentiality_codes_in_the_profile_order() -> None:
    m = mdm_of(
        received(samples.cda_document(confidentiality=(xds.INVISIBLE_PATIENT, xds.INVISIBLE_REP_LEGAUX)))
    )
    flags = [
        (field(m, "OBX", 1, index=i), field(m, "OBX", 3, index=i), field(m, "OBX", 5, index=i))
        for i in range(3, 7)
    ]
    assert flags == [
        ("3", "MASQUE_PS", "N"),
        ("4", "INVISIBLE_PATIENT", "Y"),
        ("5", "INVISIBLE_REP_LEGAUX", "Y"),
        ("6", "MODIF_CONF_CODE", "N"),
    ]
    for index in range(3, 7):
        assert field(m, "OBX", 2, index=index) == "CWE" and field(m, "OBX", 3, 3, index=index) == "MetaDMPMSS"
        assert field(m, "OBX", 5, 3, index=index) == "expandedYes-NoIndicator"
        assert field(m, "OBX", 11, index=index) == "F"


def test_an_rplc_association_makes_a_t10_naming_the_replaced_document() -> None:
    m = mdm_of(received(version_two(), rplc=(1,)))
    assert str(m.segment("MSH")[9]) == "MDM^T10^MDM_T02" and field(m, "ORC", 1) == "RO"
    assert str(m.segment("TXA")[12]) == "9^^1.2.250.1.213.1.1.1.45.2^ISO"
    assert str(m.segment("TXA")[13]) == "6^^1.2.250.1.213.1.1.1.45.2^ISO"
    assert field(m, "OBX", 11) == "C"


def test_the_action_slot_c_is_a_replacement_and_d_a_deletion() -> None:
    assert str(mdm_of(received(version_two(), slots={1: "C"})).segment("MSH")[9]) == "MDM^T10^MDM_T02"
    deletion = mdm_of(received(version_two(), slots={1: "D"}, rplc=(1,)))
    assert str(deletion.segment("MSH")[9]) == "MDM^T04^MDM_T02"
    assert field(deletion, "ORC", 1) == "CA" and field(deletion, "OBX", 11) == "D"
    assert str(deletion.segment("TXA")[12]) == "9^^1.2.250.1.213.1.1.1.45.2^ISO"


def test_document_actions_read_each_entry_and_refuse_an_unknown_action() -> None:
    mail = received(samples.cda_document(), version_two(), samples.pdf_document(), rplc=(2,), slots={3: "d"})
    assert list(document_actions(mail.package_metadata[0]).values()) == [
        DocumentAction.ORIGINAL,
        DocumentAction.REPLACEMENT,
        DocumentAction.DELETION,
    ]
    with pytest.raises(MetadataError, match="'X' is not C or D"):
        document_actions(received(samples.cda_document(), slots={1: "X"}).package_metadata[0])


def test_modif_conf_code_is_y_when_a_replacement_changes_the_masks() -> None:
    mail = received(version_two(confidentiality=(xds.INVISIBLE_PATIENT,)), rplc=(1,))
    changed = mdm_of(mail, previous_masks=frozenset({"MASQUE_PS", "INVISIBLE_PATIENT"}))
    same = mdm_of(mail, previous_masks=frozenset({"INVISIBLE_PATIENT"}))
    assert field(changed, "OBX", 5, index=6) == "Y" and field(same, "OBX", 5, index=6) == "N"


@settings(max_examples=30, deadline=None)
@given(st.sets(st.sampled_from(sorted(xds.MASKING_CODES))), st.sampled_from(["UNICODE UTF-8", "8859/15"]))
def test_the_masks_an_mdm_was_built_with_are_read_back_from_its_bytes(masks: set[str], charset: str) -> None:
    mail = received(samples.cda_document(confidentiality=tuple(xds.MASKING_CODES[c] for c in masks)))
    header = MdmHeader("MSSGW", "CHU_Y", "DPI", "CHU_Y", charset=charset)
    mdm = build_mdm(mail, cda_documents(mail)[0], header=header, control_id="X1", now=NOW)
    assert masks_sent(mdm.encode()) == frozenset(masks)


def test_a_replacement_without_parent_id_and_a_cda_without_ins_are_refused() -> None:
    mail = received(samples.cda_document(), rplc=(1,))
    with pytest.raises(MdmError, match="must name the document it replaces"):
        mdm_of(mail)
    no_ins = b"<ClinicalDocument xmlns='urn:hl7-org:v3'><id root='1.2.3'/></ClinicalDocument>"
    bare = Document("DOC0001.XML", no_ins, "text/xml", "x", samples.CR_IMAGERIE, samples.NOW, "1.2.3")
    with pytest.raises(MdmError, match="names no INS"):
        build_mdm(mail, bare, header=HEADER, control_id="X1", now=NOW)
    with pytest.raises(MdmError, match="not a CDA"):
        build_mdm(mail, samples.pdf_document(), header=HEADER, control_id="X1", now=NOW)


def test_only_cda_documents_become_mdms_and_control_ids_are_stable_and_distinct() -> None:
    mail = received(samples.cda_document(), version_two(), samples.pdf_document())
    first, second = cda_documents(mail)
    original = DocumentAction.ORIGINAL
    assert control_id_for(mail, first, original) == control_id_for(mail, first, original)
    assert control_id_for(mail, first, original) != control_id_for(mail, second, original)


def test_8859_15_keeps_the_euro_sign_and_replaces_what_it_lacks() -> None:
    mail = received(samples.cda_document(), subject="Facture 10 € ✓")
    header = MdmHeader("MSSGW", "CHU_Y", "DPI", "CHU_Y", charset="8859/15")
    built = build_mdm(mail, cda_documents(mail)[0], header=header, control_id="X2", now=NOW)
    text = built.encode().decode("iso-8859-15")
    assert field(hl7.parse(text), "OBX", 3, 2, index=2) == "Facture 10 € ?"
    with pytest.raises(MdmError, match="MSH-18"):
        build_mdm(mail, cda_documents(mail)[0], header=MdmHeader("A", "B", "C", "D", charset="8859/1"),
                  control_id="X3", now=NOW)  # fmt: skip


def test_a_naive_time_is_refused() -> None:
    mail = received(samples.cda_document())
    with pytest.raises(ValueError, match="no time zone"):
        build_mdm(mail, cda_documents(mail)[0], header=HEADER, control_id="X4", now=datetime(2026, 12, 7))


_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60)
_NAME = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=30).filter(
    lambda s: s.strip() == s and s.strip()
)
_MAIL = received(samples.cda_document())


@settings(max_examples=60, deadline=None)
@given(subject=_TEXT, body=_TEXT, application=_NAME, consumer=_NAME)
def test_any_subject_body_and_names_round_trip_through_er7(
    subject: str, body: str, application: str, consumer: str
) -> None:
    mail = MessageRecord(
        **{**{f: getattr(_MAIL, f) for f in _MAIL.__slots__}, "subject": subject, "body": body}
    )  # type: ignore[arg-type]
    header = MdmHeader(application, "CHU|Y", consumer, "CHU^Y")
    built = build_mdm(mail, cda_documents(mail)[0], header=header, control_id="C&1", now=NOW)
    m = hl7.parse(built.text)
    assert len(m) == 17
    assert [field(m, "MSH", n) for n in (3, 4, 5, 6, 10)] == [application, "CHU|Y", consumer, "CHU^Y", "C&1"]
    assert field(m, "OBX", 3, 2, index=2) == subject.replace("\r", " ").replace("\n", " ")
    assert base64.b64decode(field(m, "OBX", 5, 5, index=2)).decode() == body


@settings(max_examples=40, deadline=None)
@given(family=_NAME, given_name=_NAME)
def test_any_patient_name_round_trips_through_pid_5(family: str, given_name: str) -> None:
    the_patient = samples.patient(birth_name=family, given_name=given_name, used_name=None)
    document = samples.cda_document(the_patient)
    mail = MessageRecord(Mailbox("a@b.mssante.fr"), (Mailbox("c@d.mssante.fr"),), "s", documents=(document,))
    header = cda.read_header(document.content)
    assert header.patient is not None
    m = hl7.parse(build_mdm(mail, document, header=HEADER, control_id="N1", now=NOW).text)
    assert (field(m, "PID", 5), field(m, "PID", 5, 2)) == (
        header.patient.birth_name,
        header.patient.given_name,
    )


@settings(max_examples=40, deadline=None)
@given(local=st.text(alphabet="abz.&^~|\\-", min_size=1, max_size=20), message_id=_NAME)
def test_addresses_and_message_id_with_delimiters_round_trip(local: str, message_id: str) -> None:
    address = f"{local}@cabinet.mssante.fr"
    mail = MessageRecord(
        Mailbox(address), (Mailbox(address),), "s", message_id=message_id, documents=_MAIL.documents
    )
    m = hl7.parse(build_mdm(mail, cda_documents(mail)[0], header=HEADER, control_id="P1", now=NOW).text)
    assert field(m, "PRT", 15, 4) == address and field(m, "PRT", 15, 4, index=2) == address
    assert field(m, "OBX", 3, index=2) == message_id
