"""RFC 3464 reports: what mssgw writes for a sender, and what it reads from a peer's report."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage, Message
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mappers.dsn import (
    DeliveryReport,
    DsnError,
    RecipientReport,
    build_dsn,
    xtext_decode,
    xtext_encode,
)
from mappers.dsn_read import parse_dsn
from mappers.errors import MappingError

NOW = datetime(2026, 11, 23, 14, 50, tzinfo=UTC)
MTA = "mssgw.hopital.test.mssante.fr"
POSTMASTER = f"MAILER-DAEMON@{MTA}"
SENDER = "dr.a@hopital.test.mssante.fr"
ORIGINAL = (
    b"From: Dr A <dr.a@hopital.test.mssante.fr>\r\n"
    b"To: dr.b@x.mssante.fr\r\n"
    b"Subject: =?utf-8?q?Compte_rendu_d=27=C3=A9chographie?=\r\n"
    b"Message-ID: <orig.1@hopital.test.mssante.fr>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Donnees de sante du patient\r\n"
)
FAILED = RecipientReport(
    final_recipient="dr.b@x.mssante.fr",
    action="failed",
    status="5.1.1",
    original_recipient="Dr.B@x.mssante.fr",
    remote_mta="mx.x.mssante.fr",
    diagnostic="550 5.1.1 User unknown",
    last_attempt=NOW,
)
DELAYED = RecipientReport(
    final_recipient="c@y.mssante.fr",
    action="delayed",
    status="4.4.1",
    diagnostic="connection refused",
    last_attempt=NOW,
    will_retry_until=NOW + timedelta(days=5),
)


def build(recipients: tuple[RecipientReport, ...] = (FAILED,), **options: object) -> EmailMessage:
    arguments: dict[str, object] = {
        "reporting_mta": MTA,
        "postmaster": POSTMASTER,
        "sender": SENDER,
        "now": NOW,
        "arrival_date": NOW - timedelta(minutes=5),
        "message_id": "<dsn.1@mssgw.hopital.test.mssante.fr>",
    }
    arguments.update(options)
    return build_dsn(ORIGINAL, recipients, **arguments)  # type: ignore[arg-type]


def wire(message: EmailMessage) -> EmailMessage:
    """The report as a peer would read it: serialised, then parsed from bytes."""
    parsed = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def parts_of(message: Message) -> list[Message]:
    payload = message.get_payload()
    assert isinstance(payload, list)
    return [part for part in payload if isinstance(part, Message)]


# -- golden structure --------------------------------------------------------------------------------


def test_structure_is_multipart_report_with_three_parts_in_rfc_order() -> None:
    report = wire(build((FAILED, DELAYED), envid="Q1+x"))

    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    assert [p.get_content_type() for p in parts_of(report)] == [
        "text/plain",
        "message/delivery-status",
        "text/rfc822-headers",
    ]
    assert report["From"].addresses[0].addr_spec == POSTMASTER
    assert str(report["To"]) == SENDER
    assert report["Auto-Submitted"] == "auto-replied"
    assert report["In-Reply-To"] == "<orig.1@hopital.test.mssante.fr>"
    assert report["Message-ID"] == "<dsn.1@mssgw.hopital.test.mssante.fr>"
    assert report["Subject"] == "Non remis / Undelivered: Compte rendu d'échographie"


def test_delivery_status_fields_are_written_as_rfc_3464_says() -> None:
    raw = build((FAILED, DELAYED), envid="Q1+x").as_bytes()
    status = raw.split(b"message/delivery-status\r\n\r\n", 1)[1].split(b"\r\n--", 1)[0]

    assert status.decode("ascii").rstrip("\r\n").split("\r\n\r\n") == [
        "Reporting-MTA: dns; mssgw.hopital.test.mssante.fr\r\n"
        "Original-Envelope-Id: Q1+x\r\n"
        "Arrival-Date: Mon, 23 Nov 2026 14:45:00 +0000",
        "Original-Recipient: rfc822; Dr.B@x.mssante.fr\r\n"
        "Final-Recipient: rfc822; dr.b@x.mssante.fr\r\n"
        "Action: failed\r\n"
        "Status: 5.1.1\r\n"
        "Remote-MTA: dns; mx.x.mssante.fr\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 User unknown\r\n"
        "Last-Attempt-Date: Mon, 23 Nov 2026 14:50:00 +0000",
        "Final-Recipient: rfc822; c@y.mssante.fr\r\n"
        "Action: delayed\r\n"
        "Status: 4.4.1\r\n"
        "Diagnostic-Code: x-mssgw; connection refused\r\n"
        "Last-Attempt-Date: Mon, 23 Nov 2026 14:50:00 +0000\r\n"
        "Will-Retry-Until: Sat, 28 Nov 2026 14:50:00 +0000",
    ]


def test_human_part_tells_in_french_and_english_what_happened_and_the_reply() -> None:
    report = wire(build((FAILED, DELAYED), display_tz=ZoneInfo("Europe/Paris")))
    text = parts_of(report)[0]
    assert isinstance(text, EmailMessage)
    body = text.get_content().replace("\r\n", "\n")

    assert "Votre message « Compte rendu d'échographie », reçu le 23/11/2026 à 15:45 (CET)" in body
    assert "n'a pas pu être remis à :\n  dr.b@x.mssante.fr" in body
    assert "could not be delivered to:\n  dr.b@x.mssante.fr" in body
    assert "réponse de mx.x.mssante.fr : 550 5.1.1 User unknown" in body
    assert "reply from mx.x.mssante.fr: 550 5.1.1 User unknown" in body
    assert "nouvelles tentatives jusqu'au 28/11/2026 à 15:50 (CET)" in body
    assert "retrying until 2026-11-28 15:50 (CET)" in body


def test_headers_only_by_default_so_the_body_does_not_travel_again() -> None:
    raw = build().as_bytes()
    assert b"Message-ID: <orig.1@hopital.test.mssante.fr>" in raw
    assert b"Donnees de sante" not in raw


def test_ret_full_returns_the_whole_message() -> None:
    report = wire(build(ret="FULL"))
    returned = parts_of(report)[2]

    assert returned.get_content_type() == "message/rfc822"
    assert b"Donnees de sante du patient" in report.as_bytes()
    parsed = parse_dsn(report)
    assert parsed is not None
    assert parsed.original_message_id == "<orig.1@hopital.test.mssante.fr>"


def test_ret_full_above_the_limit_falls_back_to_headers_and_says_so() -> None:
    report = wire(build(ret="FULL", full_size_limit=10))
    parts = parts_of(report)

    assert parts[2].get_content_type() == "text/rfc822-headers"
    assert isinstance(parts[0], EmailMessage)
    assert "only its headers are attached" in parts[0].get_content()


def test_multi_line_remote_reply_reads_as_one_sentence() -> None:
    reply = "550-5.1.1 The account does not exist.\n550 5.1.1 See https://help.example/nouser"
    report = wire(build((RecipientReport("b@x.test", "failed", "5.1.1", diagnostic=reply),)))
    parsed = parse_dsn(report)

    assert parsed is not None
    assert parsed.recipients[0].diagnostic == (
        "550 5.1.1 The account does not exist. See https://help.example/nouser"
    )


def test_long_envelope_id_and_diagnostic_fold_without_encoded_words() -> None:
    envid = "E" * 100
    diagnostic = "550 5.7.1 " + " ".join(["refused"] * 40) + " " + "x" * 120
    raw = build(
        (RecipientReport("b@x.test", "failed", "5.7.1", diagnostic=diagnostic),), envid=envid
    ).as_bytes()

    status = raw.split(b"message/delivery-status", 1)[1].split(b"text/rfc822-headers")[0]
    assert b"=?" not in status
    assert b"Original-Envelope-Id: " + envid.encode() in status
    parsed = parse_dsn(build_dsn_from(raw))
    assert parsed is not None
    assert parsed.envid == envid
    assert parsed.recipients[0].diagnostic == diagnostic


def build_dsn_from(raw: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


# -- round trip --------------------------------------------------------------------------------------


def test_build_then_parse_gives_the_report_back() -> None:
    parsed = parse_dsn(wire(build((FAILED, DELAYED), envid="Q1 x+y")))

    assert parsed == DeliveryReport(
        recipients=(FAILED, DELAYED),
        reporting_mta=MTA,
        envid="Q1 x+y",
        arrival_date=NOW - timedelta(minutes=5),
        original_message_id="<orig.1@hopital.test.mssante.fr>",
    )


_LOCAL = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,15}", fullmatch=True)
_DOMAIN = st.from_regex(r"[a-z0-9]{1,10}(\.[a-z0-9-]{1,8}){0,2}\.(fr|test)", fullmatch=True)
_ADDRESS = st.builds(lambda local, domain: f"{local}@{domain}", _LOCAL, _DOMAIN)
_WORDS = st.lists(
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=12),
    min_size=1,
    max_size=12,
).map(" ".join)
_WHEN = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2099, 1, 1), timezones=st.just(UTC)
).map(lambda d: d.replace(microsecond=0))
_ENVID = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=100)


@st.composite
def _recipient(draw: st.DrawFn) -> RecipientReport:
    action = draw(st.sampled_from(["failed", "delayed", "delivered", "relayed", "expanded"]))
    klass = {"failed": draw(st.sampled_from("45")), "delayed": "4"}.get(action, "2")
    status = f"{klass}.{draw(st.integers(0, 999))}.{draw(st.integers(0, 999))}"
    code = {"2": "250", "4": "451", "5": "550"}[klass]
    diagnostic = draw(st.none() | _WORDS.map(lambda words: f"{code} {status} {words}"))
    return RecipientReport(
        final_recipient=draw(_ADDRESS),
        action=action,  # type: ignore[arg-type]
        status=status,
        original_recipient=draw(st.none() | _ADDRESS),
        remote_mta=draw(st.none() | _DOMAIN),
        diagnostic=diagnostic,
        last_attempt=draw(st.none() | _WHEN),
        will_retry_until=draw(_WHEN) if action == "delayed" and draw(st.booleans()) else None,
    )


@settings(max_examples=100, deadline=None)
@given(
    recipients=st.lists(_recipient(), min_size=1, max_size=6),
    envid=st.none() | _ENVID.filter(lambda e: e == e.strip()),
    ret=st.sampled_from([None, "HDRS", "FULL"]),
)
def test_round_trip_property(recipients: list[RecipientReport], envid: str | None, ret: str | None) -> None:
    parsed = parse_dsn(wire(build(tuple(recipients), envid=envid, ret=ret)))

    assert parsed is not None
    assert parsed.recipients == tuple(recipients)
    assert parsed.envid == envid
    assert parsed.original_message_id == "<orig.1@hopital.test.mssante.fr>"


@given(st.text(st.characters(max_codepoint=0x7F)))
def test_xtext_round_trip(text: str) -> None:
    encoded = xtext_encode(text)
    assert all("!" <= c <= "~" and c != "=" for c in encoded)
    assert xtext_decode(encoded) == text


def test_xtext_known_values_and_refusals() -> None:
    assert xtext_encode("a+b=c d") == "a+2Bb+3Dc+20d"
    assert xtext_decode("rfc822;Dr.B+40x") == "rfc822;Dr.B@x"
    with pytest.raises(DsnError):
        xtext_decode("a+4")
    with pytest.raises(DsnError):
        xtext_encode("é")


# -- reading a peer's report -------------------------------------------------------------------------

POSTFIX_DSN = (
    b"From: MAILER-DAEMON@mx.x.mssante.fr (Mail Delivery System)\n"
    b"To: dr.a@hopital.test.mssante.fr\n"
    b"Subject: Undelivered Mail Returned to Sender\n"
    b"MIME-Version: 1.0\n"
    b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n'
    b"\n"
    b"--B\n"
    b"Content-Type: text/plain\n"
    b"\n"
    b"I'm sorry to have to inform you that your message could not be delivered.\n"
    b"\n"
    b"--B\n"
    b"Content-Type: message/delivery-status\n"
    b"\n"
    b"Reporting-MTA: dns; mx.x.mssante.fr\n"
    b"X-Postfix-Queue-ID: 4XyZ\n"
    b"Original-Envelope-Id: msg-42\n"
    b"Arrival-Date: Mon, 23 Nov 2026 15:45:00 +0100 (CET)\n"
    b"\n"
    b"Final-Recipient: RFC822; dr.b@x.mssante.fr\n"
    b"ORIGINAL-RECIPIENT: rfc822;dr.b@x.mssante.fr\n"
    b"Action: Failed\n"
    b"Status: 5.2.2 (mailbox full)\n"
    b"Remote-MTA: dns; store.x.mssante.fr\n"
    b"Diagnostic-Code: smtp; 552 5.2.2 Mailbox full:\n"
    b"    over quota\n"
    b"\n"
    b"--B\n"
    b"Content-Type: message/rfc822\n"
    b"\n"
    b"From: dr.a@hopital.test.mssante.fr\n"
    b"Message-ID: <orig.9@hopital.test.mssante.fr>\n"
    b"Subject: x\n"
    b"\n"
    b"body\n"
    b"--B--\n"
)


def test_parses_a_postfix_style_report() -> None:
    parsed = parse_dsn(build_dsn_from(POSTFIX_DSN))

    assert parsed == DeliveryReport(
        recipients=(
            RecipientReport(
                final_recipient="dr.b@x.mssante.fr",
                action="failed",
                status="5.2.2",
                original_recipient="dr.b@x.mssante.fr",
                remote_mta="store.x.mssante.fr",
                diagnostic="552 5.2.2 Mailbox full: over quota",
            ),
        ),
        reporting_mta="mx.x.mssante.fr",
        envid="msg-42",
        arrival_date=datetime(2026, 11, 23, 14, 45, tzinfo=UTC),
        original_message_id="<orig.9@hopital.test.mssante.fr>",
    )


def test_parses_a_global_delivery_status_report_too() -> None:
    # RFC 6533: same fields, another content type, which the email parser reads differently.
    raw = POSTFIX_DSN.replace(b"message/delivery-status", b"message/global-delivery-status")
    expected = parse_dsn(build_dsn_from(POSTFIX_DSN))

    assert parse_dsn(build_dsn_from(raw)) == expected


def test_not_a_delivery_report_is_none() -> None:
    plain = build_dsn_from(b"Subject: hello\n\nbody\n")
    mdn = build_dsn_from(
        POSTFIX_DSN.replace(b"report-type=delivery-status", b"report-type=disposition-notification")
    )
    assert parse_dsn(plain) is None
    assert parse_dsn(mdn) is None


@pytest.mark.parametrize(
    ("old", "new", "complaint"),
    [
        (b"Final-Recipient: RFC822; dr.b@x.mssante.fr\n", b"", "Final-Recipient"),
        (b"Action: Failed", b"Action: bounced", "action"),
        (b"Status: 5.2.2 (mailbox full)", b"Status: 552", "status"),
        (b"Content-Type: message/delivery-status", b"Content-Type: text/plain", "part"),
    ],
)
def test_malformed_reports_are_refused_with_the_reason(old: bytes, new: bytes, complaint: str) -> None:
    broken = build_dsn_from(POSTFIX_DSN.replace(old, new))
    with pytest.raises(DsnError, match=complaint):
        parse_dsn(broken)


# -- refusals when building --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("recipients", "options", "complaint"),
    [
        ((), {}, "at least one recipient"),
        ((RecipientReport("b@x.test", "failed", "2.0.0"),), {}, "contradicts"),
        ((RecipientReport("b@x.test", "delayed", "5.1.1"),), {}, "contradicts"),
        ((RecipientReport("b@x.test", "delivered", "4.0.0"),), {}, "contradicts"),
        ((RecipientReport("b@x.test", "bounced", "5.0.0"),), {}, "action"),  # type: ignore[arg-type]
        ((RecipientReport("b@x.test", "failed", "5.1"),), {}, "RFC 3463"),
        ((RecipientReport("b@x.test\r\nBcc: x@y", "failed", "5.1.1"),), {}, "final_recipient"),
        (
            (RecipientReport("b@x.test", "failed", "5.1.1", will_retry_until=NOW),),
            {},
            "Will-Retry-Until",
        ),
        (
            (RecipientReport("b@x.test", "failed", "5.1.1", last_attempt=NOW.replace(tzinfo=None)),),
            {},
            "timezone-aware",
        ),
        ((FAILED,), {"now": NOW.replace(tzinfo=None)}, "timezone-aware"),
        ((FAILED,), {"sender": ""}, "sender"),
        ((FAILED,), {"sender": "no-at-sign"}, "mail address"),
        ((FAILED,), {"envid": "x" * 101}, "envid"),
        ((FAILED,), {"envid": "bad\r\nenvid"}, "envid"),
    ],
)
def test_build_refuses_what_would_make_a_wrong_report(
    recipients: tuple[RecipientReport, ...], options: dict[str, object], complaint: str
) -> None:
    with pytest.raises(DsnError, match=complaint) as caught:
        build(recipients, **options)
    assert isinstance(caught.value, MappingError)
