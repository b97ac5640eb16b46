"""mappers.mdn: the ANS MDN built by the gateway reads back; received MDNs, including the ANS example with
its quirks, are read; anything else is refused with MdnError, never another exception."""

from __future__ import annotations

from datetime import UTC, datetime
from email.message import EmailMessage
from email.parser import BytesParser

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mappers.folding import READ_POLICY
from mappers.headers import strip_accents
from mappers.mdn import ERROR_LABELS, Disposition, MdnError, build_mdn, original_attachments, parse_mdn
from mappers.records import Attachment
from tests.unit.mappers import samples

NOW = datetime(2024, 2, 20, 4, 19, tzinfo=UTC)
ORIGINAL = (
    b"From: serviceY@chb.mssante.fr\r\nTo: serviceY_auto@chb.mssante.fr\r\n"
    b"Subject: XDM/1.0/DDM+ECHOGRAPHIE ABDOMINOPELVIENNE CORSE FIGATELLIX 12/10/1988\r\n"
    b"Message-ID: <199509192301.23456@chb.mssante.fr>\r\n\r\nbody\r\n"
)

ANS_EXAMPLE = samples.ans_shaped_mdn(
    "<199509192301.23456@chb.mssante.fr>", "serviceY_auto@chb.mssante.fr", "serviceY@chb.mssante.fr"
)


def parsed(raw: bytes) -> EmailMessage:
    message = BytesParser(policy=READ_POLICY).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    return message


def test_the_ans_example_is_read_with_its_error_code() -> None:
    report = parse_mdn(parsed(ANS_EXAMPLE))
    assert report is not None
    assert report.final_recipient == "serviceY_auto@chb.mssante.fr"
    assert report.original_recipient == "serviceY_auto@chb.mssante.fr"
    assert report.original_message_id == "<199509192301.23456@chb.mssante.fr>"  # the original's own id
    assert report.disposition == Disposition(
        type="processed", automatic=True, error_code=902, error_label="Identifiant patient inconnu"
    )


@pytest.mark.parametrize("code", sorted(ERROR_LABELS))
def test_every_ans_error_code_round_trips(code: int) -> None:
    mdn = build_mdn(
        ORIGINAL,
        disposition=Disposition(error_code=code),
        final_recipient="serviceY_auto@chb.mssante.fr",
        sender="serviceY_auto@chb.mssante.fr",
        recipient="serviceY@chb.mssante.fr",
        hostname="pfi.chb.mssante.fr",
        now=NOW,
        attachments=(Attachment("IHE_XDM.zip", "application/zip", b"PK\x03\x04zip"),),
    )
    message = parsed(mdn.as_bytes())
    report = parse_mdn(message)
    assert report is not None and report.disposition.error_code == code
    assert report.original_message_id == "<199509192301.23456@chb.mssante.fr>"
    assert message["Subject"].startswith(f"[KO Intégration système !][{code}] XDM/1.0/DDM+ECHOGRAPHIE")
    assert original_attachments(message) == (Attachment("IHE_XDM.zip", "application/zip", b"PK\x03\x04zip"),)
    # Part by part, the structure of the ANS MDN page (MSSANTE.md §8.3): human text naming the error word for
    # word, the disposition fields, the original message itself, then its attachments re-attached by name.
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "disposition-notification"
    human, notification, returned, zip_part = message.get_payload()
    assert [p.get_content_type() for p in (human, notification, returned, zip_part)] == [
        "text/plain",
        "message/disposition-notification",
        "message/rfc822",
        "application/zip",
    ]
    assert f"l'erreur {code}^{ERROR_LABELS[code]}" in human.get_content()
    fields = notification.get_payload()[0]
    label = strip_accents(ERROR_LABELS[code])  # the field is US-ASCII (RFC 8098)
    assert (
        fields["Disposition"] == f"automatic-action/MDN-sent-automatically; processed/Error: {code}^{label}"
    )
    assert fields["Final-Recipient"] == "rfc822; serviceY_auto@chb.mssante.fr"
    assert fields["Original-Message-ID"] == "<199509192301.23456@chb.mssante.fr>"
    assert "Original-Recipient" not in fields  # the original had none (RFC 8098 § 3.2.3)
    assert returned.get_content().as_bytes().replace(b"\n", b"\r\n") == ORIGINAL
    assert (zip_part.get_filename(), zip_part.get_param("name")) == ("IHE_XDM.zip", "IHE_XDM.zip")


def test_a_displayed_mdn_and_a_plain_message_are_told_apart() -> None:
    mdn = build_mdn(
        ORIGINAL,
        disposition=Disposition(type="displayed", automatic=False),
        final_recipient="serviceY_auto@chb.mssante.fr",
        sender="serviceY_auto@chb.mssante.fr",
        recipient="serviceY@chb.mssante.fr",
        hostname="pfi.chb.mssante.fr",
        now=NOW,
    )
    report = parse_mdn(parsed(mdn.as_bytes()))
    assert report is not None and report.disposition == Disposition(type="displayed", automatic=False)
    assert mdn["Subject"] == "XDM/1.0/DDM+ECHOGRAPHIE ABDOMINOPELVIENNE CORSE FIGATELLIX 12/10/1988"
    assert parse_mdn(parsed(ORIGINAL)) is None


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ("Disposition: automatic-action/MDN-sent-automatically; processed\n", "without Final-Recipient"),
        ("Final-Recipient: rfc822; a@b.fr\n", "without Disposition"),
        ("Final-Recipient: rfc822; a@b.fr\nDisposition: processed\n", "is not action-mode/sending-mode"),
        ("Final-Recipient: rfc822; a@b.fr\nDisposition: manual-action/MDN-sent-manually; read\n", "read"),
    ],
)
def test_a_broken_mdn_is_refused_with_the_reason(fields: str, error: str) -> None:
    raw = (
        "Content-Type: multipart/report; report-type=disposition-notification; boundary=b\n\n"
        f"--b\n\ntext\n--b\nContent-Type: message/disposition-notification\n\n{fields}--b--\n"
    ).encode()
    with pytest.raises(MdnError, match=error):
        parse_mdn(parsed(raw))


@given(st.text(max_size=200))
def test_any_disposition_text_gives_a_report_or_an_mdn_error(text: str) -> None:
    value = " ".join(text.replace("\r", " ").replace("\n", " ").split())
    raw = (
        "Content-Type: multipart/report; report-type=disposition-notification; boundary=b\n\n"
        "--b\nContent-Type: message/disposition-notification\n\n"
        f"Final-Recipient: rfc822; a@b.fr\nDisposition: {value}\n--b--\n"
    ).encode("utf-8", "surrogatepass")
    try:
        report = parse_mdn(parsed(raw))
    except MdnError:
        return
    assert report is not None and report.disposition.type in {
        "displayed",
        "dispatched",
        "processed",
        "deleted",
    }
