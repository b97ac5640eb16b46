"""MSSanté header rules: X-MSS-* values, document subject, display names, PDF names, [FIN], injection."""

from __future__ import annotations

import sys
import unicodedata
from dataclasses import replace
from datetime import UTC, date, datetime

import pytest

from mappers import headers
from mappers.documents import Code, Document
from mappers.headers import (
    DisplayName,
    DocumentSubject,
    HeaderInjectionError,
    HeaderValueError,
    SubjectError,
)
from mappers.patient import Patient, Sex
from tests.unit.mappers import samples


def vial(**changes: object) -> Patient:
    """The patient of the ECO.2.1.3 / ECO.2.1.6 examples (MSSANTE.md §4.1)."""
    values: dict[str, object] = {
        "matricule": "178112A01234509",
        "oid": "1.2.250.1.213.1.4.8",
        "birth_name": "Vial",
        "given_name": "Paul",
        "birth_date": date(1978, 11, 26),
        "sex": Sex.MALE,
    }
    values.update(changes)
    return Patient(**values)  # type: ignore[arg-type]


def biology(**changes: object) -> Document:
    values: dict[str, object] = {"type_code": samples.CR_BIOLOGIE, "title": "Bilan", **changes}
    return samples.cda_document(samples.patient(), **values)


# --- document subject (ECO.2.1.3) ---------------------------------------------------------------


def test_subject_of_one_document_follows_the_referential_example() -> None:
    subject = headers.document_subject(vial(), [biology()])

    assert subject == "XDM/1.0/DDM+CR d'examens biologiques VIAL Paul 26/11/1978"


def test_subject_of_several_documents_counts_them() -> None:
    subject = headers.document_subject(vial(), [biology(), samples.cda_document()])

    assert subject == "XDM/1.0/DDM+2 documents VIAL Paul 26/11/1978"


def test_subject_names_are_without_accents_and_nom_upper_case() -> None:
    patient = vial(birth_name="Lévêque-Œuvray", given_name="Éloïse", birth_date=None)

    assert headers.document_subject(patient, [biology()]) == (
        "XDM/1.0/DDM+CR d'examens biologiques LEVEQUE-OEUVRAY Eloise"
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [("Hélène", "Helene"), ("Œdipe", "OEdipe"), ("Ǽlfrid", "AElfrid"), ("Łukasz", "Lukasz"), ("ß", "ss")],
)
def test_accents_and_ligatures_are_removed(name: str, expected: str) -> None:
    assert headers.strip_accents(name) == expected


def test_subject_label_is_cut_to_forty_characters() -> None:
    long_label = Code("X", "Compte rendu " * 5, "1.2.3")
    subject = headers.document_subject(vial(), [biology(type_code=long_label)])

    label = subject.removeprefix(headers.SUBJECT_MARKER).split(" VIAL ")[0]
    assert label == ("Compte rendu " * 5)[:40].rstrip()
    assert len(label) <= headers.LABEL_MAX


def test_subject_without_birth_date_when_asked() -> None:
    subject = headers.document_subject(vial(), [biology()], with_birth_date=False)

    assert subject == "XDM/1.0/DDM+CR d'examens biologiques VIAL Paul"


def test_subject_needs_a_document_and_names() -> None:
    with pytest.raises(HeaderValueError, match="at least one document"):
        headers.document_subject(vial(), [])
    with pytest.raises(HeaderValueError, match="given name is empty"):
        headers.document_subject(vial(given_name=" "), [biology()])


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        (
            "XDM/1.0/DDM+CR d'examens biologiques VIAL Paul 26/11/1978",
            DocumentSubject("", "CR d'examens biologiques", "VIAL", "Paul", date(1978, 11, 26)),
        ),
        (
            "XDM/1.0/DDM+2 documents DE LA FONTAINE Jean 01/02/2003",
            DocumentSubject("", "2 documents", "DE LA FONTAINE", "Jean", date(2003, 2, 1), 2),
        ),
        (
            "[KO Intégration système !][902] XDM/1.0/DDM+ECHOGRAPHIE ABDOMINOPELVIENNE CORSE "
            "FIGATELLIX 12/10/1988",
            DocumentSubject(
                "[KO Intégration système !][902] ",
                "ECHOGRAPHIE ABDOMINOPELVIENNE",
                "CORSE",
                "FIGATELLIX",
                date(1988, 10, 12),
            ),
        ),
        (
            "Re: XDM/1.0/DDM+CR VIAL Paul",
            DocumentSubject("Re: ", "CR", "VIAL", "Paul"),
        ),
    ],
)
def test_document_subject_is_read_back(subject: str, expected: DocumentSubject) -> None:
    assert headers.parse_document_subject(subject) == expected


def test_patient_makes_the_split_of_composite_names_exact() -> None:
    patient = vial(birth_name="de la Fontaine", given_name="Jean Pierre")
    subject = headers.document_subject(patient, [biology()])

    parsed = headers.parse_document_subject(subject, patient=patient)

    assert parsed == DocumentSubject(
        "", "CR d'examens biologiques", "DE LA FONTAINE", "Jean Pierre", date(1978, 11, 26)
    )


def test_subject_that_is_not_a_document_subject_gives_none() -> None:
    assert headers.parse_document_subject("Compte rendu de consultation") is None


@pytest.mark.parametrize(
    ("subject", "message"),
    [
        ("XDM/1.0/DDM+CR VIAL Paul 31/02/1978", "31/02/1978 is not a date"),
        ("XDM/1.0/DDM+VIAL Paul", "expected 'XDM/1.0/DDM\\+<libellé> <NOM> <prénom>"),
    ],
)
def test_malformed_document_subject_is_reported(subject: str, message: str) -> None:
    with pytest.raises(SubjectError, match=message):
        headers.parse_document_subject(subject)


# --- display names (ECO.2.2.7) and Sender ---------------------------------------------------------


def test_personal_display_name_follows_the_referential_example() -> None:
    name = headers.person_display_name("Marie", "Martin", title="Dr", entity="Cabinet Medical")

    assert name == "Dr_Marie_MARTIN_Cabinet Medical"


def test_personal_display_name_needs_only_given_and_family_names() -> None:
    assert headers.person_display_name("Marie", "Martin") == "Marie_MARTIN"
    assert headers.person_display_name("Marie", "Martin", entity="Cardiologie") == (
        "Marie_MARTIN_Cardiologie"
    )


def test_underscore_inside_a_part_cannot_shift_the_parts() -> None:
    name = headers.person_display_name("Marie", "Martin", entity="Service_Cardio")

    assert name == "Marie_MARTIN_Service Cardio"
    assert headers.parse_display_name(name).entity == "Service Cardio"


def test_personal_display_name_without_family_name_is_refused() -> None:
    with pytest.raises(HeaderValueError, match="given name and a family name"):
        headers.person_display_name("Marie", "")


def test_organisational_display_name_is_the_entity() -> None:
    assert headers.organisation_display_name("Hopital C – Biologie") == "Hopital C – Biologie"
    with pytest.raises(HeaderValueError, match="is empty"):
        headers.organisation_display_name("  ")


@pytest.mark.parametrize(
    ("display_name", "expected"),
    [
        ("Dr_Marie_MARTIN_Cabinet Medical", DisplayName("Marie", "MARTIN", "Dr", "Cabinet Medical")),
        ("Marie_MARTIN", DisplayName("Marie", "MARTIN")),
        ("Tiphane_CHAPUT_Pharmacie_du_Centre", DisplayName("Tiphane", "CHAPUT", None, "Pharmacie_du_Centre")),
        ("Hopital C – Biologie", DisplayName(entity="Hopital C – Biologie")),
        ("CH_Lyon", DisplayName(entity="CH_Lyon")),
        ("MSF", DisplayName(entity="MSF")),
    ],
)
def test_display_name_is_read_back(display_name: str, expected: DisplayName) -> None:
    parsed = headers.parse_display_name(display_name)

    assert parsed == expected
    assert parsed.is_person is (expected.family_name is not None)


# --- PDF copy name (ECO.2.1.6) ---------------------------------------------------------------------


def test_pdf_name_follows_the_referential_example() -> None:
    name = headers.pdf_attachment_name(
        date(2015, 8, 2), "CR d'examens biologiques", "Vial", "Paul", "12150302014578"
    )

    assert name == "20150802_CR d'examens biologiques_VIAL_Paul_12150302014578.pdf"


def test_pdf_name_without_file_number_and_with_unsafe_characters() -> None:
    name = headers.pdf_attachment_name(date(2021, 1, 8), "CR/Imagerie: scanner", "Pât", "Lé")

    assert name == "20210108_CR-Imagerie- scanner_PAT_Le.pdf"


def test_pdf_name_type_is_cut_to_forty_characters() -> None:
    name = headers.pdf_attachment_name(date(2021, 1, 8), "T" * 60, "VIAL", "Paul")

    assert name == f"20210108_{'T' * 40}_VIAL_Paul.pdf"


def test_pdf_name_act_date_is_the_service_start_in_france() -> None:
    late_evening = datetime(2024, 1, 16, 23, 30, tzinfo=UTC)  # 00:30 on the 17th in Paris
    document = biology(service_start=late_evening, service_stop=None)  # the act that ended earlier: none

    name = headers.document_pdf_name(document, vial())

    assert name == "20240117_CR d'examens biologiques_VIAL_Paul.pdf"


def test_pdf_name_needs_type_and_names() -> None:
    with pytest.raises(HeaderValueError, match="mandatory"):
        headers.pdf_attachment_name(date(2021, 1, 8), "", "VIAL", "Paul")


# --- X-MSS-* headers (ECO.2.4.x, ECO.2.2.8) ------------------------------------------------------


def test_every_message_carries_the_product_reference() -> None:
    assert headers.mss_headers(None, [], nil_reference="DEV935997") == [("X-MSS-NIL", "DEV935997")]


def test_cda_documents_bring_codecda_and_ins() -> None:
    documents = [samples.cda_document(), biology(), samples.cda_document()]

    fields = headers.mss_headers(
        samples.patient(), documents, nil_reference="DEV935997", end_of_exchange=True
    )

    assert fields == [
        ("X-MSS-CODECDA", "18748-4,11502-2"),
        ("X-MSS-INS", "O"),
        ("X-MSS-NIL", "DEV935997"),
        ("X-MSS-MES", "FIN"),
    ]


@pytest.mark.parametrize(
    "changes",
    [
        {"birth_date": None},
        {"sex": Sex.UNKNOWN},
        {"matricule": "279035121518988"},  # wrong key
        {"oid": "1.2.3.4"},  # not an INS authority
    ],
)
def test_ins_is_n_unless_every_cda_holds_a_qualified_ins(changes: dict[str, object]) -> None:
    unqualified = samples.patient(**changes)
    # The flag describes what the documents hold, whatever the record says about the patient.
    documents = [samples.cda_document(), samples.cda_document(unqualified)]

    assert headers.ins_value(samples.patient(), documents) == "N"
    assert headers.ins_value(samples.patient(), documents[:1]) == "O"


SIGNATURE = (
    b'<Signature xmlns="http://www.w3.org/2000/09/xmldsig#"><SignedInfo/><SignatureValue>AA==</SignatureValue>'
    b"</Signature>"
)


@pytest.mark.parametrize("content", [b"<pas-du-xml", SIGNATURE], ids=["malformed", "xml-signature"])
def test_xml_that_is_not_a_clinical_document_is_no_cda(content: bytes) -> None:
    """ECO.2.4.1: the headers say a CDA travels only when a document's root is a ClinicalDocument; no
    fallback to the XDS typeCode of another XML document."""
    other = replace(samples.cda_document(), content=content)
    assert headers.ins_value(samples.patient(), [other]) is None
    assert headers.codecda_value([other]) is None
    assert [name for name, _ in headers.mss_headers(samples.patient(), [other], nil_reference="X")] == [
        "X-MSS-NIL"
    ]


def test_no_codecda_nor_ins_without_a_cda() -> None:
    documents = [samples.pdf_document()]

    assert headers.codecda_value(documents) is None
    assert headers.ins_value(samples.patient(), documents) is None


@pytest.mark.parametrize("reference", ["", "  "])
def test_empty_product_reference_is_refused(reference: str) -> None:
    with pytest.raises(HeaderValueError, match="convergence.esante.gouv.fr"):
        headers.nil_value(reference)


def test_received_header_values_are_read() -> None:
    assert headers.parse_codecda("34112-3, PRESC-BIO,15508-5") == ("34112-3", "PRESC-BIO", "15508-5")
    assert headers.parse_codecda(None) == ()
    assert headers.parse_ins_flag(" o ") is True
    assert headers.parse_ins_flag("N") is False
    assert headers.parse_ins_flag("oui") is None
    assert headers.is_end_of_exchange("FIN")
    assert not headers.is_end_of_exchange("fin")
    assert not headers.is_end_of_exchange(None)


# --- [FIN] ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "subject", ["[FIN]", "Re: [FIN]", "[FIN] Ordonnance", "RE : [fin]", "[ FIN ]", "Ordonnance [FIN]"]
)
def test_subject_carrying_fin_closes_the_exchange(subject: str) -> None:
    assert headers.subject_closes_exchange(subject)


@pytest.mark.parametrize(
    "subject", ["", "FIN", "Fin de traitement", "[Fin de traitement]", "[FINAL] Bilan", "(FIN)"]
)
def test_subject_without_fin_mark_does_not_close(subject: str) -> None:
    assert not headers.subject_closes_exchange(subject)


def test_fin_closes_only_an_exchange_with_a_patient() -> None:
    patient = "279035121518989@patient.mssante.fr"

    assert headers.closes_exchange("Re: [FIN]", ["a@b.mssante.fr", patient])
    assert not headers.closes_exchange("Re: [FIN]", ["a@b.mssante.fr"])
    assert not headers.closes_exchange("Ordonnance", [patient])


def test_exact_fin_subject_is_the_strict_reading() -> None:
    assert headers.is_exact_fin_subject(" [FIN] ")
    assert not headers.is_exact_fin_subject("Re: [FIN]")


# --- injection --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["a\r\nBcc: x@y.fr", "a\nb", "a\rb", "nul\x00", "esc\x1b[0m", "nel\x85", "ls\u2028", "ps\u2029"]
)
def test_control_characters_are_refused(value: str) -> None:
    with pytest.raises(HeaderInjectionError, match="Subject: control character U\\+"):
        headers.check_header_value(value, field="Subject")


def test_tab_and_unicode_are_ordinary_characters() -> None:
    assert headers.check_header_value("Résultats\tœuf – 東京", field="Subject") == "Résultats\tœuf – 東京"


def test_the_refused_characters_are_every_cc_zl_and_zp_but_tab() -> None:
    # Every code point, against the category rule check_header_value states (its regex must keep to it).
    for point in range(sys.maxunicode + 1):
        char = chr(point)
        refused = char != "\t" and unicodedata.category(char) in ("Cc", "Zl", "Zp")
        try:
            headers.check_header_value(f"a{char}", field="Subject")
        except HeaderInjectionError as error:
            assert refused, hex(point)
            assert str(error).startswith(f"Subject: control character U+{point:04X} at position 1 ")
        else:
            assert not refused, hex(point)


@pytest.mark.hostile_cda  # the forged code breaks the N1 schema: that is the point
def test_injection_through_a_cda_code_is_refused() -> None:
    evil = Code("11502-2\r\nBcc: x@y.fr", "CR", "2.16.840.1.113883.6.1")
    # The CDA header's own code (written as &#13;&#10; in the XML attribute) carries the injection.
    with pytest.raises(HeaderInjectionError, match="X-MSS-CODECDA"):
        headers.codecda_value([biology(type_code=evil)])


def test_a_cda_without_a_header_code_is_refused_not_given_its_type_code() -> None:
    coded = biology()
    bare = replace(coded, content=coded.content.replace(b"<code ", b"<notcode ", 1))

    with pytest.raises(HeaderValueError, match="has no readable header code"):
        headers.codecda_value([bare])


@pytest.mark.hostile_cda  # the forged code breaks the N1 schema: that is the point
def test_cda_code_with_spaces_is_refused() -> None:
    document = biology(type_code=Code("11502 2", "CR", "2.16.840.1.113883.6.1"))

    with pytest.raises(HeaderValueError, match="'11502 2' cannot be written"):
        headers.codecda_value([document])


def test_nil_field_puts_the_product_reference_first_once() -> None:
    raw = b"From: a@b.test\r\nSubject: x\r\n\r\nX-MSS-NIL: in the body does not count\r\n"
    assert headers.nil_field(raw, "DEV935997") == b"X-MSS-NIL: DEV935997\r\n"
    own = b"From: a@b.test\r\nx-mss-nil : LPS-42\r\n\r\nbody\r\n"
    assert headers.nil_field(own, "DEV935997") == b""
    with pytest.raises(headers.HeaderValueError, match="X-MSS-NIL: the product reference is empty"):
        headers.nil_field(raw, " ")
