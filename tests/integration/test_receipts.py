"""Receipts: a DSN and an MDN for a sent message update each recipient's status; Mon Espace Santé refusals
become explicit statuses; an unmatched receipt is kept as such; read-receipt requests on received packages
are answered with the ANS MDN in the same commit, and never in the cases RFC 8098 forbids."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import pytest

from gateway import settings as settings_module
from gateway.channels.steps import CitizenSteps
from gateway.store.db import Store
from gateway.store.queue_admin import DeliveryView
from gateway.store.repository import NewMessage, Recipient
from mappers import dsn, ins
from mappers.mdn import Disposition, build_mdn
from mappers.mime import build_message, parse_message
from mappers.records import Mailbox, MessageRecord
from tests.support.mail import message
from tests.unit.mappers import samples

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
PRO = "dr.chaput@hopital.test.mssante.fr"
COLLEAGUE = "dr.martin@cabinet.test.mssante.fr"
PATIENT = "279035121518989@patient.mssante.fr"
HOSTNAME = "mssgw.hopital.test.mssante.fr"
SETTINGS = settings_module.from_mapping(
    {
        "gateway": {"hostname": HOSTNAME, "nil_reference": "DEV935997"},
        "routes": [{"domain": "*", "transport": "folder", "path": "/x"}],
    }
)


@pytest.fixture
def steps(store: Store) -> CitizenSteps:
    return CitizenSteps(SETTINGS, store.channels, lambda: T0)


async def send_original(store: Store, steps: CitizenSteps) -> tuple[int, bytes]:
    record = MessageRecord(
        author=Mailbox(PRO),
        to=(Mailbox(COLLEAGUE), Mailbox(PATIENT)),
        subject="Ordonnance",
        patient=samples.patient(oid=ins.NIR_OID),
        disposition_notification_to=Mailbox(PRO),
    )
    raw = build_message(record, nil_reference="DEV935997", hostname=HOSTNAME, now=T0).as_bytes()
    new = NewMessage(
        raw, PRO, "outbound", "cli", (Recipient(COLLEAGUE), Recipient(PATIENT)), message_id=_id(raw)
    )
    finished = await steps.finish(new, record, [])
    assert all(r.notify == "SUCCESS,FAILURE" for r in finished.recipients)
    return store.repository.add_messages([finished], T0)[0].pk, finished.raw


def _id(raw: bytes) -> str:
    return str(email.message_from_bytes(raw, policy=email.policy.default)["Message-ID"])


async def receive(store: Store, steps: CitizenSteps, raw: bytes, at: datetime, sender: str = "") -> int:
    record = parse_message(raw)
    new = NewMessage(raw, sender, "inbound", "imap", message_id=record.message_id)
    finished = await steps.finish(new, record, [PRO])
    return store.repository.add_messages([finished], at)[0].pk


def deliveries(store: Store, pk: int) -> dict[str, DeliveryView]:
    return {d.recipient: d for d in store.queue.show(pk).deliveries}


async def test_a_dsn_then_an_mdn_update_each_recipients_status(store: Store, steps: CitizenSteps) -> None:
    pk, original = await send_original(store, steps)
    report = dsn.build_dsn(
        original,
        [
            dsn.RecipientReport(COLLEAGUE, "delivered", "2.0.0", remote_mta="mx.cabinet.test"),
            dsn.RecipientReport(PATIENT, "failed", "5.2.1", diagnostic="550 5.2.1 Messagerie fermée"),
        ],
        reporting_mta="smtp.operator.test",
        postmaster="MAILER-DAEMON@smtp.operator.test",
        sender=PRO,
        now=T0 + timedelta(minutes=1),
    )
    dsn_pk = await receive(store, steps, report.as_bytes(), T0 + timedelta(minutes=1))
    status = deliveries(store, pk)
    assert (status[COLLEAGUE].receipt_status, status[COLLEAGUE].receipt_detail) == ("delivered", "2.0.0")
    assert status[PATIENT].receipt_status == "mailbox-closed"
    assert status[PATIENT].receipt_detail == "550 5.2.1 Messagerie ferm?e"
    assert status[COLLEAGUE].receipt_id == dsn_pk and store.queue.show(dsn_pk).kind == "dsn"

    read = build_mdn(
        original,
        disposition=Disposition(type="displayed", automatic=False),
        final_recipient=COLLEAGUE,
        sender=COLLEAGUE,
        recipient=PRO,
        hostname="cabinet.test",
        now=T0 + timedelta(hours=1),
    )
    mdn_pk = await receive(store, steps, read.as_bytes(), T0 + timedelta(hours=1), sender=COLLEAGUE)
    colleague = deliveries(store, pk)[COLLEAGUE]
    assert (colleague.receipt_status, colleague.receipt_id) == ("displayed", mdn_pk)
    assert colleague.receipt_at == T0 + timedelta(hours=1)

    # A late "delivered" never hides "displayed".
    await receive(store, steps, report.as_bytes().replace(b"Message-ID: <dsn.", b"Message-ID: <dsn2."), T0)
    assert deliveries(store, pk)[COLLEAGUE].receipt_status == "displayed"
    trail = [kind for _, kind, _ in store.queue.show(pk).events]
    assert {"dsn-delivered", "dsn-mailbox-closed", "mdn-displayed"} <= set(trail)


@pytest.mark.parametrize(
    ("status", "diagnostic", "expected"),
    [
        ("5.1.1", "550 5.1.1 Patient non trouvé", "patient-not-found"),
        ("5.1.3", "550 5.1.3 Adresse invalide", "invalid-address"),
        ("5.3.4", "552 5.3.4 Taille dépassée (25 Mo)", "too-large"),
        ("5.2.1", None, "mailbox-closed"),
        ("5.7.1", "550 5.7.1 refused", "failed"),
    ],
)
async def test_mon_espace_sante_bounces_become_explicit_statuses(
    store: Store, steps: CitizenSteps, status: str, diagnostic: str | None, expected: str
) -> None:
    pk, original = await send_original(store, steps)
    report = dsn.build_dsn(
        original,
        [dsn.RecipientReport(PATIENT, "failed", status, diagnostic=diagnostic)],
        reporting_mta="mes.test",
        postmaster="MAILER-DAEMON@mes.test",
        sender=PRO,
        now=T0,
    )
    await receive(store, steps, report.as_bytes(), T0)
    assert deliveries(store, pk)[PATIENT].receipt_status == expected


async def test_an_mdn_error_keeps_the_ans_code_and_an_unmatched_receipt_is_kept_as_such(
    store: Store, steps: CitizenSteps
) -> None:
    pk, original = await send_original(store, steps)
    negative = build_mdn(
        original,
        disposition=Disposition(error_code=902),
        final_recipient=COLLEAGUE,
        sender=COLLEAGUE,
        recipient=PRO,
        hostname="cabinet.test",
        now=T0,
    )
    await receive(store, steps, negative.as_bytes(), T0)
    colleague = deliveries(store, pk)[COLLEAGUE]
    assert (colleague.receipt_status, colleague.receipt_detail) == (
        "error",
        "902^Identifiant patient inconnu",
    )

    stray = negative.as_bytes().replace(_id(original).encode(), b"<unknown@nowhere>")
    stray_pk = await receive(store, steps, stray.replace(b"Message-ID: <mdn.", b"Message-ID: <x."), T0)
    entry = store.queue.show(stray_pk)
    assert (entry.kind, entry.state) == ("mdn", "unmatched")


def document_mail(*, dnt: str | None, cda_patient_matricule: str = "279035121518989") -> bytes:
    """A professional's document mail to our mailbox; the CDA may name another patient than METADATA."""
    patient = samples.patient()
    other = samples.patient(matricule=cda_patient_matricule)
    record = MessageRecord(
        author=Mailbox(COLLEAGUE),
        to=(Mailbox(PRO),),
        subject="",
        patient=patient,
        documents=(samples.cda_document(other, confidentiality=()),),
        disposition_notification_to=Mailbox(dnt) if dnt else None,
    )
    return build_message(record, nil_reference="DEV935997", hostname="cabinet.test", now=T0).as_bytes()


async def answer_of(
    store: Store, steps: CitizenSteps, raw: bytes, sender: str = COLLEAGUE
) -> EmailMessage | None:
    pk = await receive(store, steps, raw, T0, sender=sender)
    answers = [e for e in store.queue.entries(("queued",)) if e.kind == "mdn"]
    if not answers:
        return None
    [answer] = answers
    assert answer.deliveries[0].recipient == COLLEAGUE and answer.envelope_from == ""
    assert store.queue.show(pk).state == "stored"
    message = email.message_from_bytes(store.queue.raw(answer.id), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


async def test_a_consistent_package_is_answered_processed(store: Store, steps: CitizenSteps) -> None:
    answer = await answer_of(store, steps, document_mail(dnt=COLLEAGUE))
    assert answer is not None
    notification = answer.get_payload()[1].get_payload()[0]
    assert notification["Disposition"] == "automatic-action/MDN-sent-automatically; processed"
    assert str(answer["Subject"]).startswith("XDM/1.0/DDM+CR d'imagerie médicale PAT-TROIS DOMINIQUE")


async def test_a_package_whose_cda_and_metadata_disagree_gets_the_ans_904_mdn(
    store: Store, steps: CitizenSteps
) -> None:
    original = document_mail(dnt=COLLEAGUE, cda_patient_matricule="146026322000196")
    answer = await answer_of(store, steps, original)
    assert answer is not None
    # Golden structure (MSSANTE.md §8.3): multipart/report, human text, the disposition-notification part,
    # the original's headers, then the original IHE_XDM.zip and PDF copy re-attached.
    assert answer.get_content_type() == "multipart/report"
    assert answer.get_param("report-type") == "disposition-notification"
    parts = answer.get_payload()
    assert [p.get_content_type() for p in parts] == [
        "text/plain",
        "message/disposition-notification",
        "message/rfc822",
        "application/zip",
        "application/pdf",
    ]
    label = "L'INS transmis ne correspond pas exactement à celui stocké dans la base du consommateur"
    assert f"l'erreur 904^{label}" in parts[0].get_content()
    fields = parts[1].get_payload()[0]
    original_message = email.message_from_bytes(original, policy=email.policy.default)
    assert fields["Disposition"] == (
        "automatic-action/MDN-sent-automatically; processed/Error: 904^L'INS transmis ne correspond pas "
        "exactement a celui stocke dans la base du consommateur"  # the field is US-ASCII (RFC 8098)
    )
    assert fields["Final-Recipient"] == f"rfc822; {PRO}"
    assert "Original-Recipient" not in fields  # the original had none (RFC 8098 § 3.2.3)
    assert parts[2].get_content()["Message-ID"] == original_message["Message-ID"]
    assert fields["Original-Message-ID"] == original_message["Message-ID"]
    assert str(answer["Subject"]).startswith("[KO Intégration système !][904] XDM/1.0/DDM+")
    assert answer["In-Reply-To"] == original_message["Message-ID"]
    assert answer["Auto-Submitted"] == "auto-replied"
    sent = {p.get_filename(): p.get_content() for p in original_message.iter_attachments()}
    returned = {p.get_filename(): p.get_content() for p in parts[3:]}
    assert returned == sent and "IHE_XDM.zip" in returned
    assert [p.get_param("name") for p in parts[3:]] == [p.get_filename() for p in parts[3:]]


@pytest.mark.parametrize(
    ("dnt", "sender"),
    [
        (None, COLLEAGUE),  # nothing asked
        ("someone.else@cabinet.test.mssante.fr", COLLEAGUE),  # differs from Return-Path: needs a person
        (COLLEAGUE, ""),  # null Return-Path
    ],
)
async def test_no_mdn_when_rfc_8098_says_not_to(
    store: Store, steps: CitizenSteps, dnt: str | None, sender: str
) -> None:
    assert await answer_of(store, steps, document_mail(dnt=dnt), sender=sender) is None


async def test_a_receipt_is_never_answered_with_a_receipt(store: Store, steps: CitizenSteps) -> None:
    receipt = build_mdn(
        document_mail(dnt=COLLEAGUE),
        disposition=Disposition(),
        final_recipient=COLLEAGUE,
        sender=COLLEAGUE,
        recipient=PRO,
        hostname="cabinet.test",
        now=T0,
    )
    receipt["Disposition-Notification-To"] = COLLEAGUE
    assert await answer_of(store, steps, receipt.as_bytes()) is None


async def test_an_mdn_in_the_ans_pages_shape_records_its_902(store: Store, steps: CitizenSteps) -> None:
    pk, original = await send_original(store, steps)
    await receive(store, steps, samples.ans_shaped_mdn(_id(original), COLLEAGUE, PRO), T0)
    colleague = deliveries(store, pk)[COLLEAGUE]
    assert (colleague.receipt_status, colleague.receipt_detail) == (
        "error",
        "902^Identifiant patient inconnu",
    )


def test_an_mdn_copies_the_originals_original_recipient_header() -> None:
    original = b"Original-Recipient: rfc822;Dr.B@x.mssante.fr\r\nMessage-ID: <o@x>\r\nSubject: s\r\n\r\nb\r\n"
    mdn = build_mdn(
        original,
        disposition=Disposition(),
        final_recipient="b@x.mssante.fr",
        sender="b@x.mssante.fr",
        recipient=PRO,
        hostname="x.mssante.fr",
        now=T0,
    )
    fields = mdn.get_payload()[1].get_payload()[0]
    assert fields["Original-Recipient"] == "rfc822;Dr.B@x.mssante.fr"
    assert fields["Final-Recipient"] == "rfc822; b@x.mssante.fr"


ABSENT = "Absent jusqu'au 2 janvier, ecrire au secretariat@cabinet.test.mssante.fr"


@pytest.mark.parametrize(
    "form",
    [{"Auto_Submitted": "auto-replied"}, {"X_Autoreply": "yes"}, {"X_Autorespond": "on"},
     {"Precedence": "auto_reply"}],
    ids=lambda form: next(iter(form)),
)  # fmt: skip
async def test_an_absence_reply_is_the_recipients_receipt_and_is_never_answered(
    store: Store, steps: CitizenSteps, form: dict[str, str]
) -> None:
    pk, original = await send_original(store, steps)
    absence = message(COLLEAGUE, PRO, subject="Absent", body=ABSENT, In_Reply_To=_id(original), **form)
    reply_pk = await receive(store, steps, absence, T0, sender="")
    colleague = deliveries(store, pk)[COLLEAGUE]
    assert (colleague.receipt_status, colleague.receipt_detail) == ("auto-reply", ABSENT)
    entry = store.queue.show(reply_pk)
    assert (entry.kind, entry.state) == ("auto-reply", "stored")
    assert [e for e in store.queue.entries(("queued",)) if e.related_id == reply_pk] == []  # no answer


async def test_a_patients_absence_reply_quoting_fin_leaves_the_channel_as_it_was(
    store: Store, steps: CitizenSteps
) -> None:
    pk, original = await send_original(store, steps)
    [before] = store.channels.find(("open",))
    absence = message(
        PATIENT, PRO, subject="Re: [FIN] Ordonnance", body=ABSENT, In_Reply_To=_id(original),
        Auto_Submitted="auto-replied",
    )  # fmt: skip
    await receive(store, steps, absence, T0 + timedelta(days=3), sender=PATIENT)
    assert deliveries(store, pk)[PATIENT].receipt_status == "auto-reply"
    [after] = store.channels.find(("open",))
    assert after.last_activity_at == before.last_activity_at  # no exchange, and no [FIN]


async def test_a_patients_absence_reply_on_a_closed_channel_is_refused_like_any_patient_mail(
    store: Store, steps: CitizenSteps
) -> None:
    pk, original = await send_original(store, steps)
    [channel] = store.channels.find(("open",))
    store.channels.close(channel.id, "test", T0 + timedelta(hours=1))
    absence = message(PATIENT, PRO, body=ABSENT, In_Reply_To=_id(original), Auto_Submitted="auto-replied")
    kept = await receive(store, steps, absence, T0 + timedelta(days=1), sender=PATIENT)
    entry = store.queue.show(kept)
    assert (entry.kind, entry.state, entry.deliveries) == ("auto-reply", "refused", ())
    assert deliveries(store, pk)[PATIENT].receipt_status == "auto-reply"
