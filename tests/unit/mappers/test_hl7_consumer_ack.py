"""The consumer's ACK → the result its document gets in the MDN, and one MDN for several documents.

ACKs are written here from the volet's ACK profile (MSH, MSA, ERR), not copied from the ANS files.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.message import EmailMessage

import pytest

from mappers.hl7_consumer_ack import (
    ConsumerAckError,
    DocumentResult,
    combine,
    document_result,
    no_answer,
    read_consumer_ack,
)
from mappers.mdn import build_mdn

MSH = "MSH|^~\\&|DPI|CHU_Y|MSSGW|CHU_Y|20261207083100||ACK^T02^ACK|A-77|P|2.6|||AL|AL|FRA|UNICODE UTF-8"
ORIGINAL = (
    b"From: dr.durand@cabinet.mssante.fr\r\nTo: dpi@chu-y.mssante.fr\r\n"
    b"Disposition-Notification-To: dr.durand@cabinet.mssante.fr\r\n"
    b"Message-ID: <cr.2026.42@cabinet.mssante.fr>\r\n"
    b"Subject: XDM/1.0/DDM+CR PAT-TROIS DOMINIQUE 28/03/1979\r\n\r\nBonjour\r\n"
)


def ack(code: str, *errs: str, control_id: str = "MDM-1") -> str:
    return "\r".join([MSH, f"MSA|{code}|{control_id}", *errs]) + "\r"


def result(er7: str) -> DocumentResult:
    return document_result(read_consumer_ack(er7, control_id="MDM-1"))


def test_aa_is_integrated() -> None:
    read = read_consumer_ack(ack("AA"), control_id="MDM-1")
    assert read.accepted and not read.retry_advised and read.errors == ()
    assert document_result(read).integrated


def test_ae_902_is_reported_with_the_volet_label_word_for_word() -> None:
    er7 = ack(
        "AE",
        "ERR||PID^1^3|207^Application error^HL70357|E|902^Identifiant de patient inconnu^HL70533"
        "|||Patient absent",
    )
    got = result(er7)
    assert (got.code, got.label) == (902, "Identifiant patient inconnu")
    assert "ERR-5 902" in got.detail and "ERR-8 Patient absent" in got.detail


def test_ar_207_without_application_code_is_906_with_the_consumer_text() -> None:
    read = read_consumer_ack(ack("AR", "ERR|||207^Application error^HL70357|E||||base indisponible"))
    assert read.retry_advised
    got = document_result(read)
    assert (got.code, got.label) == (906, "Erreur 'Autre'")
    assert "ERR-3 207 Application error" in got.detail and "base indisponible" in got.detail


def test_a_technical_error_keeps_its_hl7_code_and_the_volet_label() -> None:
    got = result(ack("AE", "ERR||MSH^1^12|203^Unsupported version id^HL70357|E"))
    assert (got.code, got.label) == (203, "Unsupported version")


def test_ce_is_an_error_and_ca_an_acceptance() -> None:
    assert result(ack("CE", "ERR|||101^Required field missing^HL70357|E")).code == 101
    assert result(ack("CA")).integrated


def test_an_error_ack_without_err_is_906() -> None:
    got = result(ack("AE"))
    assert (got.code, got.detail) == (906, "MSA-1 AE")


def test_a_consumer_code_outside_the_table_keeps_its_own_label() -> None:
    got = result(ack("AE", "ERR|||207^Application error^HL70357|E|950^Service fermé^L"))
    assert (got.code, got.label) == (950, "Service fermé")


def test_warnings_do_not_hide_the_error() -> None:
    got = result(ack("AE", "ERR|||0^Message accepted^HL70357|W|904^x^L", "ERR|||207^Application error|E|905"))
    assert (got.code, got.label) == (905, "L'INS transmis n'est pas complet")


@pytest.mark.parametrize(
    ("er7", "message"),
    [
        ("not hl7", "not an HL7 ACK"),
        (MSH + "\r", "not an HL7 ACK"),
        (ack("XX"), "is not an acknowledgement code"),
        (ack("AA", control_id="OTHER"), "acknowledges another message"),
    ],
)
def test_what_is_not_an_ack_to_our_mdm_is_refused(er7: str, message: str) -> None:
    with pytest.raises(ConsumerAckError, match=message):
        read_consumer_ack(er7, control_id="MDM-1")


def mdn(results: list[tuple[str, DocumentResult]]) -> EmailMessage:
    return build_mdn(
        ORIGINAL,
        disposition=combine(results),
        final_recipient="dpi@chu-y.mssante.fr",
        sender="dpi@chu-y.mssante.fr",
        recipient="dr.durand@cabinet.mssante.fr",
        hostname="mssgw.chu-y.fr",
        now=datetime(2026, 12, 7, 8, 32, tzinfo=UTC),
    )


def parts(message: EmailMessage) -> tuple[str, str]:
    human, notification = list(message.iter_parts())[:2]
    return str(human.get_content()), notification.as_string().replace("\r\n ", " ")


def test_several_documents_all_integrated_make_one_processed_mdn_listing_them() -> None:
    report = mdn([("CR imagerie", result(ack("AA"))), ("CR biologie", result(ack("AA")))])
    human, notification = parts(report)
    assert report["Subject"] == "XDM/1.0/DDM+CR PAT-TROIS DOMINIQUE 28/03/1979"
    assert "Disposition: automatic-action/MDN-sent-automatically; processed\r\n" in notification
    assert "- CR imagerie : intégré" in human and "- CR biologie : intégré" in human


def test_one_failed_document_makes_the_mdn_an_error_with_its_code_and_names_each_document() -> None:
    failed = result(ack("AE", "ERR|||207^Application error^HL70357|E|902^Identifiant de patient inconnu^L"))
    report = mdn(
        [("CR imagerie", result(ack("AA"))), ("CR biologie", failed), ("CR 3", no_answer("pas d'ACK"))]
    )
    human, notification = parts(report)
    assert (
        report["Subject"] == "[KO Intégration système !][902] XDM/1.0/DDM+CR PAT-TROIS DOMINIQUE 28/03/1979"
    )
    assert "processed/Error: 902^Identifiant patient inconnu" in notification
    assert "Le système a retourné l'erreur 902^Identifiant patient inconnu" in human
    assert "- CR imagerie : intégré" in human
    assert "- CR biologie : erreur 902^Identifiant patient inconnu (MSA-1 AE" in human
    assert "- CR 3 : erreur 906^Erreur 'Autre' (pas d'ACK)" in human


def test_combining_nothing_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="no document result"):
        combine([])
