"""Record ⇄ MIME: the messages mssgw builds, and what it reads back from untrusted mail."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mappers.addresses import AddressError
from mappers.headers import HeaderInjectionError
from mappers.mime import MessageBuildError, build_message, parse_message
from mappers.records import Attachment, Mailbox, MessageRecord

NOW = datetime(2026, 5, 12, 9, 30, 0, tzinfo=UTC)
NIL = "DEV935997"


def _build(record: MessageRecord) -> bytes:
    message = build_message(record, nil_reference=NIL, hostname="gw.chu-exemple.fr", now=NOW)
    return bytes(message)


def _simple(**changes: object) -> MessageRecord:
    fields: dict[str, object] = {
        "author": Mailbox("cardio@chu-exemple.mssante.fr", "CHU Exemple – Cardiologie"),
        "to": (Mailbox("marie.martin@medecin.mssante.fr", "Dr_Marie_MARTIN_Cabinet Medical"),),
        "subject": "Compte rendu de consultation",
        "body_text": "Chère consœur,\nci-joint le compte rendu.",
    }
    fields.update(changes)
    return MessageRecord(**fields)  # type: ignore[arg-type]


def test_simple_message_has_the_standard_headers_and_a_utf8_text_body() -> None:
    message = build_message(_simple(), nil_reference=NIL, hostname="gw.chu-exemple.fr", now=NOW)

    assert message["X-MSS-NIL"] == NIL
    assert "X-MSS-CODECDA" not in message
    assert "X-MSS-INS" not in message
    assert "X-MSS-MES" not in message
    assert message["Date"].datetime == NOW
    assert message["Message-ID"].startswith("<20260512093000.")
    assert message["Message-ID"].endswith("@gw.chu-exemple.fr>")
    assert message.get_content_type() == "text/plain"
    assert message.get_content_charset() == "utf-8"


def test_simple_message_round_trips() -> None:
    record = _simple(
        message_id="<abc@chu-exemple.fr>",
        date=NOW,
        on_behalf_of=Mailbox("mathilde@chu-exemple.fr", "MATHILDE"),
        reply_to=Mailbox("secretariat@chu-exemple.mssante.fr"),
        in_reply_to="<prev@medecin.mssante.fr>",
        references=("<first@medecin.mssante.fr>", "<prev@medecin.mssante.fr>"),
        disposition_notification_to=Mailbox("cardio@chu-exemple.mssante.fr"),
        attachments=(
            Attachment("ordonnance é.pdf", "application/pdf", b"%PDF-1.4\n..."),
            Attachment("notes.txt", "text/plain", b"ligne\r\n"),
        ),
        end_of_exchange=True,
    )

    assert parse_message(_build(record)) == record


def test_sender_names_the_person_writing_for_an_organisation() -> None:
    record = _simple(on_behalf_of=Mailbox("mathilde@msf.mssante.fr", "MATHILDE"))
    message = build_message(record, nil_reference=NIL, hostname="gw.chu-exemple.fr", now=NOW)

    assert str(message["Sender"]) == "MATHILDE <mathilde@msf.mssante.fr>"
    assert message["From"].addresses[0].display_name == "CHU Exemple – Cardiologie"


@pytest.mark.parametrize(
    "changes",
    [
        {"subject": "Résultats\r\nBcc: tout@le-monde.fr"},
        {"subject": "Résultats\nX-MSS-INS: O"},
        {"author": Mailbox("a@b.fr", "Nom\rX-Evil: 1")},
        {"in_reply_to": "<a@b>\r\nX-Evil: 1"},
        {"attachments": (Attachment("a\n.pdf", "application/pdf", b""),)},
    ],
)
def test_header_injection_from_the_store_is_refused(changes: dict[str, object]) -> None:
    with pytest.raises(HeaderInjectionError, match="control character"):
        _build(_simple(**changes))


def test_bad_address_is_refused_with_the_field_named() -> None:
    with pytest.raises(AddressError, match="To: 'pas une adresse' is not a valid mail address"):
        _build(_simple(to=(Mailbox("pas une adresse"),)))


def test_naive_date_is_refused() -> None:
    with pytest.raises(MessageBuildError, match="Date: .* has no time zone"):
        _build(_simple(date=datetime(2026, 5, 12, 9, 30)))
