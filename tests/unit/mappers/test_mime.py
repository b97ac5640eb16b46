"""Record ⇄ MIME: the messages mssgw builds, and what it reads back from untrusted mail."""

from __future__ import annotations

import contextlib
import io
import os
import zipfile
from dataclasses import replace
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mappers import headers, xdm
from mappers.addresses import AddressError, canonical_display_name
from mappers.archive import UnsafeArchiveError
from mappers.documents import Document
from mappers.errors import MappingError
from mappers.headers import HeaderInjectionError
from mappers.mime import (
    MESSAGE_POLICY,
    MessageBuildError,
    MimeError,
    MimeLimits,
    build_message,
    canonical_body,
    effective_subject,
    end_of_exchange,
    parse_message,
)
from mappers.patient import Patient
from mappers.pdf_copies import pdf_copy
from mappers.records import Attachment, Mailbox, MessageRecord
from tests.unit.mappers import samples

NOW = datetime(2026, 5, 12, 9, 30, 0, tzinfo=UTC)
# 150 generated records per run; MSSGW_ROUND_TRIPS=5000 for a long search before a release.
ROUND_TRIPS = int(os.environ.get("MSSGW_ROUND_TRIPS", "150"))
NIL = "DEV935997"


def _build(record: MessageRecord) -> bytes:
    message = build_message(record, nil_reference=NIL, hostname="gw.chu-exemple.fr", now=NOW)
    return bytes(message)


def _simple(**changes: object) -> MessageRecord:
    fields: dict[str, object] = {
        "author": Mailbox("cardio@chu-exemple.mssante.fr", "CHU Exemple – Cardiologie"),
        "to": (Mailbox("marie.martin@medecin.mssante.fr", "Dr_Marie_MARTIN_Cabinet Medical"),),
        "subject": "Compte rendu de consultation",
        "body": "Chère consœur,\nci-joint le compte rendu.",
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


def test_a_received_body_is_read_when_asked_for_and_a_copy_of_the_record_does_not_read_it() -> None:
    record = _simple(message_id="<lazy@chu-exemple.fr>", date=NOW)
    parsed = parse_message(_build(record))
    copied = replace(parsed, subject="copie")

    assert "<unread>" in repr(parsed.body) and copied.body is parsed.body
    assert copied.body_text == record.body_text and "<unread>" not in repr(parsed.body)
    assert parsed == record and hash(parsed) == hash(record)


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


# --- documents: IHE_XDM.zip + PDF copies (ECO.2.1.x, ECO.2.4.x) -----------------------------------


def _two_documents() -> tuple[Document, ...]:
    patient = samples.patient()
    first = samples.cda_document(patient)
    second = samples.cda_document(
        patient,
        title="Bilan sanguin",
        type_code=samples.CR_BIOLOGIE,
        document_id="1.2.250.1.213.1.1.1.45.2^9",
        service_start=datetime(2024, 1, 15, 8, 0, tzinfo=UTC),
    )
    documents = (first, second)
    # Inside the package the documents are DOC0001.XML, DOC0002.XML: that is what comes back.
    return tuple(
        replace(document, filename=name)
        for document, name in zip(documents, xdm.package_filenames(documents), strict=True)
    )


def _document_record(**changes: object) -> MessageRecord:
    values: dict[str, object] = {
        "to": (Mailbox("279035121518989@patient.mssante.fr"),),
        "subject": "",
        "patient": samples.patient(),
        "documents": _two_documents(),
        "date": samples.NOW,
        "message_id": "<cr-2024-0116@chu-exemple.fr>",
        "disposition_notification_to": Mailbox("cardio@chu-exemple.mssante.fr"),
    }
    values.update(changes)
    return _simple(**values)


def test_message_for_a_patient_with_two_cda_documents() -> None:
    record = _document_record(attachments=(Attachment("consignes.txt", "text/plain", b"A jeun."),))

    message = build_message(
        record, nil_reference=NIL, hostname="gw.chu-exemple.fr", now=NOW, file_number="12150302014578"
    )

    assert message["Subject"] == "XDM/1.0/DDM+2 documents PAT-TROIS DOMINIQUE 28/03/1979"
    assert message["X-MSS-CODECDA"] == "18748-4,11502-2"
    assert message["X-MSS-INS"] == "O"
    assert message["X-MSS-NIL"] == NIL
    assert message.get_content_type() == "multipart/mixed"
    parts = [(p.get_content_type(), p.get_filename()) for p in message.iter_attachments()]
    assert parts == [
        ("application/zip", "IHE_XDM.zip"),
        ("application/pdf", "20240116_CR d'imagerie médicale_PAT-TROIS_DOMINIQUE_12150302014578.pdf"),
        ("application/pdf", "20240115_CR d'examens biologiques_PAT-TROIS_DOMINIQUE_12150302014578.pdf"),
        ("text/plain", "consignes.txt"),
    ]
    pdf = next(p for p in message.iter_attachments() if p.get_content_type() == "application/pdf")
    assert pdf.get_content() == samples.PDF


def test_message_with_two_cda_documents_round_trips() -> None:
    record = _document_record(attachments=(Attachment("consignes.txt", "text/plain", b"A jeun."),))

    parsed = parse_message(_build(record))

    assert parsed.problems == ()
    assert parsed == replace(record, subject="XDM/1.0/DDM+2 documents PAT-TROIS DOMINIQUE 28/03/1979")


def test_a_reply_keeps_its_document_subject() -> None:
    subject = "RE: XDM/1.0/DDM+CR d'imagerie médicale PAT-TROIS DOMINIQUE"
    message = build_message(
        _document_record(subject=subject), nil_reference=NIL, hostname="gw.chu-exemple.fr", now=NOW
    )

    assert message["Subject"] == subject


def test_documents_without_a_patient_are_refused() -> None:
    with pytest.raises(MessageBuildError, match="must name its patient"):
        _build(_document_record(patient=None))


def test_structured_cda_without_pdf_copy_is_refused_unless_allowed() -> None:
    structured = replace(
        _two_documents()[0],
        content=b'<ClinicalDocument xmlns="urn:hl7-org:v3">'
        b'<code code="18748-4" codeSystem="2.16.840.1.113883.6.1"/>'
        b"<component><structuredBody/></component></ClinicalDocument>",
    )
    record = _document_record(documents=(structured,))

    with pytest.raises(MessageBuildError, match="has no PDF copy"):
        _build(record)
    message = build_message(
        record, nil_reference=NIL, hostname="gw.chu-exemple.fr", now=NOW, require_pdf_copies=False
    )
    assert [p.get_filename() for p in message.iter_attachments()] == ["IHE_XDM.zip"]


def test_same_type_same_day_copies_get_distinct_names() -> None:
    first = _two_documents()[0]
    second = replace(first, unique_id="1.2.250.1.213.1.1.1.45.2^10", filename="DOC0002.XML")
    message = build_message(
        _document_record(documents=(first, second)),
        nil_reference=NIL,
        hostname="gw.chu-exemple.fr",
        now=NOW,
    )

    names = [p.get_filename() for p in message.iter_attachments()][1:]
    assert names == [
        "20240116_CR d'imagerie médicale_PAT-TROIS_DOMINIQUE.pdf",
        "20240116_CR d'imagerie médicale_PAT-TROIS_DOMINIQUE (2).pdf",
    ]


def test_end_of_exchange_sets_x_mss_mes() -> None:
    message = build_message(
        _simple(end_of_exchange=True), nil_reference=NIL, hostname="gw.chu-exemple.fr", now=NOW
    )

    assert message["X-MSS-MES"] == "FIN"


@pytest.mark.parametrize(
    ("subject", "recipient", "closes"),
    [
        ("[FIN]", "279035121518989@patient.mssante.fr", True),
        ("Re: [FIN] Ordonnance", "279035121518989@patient.mssante.fr", True),
        ("Ordonnance", "279035121518989@patient.mssante.fr", False),
        ("[FIN]", "marie.martin@medecin.mssante.fr", False),
    ],
)
def test_fin_subject_to_a_patient_adds_x_mss_mes(subject: str, recipient: str, closes: bool) -> None:
    record = _simple(subject=subject, to=(Mailbox(recipient),))
    message = build_message(record, nil_reference=NIL, hostname="gw.chu-exemple.fr", now=NOW)

    assert (message["X-MSS-MES"] == "FIN") is closes
    assert message["Subject"] == subject


# --- parsing untrusted mail -------------------------------------------------------------------------


def _raw(content_type: str, body: str, *, headers: str = "") -> bytes:
    head = (
        "From: Dr_Marie_MARTIN <marie.martin@medecin.mssante.fr>\r\n"
        "To: cardio@chu-exemple.mssante.fr\r\n"
        "Subject: essai\r\n"
        f"{headers}"
        "MIME-Version: 1.0\r\n"
        f"Content-Type: {content_type}\r\n\r\n"
    )
    return (head + body).encode()


def _nested(depth: int) -> bytes:
    body = "texte\r\n"
    content_type = "text/plain"
    for level in range(depth):
        boundary = f"b{level}"
        body = f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n{body}\r\n--{boundary}--\r\n"
        content_type = f'multipart/mixed; boundary="{boundary}"'
    return _raw(content_type, body)


def _many_parts(count: int) -> bytes:
    parts = "".join(f"--b\r\nContent-Type: text/plain\r\n\r\npart {n}\r\n" for n in range(count))
    return _raw('multipart/mixed; boundary="b"', parts + "--b--\r\n")


def test_deep_nesting_is_refused_with_the_limit_named() -> None:
    assert parse_message(_nested(5)).body_text == "texte"
    with pytest.raises(MimeError, match="nested 11 levels deep; the limit is 10 levels"):
        parse_message(_nested(11))


def test_nesting_deep_enough_to_exhaust_the_parser_is_refused() -> None:
    with pytest.raises(MimeError, match="more than 250 MIME parts"):
        parse_message(_nested(3000))
    with pytest.raises(MimeError, match="nested too deeply to parse|nested 11 levels deep"):
        parse_message(_nested(3000), limits=MimeLimits(max_parts=10_000))


def test_too_many_parts_are_refused() -> None:
    assert len(parse_message(_many_parts(20)).attachments) == 19
    with pytest.raises(MimeError, match="more than 250 MIME parts"):
        parse_message(_many_parts(300))
    with pytest.raises(MimeError, match="more than 5 MIME parts"):
        parse_message(_many_parts(20), limits=MimeLimits(max_parts=5))


def test_part_bombs_are_refused_before_the_parser_builds_them() -> None:
    # 200 000 parts would keep the email package busy for ten seconds.
    with pytest.raises(MimeError, match="more than 250 MIME parts"):
        parse_message(_many_parts(200_000))


def test_a_message_of_countless_short_lines_is_refused() -> None:
    data = _raw("text/plain", "x\r\n" * 2000)

    assert parse_message(data).body_text.count("x") == 2000
    with pytest.raises(MimeError, match="lines; the limit is 1000"):
        parse_message(data, limits=MimeLimits(max_lines=1000))


def test_a_header_field_too_long_to_parse_quickly_is_refused() -> None:
    data = b"From: a@b.fr\r\nSubject: " + b"=?utf-8?q?=C3=A9?= " * 2000 + b"\r\n\r\nx\r\n"

    with pytest.raises(MimeError, match="header field Subject is 38000 characters long"):
        parse_message(data)


def test_oversized_message_is_refused_before_parsing() -> None:
    with pytest.raises(MimeError, match="exceeds the limit of 100 bytes"):
        parse_message(b"x" * 101, limits=MimeLimits(max_bytes=100))


def test_message_without_from_is_refused() -> None:
    with pytest.raises(MimeError, match="no From address"):
        parse_message(b"To: a@b.fr\r\nSubject: x\r\n\r\nbody\r\n")


def test_html_alternative_is_dropped_and_html_only_body_kept() -> None:
    alternative = (
        "--a\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nBonjour\r\n"
        "--a\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Bonjour</p>\r\n--a--\r\n"
    )
    parsed = parse_message(_raw('multipart/alternative; boundary="a"', alternative))
    assert (parsed.body_text, parsed.attachments) == ("Bonjour", ())

    html_only = parse_message(_raw("text/html; charset=utf-8", "<p>Bonjour</p>\r\n"))
    assert html_only.body_text == ""
    assert html_only.attachments == (Attachment("attachment-1.html", "text/html", b"<p>Bonjour</p>\r\n"),)


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\\\Users\\\\x\\\\cr.pdf", "cr.pdf"),
        ("..", "attachment-1.bin"),
        ("", "attachment-1.bin"),
    ],
)
def test_attachment_names_are_reduced_to_a_bare_name(filename: str, expected: str) -> None:
    body = (
        "--b\r\nContent-Type: application/octet-stream\r\n"
        f'Content-Disposition: attachment; filename="{filename}"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\nAAEC\r\n--b--\r\n"
    )
    parsed = parse_message(_raw('multipart/mixed; boundary="b"', body))

    assert [a.filename for a in parsed.attachments] == [expected]


def test_unknown_charset_still_gives_the_text() -> None:
    parsed = parse_message(_raw("text/plain; charset=x-unknown", "Bonjour\r\n"))

    assert parsed.body_text == "Bonjour"


def test_end_of_exchange_and_minus_zero_date_are_read() -> None:
    parsed = parse_message(
        _raw("text/plain", "x\r\n", headers="X-MSS-MES: FIN\r\nDate: Wed, 20 Feb 2024 00:19:00 -0000\r\n")
    )

    assert parsed.end_of_exchange
    assert parsed.date == datetime(2024, 2, 20, 0, 19, tzinfo=UTC)


def _with_xdm(record: MessageRecord, *, rename: str | None = None, **header_changes: str) -> bytes:
    message = build_message(record, nil_reference=NIL, hostname="gw.chu-exemple.fr", now=NOW)
    for name, value in header_changes.items():
        del message[name.replace("_", "-")]
        message[name.replace("_", "-")] = value
    if rename is not None:
        for part in message.iter_attachments():
            if part.get_filename() == "IHE_XDM.zip":
                part.set_param("filename", rename, header="Content-Disposition")
    return bytes(message)


def test_xdm_is_found_whatever_the_case_of_its_name() -> None:
    parsed = parse_message(_with_xdm(_document_record(), rename="ihe_xdm.ZIP"))

    assert parsed.patient == samples.patient()
    assert len(parsed.documents) == 2
    assert parsed.attachments == ()


def test_headers_contradicting_the_package_are_flagged() -> None:
    data = _with_xdm(_document_record(), X_MSS_CODECDA="34112-3", X_MSS_INS="N", Subject="Bilan")

    problems = parse_message(data).problems

    assert problems == (
        "X-MSS-CODECDA says 34112-3, the CDA headers say 18748-4,11502-2",
        "X-MSS-INS says N but the package holds a qualified INS",
        "the subject does not start with XDM/1.0/DDM+ (ECO.2.1.3)",
    )


def test_missing_mss_headers_are_flagged() -> None:
    message = build_message(_document_record(), nil_reference=NIL, hostname="gw.fr", now=NOW)
    del message["X-MSS-CODECDA"]
    del message["X-MSS-INS"]

    assert parse_message(bytes(message)).problems == (
        "X-MSS-CODECDA says nothing, the CDA headers say 18748-4,11502-2",
        "X-MSS-INS is missing or unreadable although CDA documents travel",
    )


def test_subject_naming_another_patient_is_flagged() -> None:
    subject = "XDM/1.0/DDM+2 documents VIAL Paul 26/11/1978"
    data = _with_xdm(_document_record(subject=subject))

    assert parse_message(data).problems == ("the subject names VIAL Paul, the package PAT-TROIS DOMINIQUE",)


def test_subject_names_are_compared_without_case_or_accents() -> None:
    data = _with_xdm(_document_record(subject="XDM/1.0/DDM+2 documents Pat-Trois Dominiqué"))

    assert parse_message(data).problems == ()


@pytest.mark.parametrize(
    ("birth_name", "given_name"), [("ı", "A"), ("Ǽ", "ß"), ("de la Fontaine", "Jean Pierre")]
)
def test_own_subjects_agree_with_the_package_whatever_the_names(birth_name: str, given_name: str) -> None:
    patient = samples.patient(birth_name=birth_name, given_name=given_name)
    documents = tuple(replace(d, filename="DOC0001.XML") for d in (samples.cda_document(patient),))

    parsed = parse_message(_build(_document_record(patient=patient, documents=documents)))

    assert parsed.problems == ()


def test_codecda_without_package_is_flagged() -> None:
    parsed = parse_message(_raw("text/plain", "x\r\n", headers="X-MSS-CODECDA: 11502-2\r\n"))

    assert parsed.problems == ("X-MSS-CODECDA announces CDA documents but no IHE_XDM.zip",)


def test_unsafe_package_is_refused_with_a_mapping_error() -> None:
    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr("../../evil.sh", b"rm -rf /")
    record = _simple(attachments=(Attachment("IHE_XDM.zip", "application/zip", evil.getvalue()),))

    with pytest.raises(UnsafeArchiveError, match=r"\.\."):
        parse_message(_build(record))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_garbage_is_refused_or_read_never_crashes(data: bytes) -> None:
    with contextlib.suppress(MappingError):
        parse_message(b"From: a@b.fr\r\n" + data)


# --- round trip over generated records --------------------------------------------------------------

_HEADER_TEXT = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"), max_codepoint=0x2FFFF), max_size=120
)
_NAME = st.text(
    st.characters(whitelist_categories=("Lu", "Ll"), max_codepoint=0x24F) | st.sampled_from(" -'"),
    min_size=1,
    max_size=30,
).filter(lambda name: name.strip(" -'") != "" and headers.strip_accents(name).strip() != "")
_ATOM = st.from_regex(r"[a-z0-9]{1,12}(\.[a-z0-9_+-]{1,8})?", fullmatch=True)
_ADDRESS = st.builds(
    "{}@{}.{}".format,
    _ATOM,
    st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True),
    st.sampled_from(["fr", "mssante.fr", "patient.mssante.fr"]),
)
_MAILBOX = st.builds(Mailbox, _ADDRESS, _HEADER_TEXT)
_MSG_ID = st.builds("<{}@{}>".format, _ATOM, _ATOM)
_FILENAME = (
    st.text(
        st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp", "Cf"), blacklist_characters="/\\"),
        min_size=1,
        max_size=60,
    )
    .map(str.strip)
    .filter(lambda name: name not in ("", ".", "..") and name.casefold() != "ihe_xdm.zip")
    .filter(lambda name: name[0] + name[-1] not in ('""', "<>"))
)
_ATTACHMENT = st.builds(
    Attachment,
    _FILENAME,
    st.sampled_from(["application/pdf", "text/plain", "image/jpeg", "application/octet-stream"]),
    st.binary(max_size=300),
)
_DATE = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)
).map(lambda moment: moment.replace(microsecond=0))


@st.composite
def _patient_and_documents(draw: st.DrawFn) -> tuple[Patient | None, tuple[Document, ...]]:
    if not draw(st.booleans()):
        return None, ()
    patient = samples.patient(birth_name=draw(_NAME), given_name=draw(_NAME))
    codes = draw(
        st.lists(st.sampled_from([samples.CR_BIOLOGIE, samples.CR_IMAGERIE]), min_size=1, max_size=3)
    )
    documents = tuple(
        samples.cda_document(
            patient, type_code=code, document_id=f"1.2.250.1.213.1.1.1.45.2^{n}", title=f"Document {n}"
        )
        for n, code in enumerate(codes, start=1)
    )
    names = xdm.package_filenames(documents)
    return patient, tuple(replace(d, filename=name) for d, name in zip(documents, names, strict=True))


@st.composite
def _records(draw: st.DrawFn) -> MessageRecord:
    patient, documents = draw(_patient_and_documents())
    return MessageRecord(
        author=draw(_MAILBOX),
        to=tuple(draw(st.lists(_MAILBOX, min_size=1, max_size=3))),
        subject=draw(_HEADER_TEXT),
        body=draw(st.text(st.characters(blacklist_categories=("Cs",)), max_size=400)),
        message_id=draw(_MSG_ID),
        date=draw(_DATE),
        cc=tuple(draw(st.lists(_MAILBOX, max_size=2))),
        on_behalf_of=draw(st.none() | _MAILBOX),
        reply_to=draw(st.none() | _MAILBOX),
        in_reply_to=draw(st.none() | _MSG_ID),
        references=tuple(draw(st.lists(_MSG_ID, max_size=4))),
        attachments=tuple(draw(st.lists(_ATTACHMENT, max_size=3))),
        patient=patient,
        documents=documents,
        disposition_notification_to=draw(st.none() | _MAILBOX),
        end_of_exchange=draw(st.booleans()),
    )


def _strip_display_names(record: MessageRecord) -> MessageRecord:
    """Display names are sent in their canonical form (``to_header_address``)."""

    def strip(mailbox: Mailbox) -> Mailbox:
        return Mailbox(mailbox.address, canonical_display_name(mailbox.display_name))

    def strip_optional(mailbox: Mailbox | None) -> Mailbox | None:
        return None if mailbox is None else strip(mailbox)

    return replace(
        record,
        author=strip(record.author),
        to=tuple(map(strip, record.to)),
        cc=tuple(map(strip, record.cc)),
        on_behalf_of=strip_optional(record.on_behalf_of),
        reply_to=strip_optional(record.reply_to),
        disposition_notification_to=strip_optional(record.disposition_notification_to),
    )


@settings(max_examples=ROUND_TRIPS, deadline=None)
@given(_records())
def test_any_record_round_trips(record: MessageRecord) -> None:
    copies = {pdf_copy(document) for document in record.documents}
    assume(not any(a.content in copies and a.content_type == "application/pdf" for a in record.attachments))

    parsed = parse_message(_build(record))

    expected = replace(
        _strip_display_names(record),
        subject=effective_subject(record),
        body=canonical_body(record.body_text),
        end_of_exchange=end_of_exchange(record),
    )
    assert parsed == expected


# --- build refusals and details ---------------------------------------------------------------------


def test_generated_message_ids_are_unique_and_use_the_hostname() -> None:
    ids = {
        str(build_message(_simple(), nil_reference=NIL, hostname="gw.chu-exemple.fr", now=NOW)["Message-ID"])
        for _ in range(50)
    }

    assert len(ids) == 50
    assert all(i.endswith("@gw.chu-exemple.fr>") for i in ids)


def test_a_bad_hostname_is_refused() -> None:
    with pytest.raises(MessageBuildError, match="hostname 'gw chu' cannot be used"):
        build_message(_simple(), nil_reference=NIL, hostname="gw chu", now=NOW)


def test_a_bare_message_id_from_the_store_gets_its_brackets() -> None:
    message = build_message(
        _simple(message_id="abc@chu-exemple.fr"), nil_reference=NIL, hostname="gw.fr", now=NOW
    )

    assert message["Message-ID"] == "<abc@chu-exemple.fr>"
    with pytest.raises(MessageBuildError, match="is not a message identifier"):
        _build(_simple(in_reply_to="pas un identifiant"))


@pytest.mark.parametrize(
    ("attachment", "message"),
    [
        (Attachment("dossier/cr.pdf", "application/pdf", b""), "must be a bare file name"),
        (Attachment(" ", "application/pdf", b""), "must be a bare file name"),
        (Attachment('"cr.pdf"', "application/pdf", b""), "surrounding quotes"),
        (Attachment("cr.pdf", "text/plain; charset=latin-1", b""), "is not type/subtype"),
        (Attachment("cr.pdf", "pdf", b""), "is not type/subtype"),
    ],
)
def test_bad_attachments_are_refused(attachment: Attachment, message: str) -> None:
    with pytest.raises(MessageBuildError, match=message):
        _build(_simple(attachments=(attachment,)))


def test_a_message_given_as_bytes_travels_as_opaque_bytes() -> None:
    original = b"From: a@b.fr\r\nSubject: x\r\n\r\ncorps\r\n"
    record = _simple(attachments=(Attachment("original.eml", "message/rfc822", original),))

    parsed = parse_message(_build(record))

    assert parsed.attachments == (Attachment("original.eml", "application/octet-stream", original),)


def test_documents_headers_are_not_written_without_documents() -> None:
    message = build_message(_simple(patient=samples.patient()), nil_reference=NIL, hostname="gw.fr", now=NOW)

    assert "X-MSS-INS" not in message
    assert "X-MSS-CODECDA" not in message


# --- golden: what a professional's software receives ------------------------------------------------

GOLDEN = Path(__file__).parents[2] / "data" / "mime" / "document_message.txt"


def _skeleton(message: EmailMessage) -> str:
    """Every header line of every part, and the text body; attachment bodies are left out."""
    boundary = message.get_boundary() or ""
    lines: list[str] = []
    for part in message.walk():
        lines.extend(MESSAGE_POLICY.fold(name, value) for name, value in part.items())
        if part.get_content_type() == "text/plain" and not part.is_attachment():
            lines.append("\r\n" + str(part.get_payload()))
        lines.append("--\r\n")
    return "".join(lines).replace("\r\n", "\n").replace(boundary, "BOUNDARY")


def test_document_message_matches_the_reviewed_golden_file() -> None:
    record = _document_record(
        author=Mailbox("cardio-app@hopitala.mssante.fr", "Hopital A – Service Cardiologie"),
        on_behalf_of=Mailbox("marie.martin@hopitala.mssante.fr", "Dr_Marie_MARTIN_Cardiologie"),
        reply_to=Mailbox("cardio@hopitala.mssante.fr", "Hopital A – Secrétariat de cardiologie"),
        disposition_notification_to=Mailbox("cardio-app@hopitala.mssante.fr"),
        body="Madame,\nveuillez trouver ci-joint vos comptes rendus.\nCordialement,\nDr Marie MARTIN",
        attachments=(Attachment("Consignes après l'examen.txt", "text/plain", b"A jeun."),),
        end_of_exchange=True,
    )
    message = build_message(
        record, nil_reference=NIL, hostname="gw.hopitala.fr", now=NOW, file_number="12150302014578"
    )

    skeleton = _skeleton(message)

    if os.environ.get("MSSGW_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(skeleton, encoding="utf-8")
    assert skeleton == GOLDEN.read_text(encoding="utf-8")


def test_broken_package_is_kept_as_an_attachment_with_the_reason() -> None:
    broken = io.BytesIO()
    with zipfile.ZipFile(broken, "w") as archive:
        archive.writestr("README.TXT", b"pas de METADATA.XML")
    attachment = Attachment("IHE_XDM.zip", "application/zip", broken.getvalue())

    parsed = parse_message(_build(_simple(attachments=(attachment,))))

    assert parsed.attachments == (attachment,)
    assert parsed.documents == ()
    assert len(parsed.problems) == 1
    assert parsed.problems[0].startswith("IHE_XDM.zip could not be read: ")
    assert "METADATA.XML" in parsed.problems[0]
