"""Intake into a real SQLite store: verdicts per recipient, what is committed, and what is never kept."""

from __future__ import annotations

import asyncio
import email
import email.policy
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import func, select

from gateway.inbound.arrival import Arrival, Decision, Recipient, Verdict
from gateway.inbound.instructions import strip_submission_headers
from gateway.inbound.intake import Intake
from gateway.inbound.policy import Policy, refuse
from gateway.inbound.trust import StaticTrustList
from gateway.settings import DocumentSettings, GatewaySettings, MailboxSettings, from_mapping
from gateway.store.db import Store
from gateway.store.repository import NewMessage, StoredMessage
from gateway.store.tables import Delivery, Message
from gateway.trust import TrustList
from mappers import cda, wire
from mappers.mime import Authors, parse_message, parse_with_authors
from mappers.records import MessageRecord
from tests.support import cda_header
from tests.support.mail import (
    APP,
    CLIENTS,
    MAILBOX,
    OUR_DOMAIN,
    OUTSIDE,
    PEER_DOMAIN,
    inbound_settings,
    message,
)

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def make_intake(
    store: Store, policy: Policy | None = None, woken: list[int] | None = None, *, defaults: bool = True
) -> Intake:
    """Intake of a gateway whose [documents] settings hold the hospital's CDA defaults (``defaults``)."""
    policy = policy or Policy(inbound_settings(), CLIENTS, StaticTrustList([PEER_DOMAIN]))
    return Intake(
        policy,
        store.repository.add_messages,
        lambda: T0,
        lambda: (woken if woken is not None else []).append(1),
        max_batch=10,
        gateway=GatewaySettings(hostname="mssgw.hopital.test.mssante.fr", nil_reference="DEV935997"),
        documents=DocumentSettings(**cda_header.SETTINGS).header_defaults() if defaults else None,
    )


def submission(raw: bytes, *recipients: Recipient, **fields: object) -> Arrival:
    values: dict[str, object] = {"source": "submission", "authenticated_as": "dpi", "peer": "127.0.0.1:4000"}
    values.update(fields)
    return Arrival(raw, APP, recipients, **values)  # type: ignore[arg-type]


def rows(store: Store) -> tuple[int, list[tuple[str, str | None, str | None, str]]]:
    with store.sessions() as session:
        messages = session.execute(select(func.count()).select_from(Message)).scalar_one()
        deliveries = session.execute(
            select(Delivery.recipient, Delivery.notify, Delivery.orcpt, Delivery.state).order_by(Delivery.id)
        ).all()
    return messages, [tuple(row) for row in deliveries]  # type: ignore[misc]


async def test_submission_to_outside_is_committed_with_its_dsn_parameters(store: Store) -> None:
    woken: list[int] = []
    intake = make_intake(store, woken=woken)
    raw = message(to=OUTSIDE)
    result = await intake.receive(
        submission(raw, Recipient(OUTSIDE, "SUCCESS,FAILURE", f"rfc822;{OUTSIDE}"), envid="abc", ret="HDRS")
    )
    assert [v.decision for v in result.verdicts] == [Decision.ACCEPTED]
    assert result.verdicts[0].code == 250 and str(result.message_pk) in result.verdicts[0].text
    assert rows(store) == (1, [(OUTSIDE, "SUCCESS,FAILURE", f"rfc822;{OUTSIDE}", "queued")])
    envelope = store.repository.load_envelopes([result.message_pk or 0])[result.message_pk or 0]
    assert (envelope.envid, envelope.ret, envelope.envelope_from) == ("abc", "HDRS", APP)
    assert woken == []  # at the loop's next turn: the listener's 250 goes out first
    await asyncio.sleep(0)
    assert woken == [1]


async def test_only_small_plain_messages_are_read_on_the_event_loop(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attachments, documents and packages take milliseconds to read whatever their size: a worker thread
    then, so that the loop keeps serving the other sessions."""
    on_loop: list[bool] = []

    def parse(raw: bytes, **kwargs: object) -> tuple[MessageRecord, Authors]:
        on_loop.append(threading.current_thread() is threading.main_thread())
        return parse_with_authors(raw, **kwargs)  # type: ignore[arg-type]

    # A submission's authors are read in the same parse.
    monkeypatch.setattr("gateway.inbound.intake.parse_with_authors", parse)
    intake = make_intake(store)
    attached = email.message_from_bytes(message(to=OUTSIDE), _class=EmailMessage, policy=email.policy.SMTP)
    assert isinstance(attached, EmailMessage)
    attached.add_attachment(b"%PDF-1.4 cr\n", maintype="application", subtype="pdf", filename="cr.pdf")
    for raw in (
        message(to=OUTSIDE),
        message(to=OUTSIDE, body=("x" * 70 + "\n") * 300),
        attached.as_bytes(),
        message(to=OUTSIDE, X_MSSGW_Confidentiality="MASQUE_PS"),
    ):
        await intake.receive(submission(raw, Recipient(OUTSIDE)))
    assert on_loop == [True, False, False, False]


async def test_mail_for_our_mailbox_is_stored_inbound_without_a_queue_row(store: Store) -> None:
    intake = make_intake(store)
    raw = message(sender=f"dr@{PEER_DOMAIN}", to=MAILBOX)
    arrival = Arrival(raw, f"dr@{PEER_DOMAIN}", (Recipient(MAILBOX),), "operator", peer="192.0.2.1:25")
    result = await intake.receive(arrival)
    assert result.verdicts[0].decision is Decision.ACCEPTED
    with store.sessions() as session:
        assert session.execute(select(Message.direction)).scalar_one() == "inbound"
    assert rows(store)[1] == []


async def test_a_forwarding_mailbox_gets_a_queue_row(store: Store, tmp_path: Path) -> None:
    settings = inbound_settings(mailboxes=(MailboxSettings(MAILBOX, drop_folder=tmp_path / "drop"),))
    intake = make_intake(store, Policy(settings, CLIENTS, StaticTrustList([PEER_DOMAIN])))
    raw = message(sender=f"dr@{PEER_DOMAIN}", to=MAILBOX)
    await intake.receive(Arrival(raw, f"dr@{PEER_DOMAIN}", (Recipient(MAILBOX),), "operator"))
    assert rows(store)[1] == [(MAILBOX, None, None, "queued")]


async def test_each_recipient_gets_its_own_verdict_in_order(store: Store) -> None:
    intake = make_intake(store)
    raw = message(sender=f"dr@{PEER_DOMAIN}", to=MAILBOX)
    arrival = Arrival(
        raw,
        f"dr@{PEER_DOMAIN}",
        (Recipient(f"nobody@{OUR_DOMAIN}"), Recipient(MAILBOX.upper()), Recipient("x@elsewhere.test")),
        "operator",
    )
    result = await intake.receive(arrival)
    assert [v.reply[:9] for v in result.verdicts] == ["550 5.1.1", "250 2.0.0", "554 5.7.1"]
    assert "no such mailbox" in result.verdicts[0].text
    assert rows(store)[0] == 1


async def test_the_same_message_twice_is_stored_once(store: Store) -> None:
    intake = make_intake(store)
    raw = message(to=OUTSIDE)
    first = await intake.receive(submission(raw, Recipient(OUTSIDE)))
    second = await intake.receive(submission(raw, Recipient(OUTSIDE)))
    assert (second.message_pk, second.duplicate) == (first.message_pk, True)
    assert "Already queued" in second.verdicts[0].text
    assert rows(store)[0] == 1 and len(rows(store)[1]) == 1


async def test_a_store_failure_answers_451_and_keeps_nothing(store: Store) -> None:
    policy = Policy(inbound_settings(), CLIENTS)

    def failing(batch: Sequence[NewMessage], now: datetime) -> list[StoredMessage]:
        raise ConnectionError("database unreachable")

    intake = Intake(policy, failing, lambda: T0)
    result = await intake.receive(submission(message(), Recipient(OUTSIDE)))
    assert result.message_pk is None
    assert [v.reply[:9] for v in result.verdicts] == ["451 4.3.0"]
    assert rows(store) == (0, [])


async def test_over_the_size_limit_nothing_is_parsed_or_stored(store: Store) -> None:
    intake = make_intake(store, Policy(inbound_settings(max_message_size=1000), CLIENTS))
    result = await intake.receive(submission(message(body="x" * 2000), Recipient(OUTSIDE)))
    assert result.verdicts[0].reply.startswith("552 5.3.4")
    assert rows(store) == (0, [])


async def test_a_client_writing_as_someone_else_is_refused(store: Store) -> None:
    intake = make_intake(store)
    raw = message(sender=f"director@{OUR_DOMAIN}")
    result = await intake.receive(submission(raw, Recipient(OUTSIDE)))
    assert result.verdicts[0].reply.startswith("553 5.7.1 From address <director@")
    assert rows(store) == (0, [])


async def test_unauthenticated_mail_never_leaves(store: Store) -> None:
    intake = make_intake(store)
    for source, identity in (("submission", None), ("operator", None)):
        arrival = Arrival(message(), APP, (Recipient(OUTSIDE),), source, authenticated_as=identity)
        result = await intake.receive(arrival)
        assert result.verdicts[0].decision is Decision.PERMANENT, source
    assert rows(store) == (0, [])


async def test_an_unreadable_message_is_refused_with_the_reason(store: Store) -> None:
    intake = make_intake(store)
    result = await intake.receive(submission(b"Subject: no sender\r\n\r\nbody\r\n", Recipient(OUTSIDE)))
    assert result.verdicts[0].reply.startswith(
        "554 5.6.0 The message cannot be read safely: message has no From"
    )


async def test_extra_rules_composed_by_the_daemon_can_refuse_a_recipient(store: Store) -> None:
    async def channel_gate(arrival: Arrival, recipient: str, record: MessageRecord | None) -> Verdict | None:
        if arrival.envelope_from.endswith("@patient.mssante.fr"):
            return refuse(recipient, "550 5.7.1 Citizen channel closed")
        return None

    policy = Policy(inbound_settings(), CLIENTS, StaticTrustList(["patient.mssante.fr"]), [channel_gate])
    intake = make_intake(store, policy)
    patient = "1234567890123@patient.mssante.fr"
    arrival = Arrival(message(sender=patient, to=MAILBOX), patient, (Recipient(MAILBOX),), "operator")
    assert (await intake.check_recipient(arrival, MAILBOX)).reply == "550 5.7.1 Citizen channel closed"
    result = await intake.receive(arrival)
    assert result.verdicts[0].code == 550 and rows(store) == (0, [])


def refused_once_read(refused: str) -> Policy:
    """A policy with a rule refusing ``refused`` only once the message is read (as the patient rules do)."""

    def late_rule(arrival: Arrival, recipient: str, record: MessageRecord | None) -> Verdict | None:
        if record is not None and recipient == refused:
            return refuse(recipient, "550 5.7.1 Document INVISIBLE_PATIENT cannot go to this address")
        return None

    mailboxes = (MailboxSettings(MAILBOX), MailboxSettings(ARCHIVES))
    return Policy(inbound_settings(mailboxes=mailboxes), CLIENTS, StaticTrustList([PEER_DOMAIN]), [late_rule])


ARCHIVES = f"archives@{OUR_DOMAIN}"


async def test_a_recipient_refused_only_once_the_message_is_read_gets_a_dsn_not_silence(store: Store) -> None:
    # After DATA, SMTP answers once for everyone: the 250 the others get must not swallow this refusal.
    peer = f"dr@{PEER_DOMAIN}"
    intake = make_intake(store, refused_once_read(ARCHIVES))
    arrival = Arrival(
        message(sender=peer, to=MAILBOX),
        peer,
        (Recipient(MAILBOX), Recipient(ARCHIVES, None, f"rfc822;{ARCHIVES}")),
        "operator",
    )
    assert (await intake.check_recipient(arrival, ARCHIVES)).decision is Decision.ACCEPTED
    result = await intake.receive(arrival)
    assert [v.code for v in result.verdicts] == [250, 550]
    with store.sessions() as session:
        notice = session.execute(select(Message).where(Message.kind == "dsn")).scalar_one()
    assert notice.related_message_id == result.message_pk and notice.envelope_from == ""
    report = email.message_from_bytes(notice.raw, policy=email.policy.default)
    assert report["To"] == peer
    status = next(p for p in report.walk() if p.get_content_type() == "message/delivery-status")
    text = status.as_string()
    assert f"Final-Recipient: rfc822; {ARCHIVES}" in text or f"Final-Recipient: rfc822;{ARCHIVES}" in text
    assert "Status: 5.7.1" in text and "INVISIBLE_PATIENT" in text


async def test_a_submission_refused_for_one_recipient_once_read_is_refused_whole(store: Store) -> None:
    # The client's software hears one reply after DATA and resends on a refusal: a copy queued for the
    # others would go twice.
    refused = "dr.refused@cabinet.test.mssante.fr"
    intake = make_intake(store, refused_once_read(refused))
    arrival = submission(message(to=OUTSIDE), Recipient(OUTSIDE), Recipient(refused))
    result = await intake.receive(arrival)
    reply = "550 5.7.1 Document INVISIBLE_PATIENT cannot go to this address"
    assert [v.reply for v in result.verdicts] == [reply, reply] and result.message_pk is None
    assert rows(store) == (0, [])


async def test_submission_headers_are_stripped_before_storing(store: Store) -> None:
    raw = message(X_MSSGW_Patient=PATIENT_FIELD, Comments="kept")
    assert b"X-MSSGW-Patient" in raw
    result = await make_intake(store).receive(submission(raw, Recipient(OUTSIDE)))
    stored = store.queue.raw(result.message_pk or 0)
    assert b"X-MSSGW" not in stored and b"Comments: kept" in stored and stored.endswith(b"Hello\r\n")


def test_stripping_keeps_folded_lines_of_other_fields() -> None:
    raw = b"Subject: a\r\nX-MSSGW-Doc: 1\r\n  2\r\nTo: b\r\n c\r\n\r\nX-MSSGW-Body: stays\r\n"
    assert strip_submission_headers(raw) == b"Subject: a\r\nTo: b\r\n c\r\n\r\nX-MSSGW-Body: stays\r\n"


PATIENT_FIELD = (
    "matricule=279035121518989; oid=1.2.250.1.213.1.4.10; birth-name=DUPONT; given-name=Hélène; "
    "birth-date=1979-03-05; sex=F"
)


def with_pdf(**headers: str) -> bytes:
    mail = email.message_from_bytes(message(**headers), _class=EmailMessage, policy=email.policy.default)
    assert isinstance(mail, EmailMessage)
    mail.add_attachment(b"%PDF-1.4 compte rendu\n", maintype="application", subtype="pdf", filename="cr.pdf")
    return mail.as_bytes(policy=email.policy.SMTP)


async def test_submission_instructions_build_the_package(store: Store) -> None:
    raw = with_pdf(X_MSSGW_Patient=PATIENT_FIELD, X_MSSGW_Document_Type='11490-0; label="Lettre de liaison"')
    result = await make_intake(store).receive(submission(raw, Recipient(OUTSIDE)))
    assert result.message_pk is not None, result.verdicts
    stored = store.queue.raw(result.message_pk)
    assert b"X-MSSGW" not in stored
    # In CRLF as the listener's mail is: the relay sends a submission's stored copy unsearched.
    assert not wire.has_bare_line_end(stored)
    record = parse_message(stored)
    assert record.patient is not None and record.patient.given_name == "Hélène"
    assert [d.type_code.code for d in record.documents] == ["11490-0"]
    again = await make_intake(store).receive(submission(raw, Recipient(OUTSIDE)))
    assert again.duplicate  # built the same way twice: the same bytes


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"X_MSSGW_Patient": "matricule=279035121518988; birth-name=A; given-name=B"}, "X-MSSGW-Patient: "),
        ({"X_MSSGW_Patient": PATIENT_FIELD}, "X-MSSGW-Document-Type: required"),
        ({"X_MSSGW_Patient": "birth-name=A"}, "X-MSSGW-Patient: matricule, given-name required"),
    ],
)
async def test_a_bad_submission_instruction_is_refused(
    store: Store, headers: dict[str, str], reason: str
) -> None:
    result = await make_intake(store).receive(submission(with_pdf(**headers), Recipient(OUTSIDE)))
    assert result.verdicts[0].reply.startswith(f"554 5.6.0 Submission instruction refused: {reason}")
    assert rows(store) == (0, [])


async def test_without_settings_a_pdf_wrapper_lacking_values_names_fields_and_settings(store: Store) -> None:
    """554 5.6.0 rather than a CDA with nullFlavor: each missing value, with what gives it."""
    raw = with_pdf(X_MSSGW_Patient=PATIENT_FIELD, X_MSSGW_Document_Type='11490-0; label="Lettre de liaison"')
    result = await make_intake(store, defaults=False).receive(submission(raw, Recipient(OUTSIDE)))
    reply = result.verdicts[0].reply
    assert reply == (
        "554 5.6.0 Submission instruction refused: the CDA R2 N1 around the PDF lacks values the CI-SIS "
        "makes mandatory (no nullFlavor): give X-MSSGW-Author rpps=, family=, institution-id=; "
        "X-MSSGW-Document-Type practice-setting=, facility-type= (or the settings documents.author_rpps, "
        "documents.author_family, documents.institution_id, documents.practice_setting, "
        "documents.facility_type)"
    )
    assert len(reply) <= 510
    assert rows(store) == (0, [])


async def test_the_author_and_care_setting_fields_give_the_wrapper_what_settings_lack(store: Store) -> None:
    raw = with_pdf(
        X_MSSGW_Patient=PATIENT_FIELD,
        X_MSSGW_Document_Type='11490-0; label="Lettre de liaison"; facility-type="SA07^Cabinet individuel"; '
        'practice-setting="AMBULATOIRE^Ambulatoire"',
        X_MSSGW_Author="rpps=10000000001; family=MARTIN; given=Jean; institution-id=123456789; "
        'specialty="G15_10/SM26^Médecin - Qualifié en Médecine Générale (SM)^1.2.250.1.213.1.1.4.5"',
    )
    result = await make_intake(store, defaults=False).receive(submission(raw, Recipient(OUTSIDE)))
    assert result.message_pk is not None, result.verdicts
    document = parse_message(store.queue.raw(result.message_pk)).documents[0]
    assert document.author is not None
    assert (document.author.rpps, document.author.family_name) == ("810000000001", "MARTIN")
    assert document.author.specialty is not None and document.author.specialty.code == "G15_10/SM26"
    assert document.healthcare_facility_type is not None
    assert document.healthcare_facility_type.code == "SA07"
    assert document.practice_setting is not None and document.practice_setting.code == "AMBULATOIRE"
    header = cda.read_header(document.content)
    assert header.author is not None and header.author.rpps == "810000000001"


async def test_the_settings_author_is_used_when_the_submission_names_none(store: Store) -> None:
    raw = with_pdf(X_MSSGW_Patient=PATIENT_FIELD, X_MSSGW_Document_Type='11490-0; label="Lettre de liaison"')
    result = await make_intake(store).receive(submission(raw, Recipient(OUTSIDE)))
    assert result.message_pk is not None, result.verdicts
    document = parse_message(store.queue.raw(result.message_pk)).documents[0]
    assert document.author is not None and document.author.rpps == "899700367909"
    assert document.legal_authenticator is not None and document.legal_authenticator.rpps == "899700367909"


@pytest.mark.parametrize(
    ("author", "reason"),
    [
        ("rpps=12; family=X", "X-MSSGW-Author: rpps: '12' is not an RPPS number"),
        ("rpps=10000000001; family=X; title=Dr", "X-MSSGW-Author: unknown parameter 'title'"),
        ("rpps=10000000001; given=Jean", "X-MSSGW-Author: family required with given"),
        ("family=X; role=10", "X-MSSGW-Author: role: '10' is not CODE^LABEL^SYSTEM"),
    ],
)
async def test_a_bad_author_field_is_refused(store: Store, author: str, reason: str) -> None:
    raw = with_pdf(
        X_MSSGW_Patient=PATIENT_FIELD,
        X_MSSGW_Document_Type='11490-0; label="Lettre de liaison"',
        X_MSSGW_Author=author,
    )
    result = await make_intake(store).receive(submission(raw, Recipient(OUTSIDE)))
    assert result.verdicts[0].reply.startswith(f"554 5.6.0 Submission instruction refused: {reason}")


@pytest.mark.parametrize("line_end", [b"\r\n", b"\r", b"\n"])
async def test_an_unknown_instruction_is_refused_after_any_line_end(store: Store, line_end: bytes) -> None:
    """The email package ends a header line at CR, LF or CRLF: an instruction after any of them is read
    (the check for messages with no instruction at all must see it too)."""
    raw = message(to=OUTSIDE).replace(b"\r\nSubject:", line_end + b"X-MSSGW-Urgent: yes\r\nSubject:", 1)
    result = await make_intake(store).receive(submission(raw, Recipient(OUTSIDE)))
    assert result.verdicts[0].reply.startswith(
        "554 5.6.0 Submission instruction refused: X-MSSGW-Urgent: unknown field"
    ), result.verdicts[0].reply


async def test_messages_arriving_together_share_commits(store: Store) -> None:
    batches: list[int] = []

    def counting(batch: Sequence[NewMessage], now: datetime) -> list[StoredMessage]:
        batches.append(len(batch))
        return store.repository.add_messages(batch, now)

    intake = Intake(Policy(inbound_settings(), CLIENTS), counting, lambda: T0, max_batch=50)
    results = await asyncio.gather(
        *(intake.receive(submission(message(), Recipient(OUTSIDE))) for _ in range(40))
    )
    assert all(r.verdicts[0].decision is Decision.ACCEPTED for r in results)
    assert sum(batches) == 40 and len(batches) < 40
    assert len({r.message_pk for r in results}) == 40


async def test_a_reload_keeps_the_rules_and_the_official_trust_list(store: Store) -> None:
    official = TrustList(frozenset({"official.test"}))

    def rule(arrival: Arrival, recipient: str, record: MessageRecord | None) -> Verdict | None:
        return None

    intake = make_intake(store, Policy(inbound_settings(), CLIENTS, None, [rule], official=official))
    settings = from_mapping({"gateway": {"mode": "operator"}, "inbound": {"trusted_domains": ["x.test"]}})
    intake.prepare_reload(settings)()
    policy = intake.policy
    assert policy.official is official and policy.recipient_rules == (rule,)
    assert policy.sender("operator", None, "a@official.test") is None
    assert policy.sender("operator", None, "a@x.test") is None
    assert policy.sender("operator", None, "a@other.test") is not None


async def test_mail_read_by_imap_is_stored_and_never_relayed(store: Store) -> None:
    raw = message(sender=f"dr@{PEER_DOMAIN}", to="bal@operateur.test")
    arrival = Arrival(raw, f"dr@{PEER_DOMAIN}", (Recipient("bal@operateur.test"),), "imap", peer="bal/INBOX")
    result = await make_intake(store).receive(arrival)
    assert result.verdicts[0].decision is Decision.ACCEPTED
    assert rows(store) == (1, [])
