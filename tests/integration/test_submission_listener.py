"""The internal submission listener over real sockets: who may submit, as whom, and what gets queued."""

from __future__ import annotations

import base64
import dataclasses
import email
import email.policy
import logging
import smtplib
from collections.abc import Callable
from datetime import UTC, date, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest

from gateway import metrics
from gateway.inbound.auth_throttle import AuthThrottle
from gateway.inbound.credentials import hash_password
from gateway.settings import DocumentSettings, Settings
from mappers import cda, ins, xds
from mappers.documents import Code
from mappers.metadata import parse_metadata
from mappers.mime import parse_message
from mappers.patient import Patient, Sex
from tests.support import cda_header
from tests.support.listener import (
    client_tls,
    listener_settings,
    open_submission_settings,
    reply,
    running,
    smtp,
)
from tests.support.mail import APP, OUR_DOMAIN, OUTSIDE, message
from tests.support.pki import Pki, write_private

PASSWORD = "correct horse battery staple"


def credentials(tmp_path: Path) -> str:
    path = write_private(tmp_path / "credentials", f"dpi:{hash_password(PASSWORD, log2_n=10)}\n".encode())
    return str(path)


def settings_for(tmp_path: Path, pki: Pki, **submission: object):  # type: ignore[no-untyped-def]
    values: dict[str, object] = {"credentials_file": credentials(tmp_path)}
    values.update(submission)
    return listener_settings(tmp_path, pki, "submission", submission=values)


async def test_an_authenticated_submission_over_starttls_is_queued(tmp_path: Path, pki: Pki) -> None:
    settings = settings_for(tmp_path, pki)
    async with running(settings, "submission") as gateway:

        def session(client: smtplib.SMTP) -> tuple[bool, bool, object]:
            client.ehlo()
            auth_before = client.has_extn("auth")
            client.starttls(context=client_tls(pki))
            client.ehlo()
            client.login("dpi", PASSWORD)
            refused = client.sendmail(APP, [OUTSIDE], message(to=OUTSIDE))
            return auth_before, client.has_extn("dsn"), refused

        auth_before_tls, dsn, refused = await smtp(gateway.port, session)
        assert (auth_before_tls, dsn, refused) == (False, True, {})
        assert [m[1] for m in gateway.messages()] == ["outbound"]
        assert gateway.deliveries() == [(OUTSIDE, None, None)]


async def test_a_login_logs_no_library_deprecation_warning(
    tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    async with running(settings_for(tmp_path, pki), "submission") as gateway:

        def session(client: smtplib.SMTP) -> object:
            client.starttls(context=client_tls(pki))
            client.ehlo()
            return client.login("dpi", PASSWORD)

        with caplog.at_level(logging.WARNING):
            await smtp(gateway.port, session)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_unauthenticated_submission_is_refused_530(tmp_path: Path, pki: Pki) -> None:
    async with running(settings_for(tmp_path, pki), "submission") as gateway:

        def session(client: smtplib.SMTP) -> str:
            client.starttls(context=client_tls(pki))
            client.ehlo()
            code, text = client.mail(APP)
            return f"{code} {text.decode()}"

        answer = await smtp(gateway.port, session)
        assert answer.startswith("530 5.7.0 Authentication required")
        assert gateway.messages() == []


async def test_auth_before_starttls_is_refused(tmp_path: Path, pki: Pki) -> None:
    async with running(settings_for(tmp_path, pki, require_starttls=False), "submission") as gateway:

        def session(client: smtplib.SMTP) -> str:
            client.ehlo()
            code, text = client.docmd("AUTH", "PLAIN AGRwaQBjb3JyZWN0")
            return f"{code} {text.decode()}"

        assert (await smtp(gateway.port, session)).startswith("538 5.7.11 Encryption required")


async def test_mail_before_starttls_is_refused_when_tls_is_required(tmp_path: Path, pki: Pki) -> None:
    async with running(settings_for(tmp_path, pki), "submission") as gateway:

        def session(client: smtplib.SMTP) -> str:
            client.ehlo()
            code, text = client.mail(APP)
            return f"{code} {text.decode()}"

        assert (await smtp(gateway.port, session)).startswith("530 5.7.0 Must issue a STARTTLS command first")


async def test_a_wrong_password_is_refused(tmp_path: Path, pki: Pki) -> None:
    async with running(settings_for(tmp_path, pki), "submission") as gateway:

        def session(client: smtplib.SMTP) -> str:
            client.starttls(context=client_tls(pki))
            client.ehlo()
            with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
                client.login("dpi", "wrong")
            return reply(refused.value)

        assert (await smtp(gateway.port, session)).startswith("535 5.7.8")


async def test_failed_logins_wait_longer_each_time_and_the_third_closes_the_connection(
    tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    failed_before = metrics.REGISTRY.get_sample_value("mssgw_auth_failures_total", {"listener": "submission"})
    async with running(settings_for(tmp_path, pki), "submission") as gateway:
        gateway.listener.auth_throttle = AuthThrottle(base=0.01)
        wrong = base64.b64encode(b"\0dpi\0wrong").decode()

        def guessing(client: smtplib.SMTP) -> list[str]:
            client.starttls(context=client_tls(pki))
            client.ehlo()
            answers = [client.docmd("AUTH", f"PLAIN {wrong}") for _ in range(3)]
            with pytest.raises(smtplib.SMTPServerDisconnected):
                client.noop()
            return [f"{code} {text.decode()}" for code, text in answers]

        def logging_in(client: smtplib.SMTP) -> object:
            client.starttls(context=client_tls(pki))
            client.ehlo()
            return client.login("dpi", PASSWORD)

        with caplog.at_level(logging.INFO, logger="gateway.inbound.smtp_server"):
            assert await smtp(gateway.port, guessing) == [
                "535 5.7.8 Authentication credentials invalid",
                "535 5.7.8 Authentication credentials invalid",
                "421 4.7.0 Too many failed authentication attempts: closing",
            ]
            # A right password still gets in, and starts its address again from no delay.
            await smtp(gateway.port, logging_in)
            assert gateway.listener.auth_throttle.failed("127.0.0.1") == (1, 0.0)
    failed = metrics.REGISTRY.get_sample_value("mssgw_auth_failures_total", {"listener": "submission"})
    assert (failed or 0) - (failed_before or 0) == 3
    events = [(r.getMessage(), getattr(r, "mssgw_fields", {})) for r in caplog.records]
    delays = [fields["delay"] for event, fields in events if event == "auth-delayed"]
    assert delays == [0.01, 0.02]
    assert [f["failures"] for e, f in events if e == "auth-disconnected"] == [3]


@pytest.mark.parametrize("where", ["envelope", "header"])
async def test_a_client_using_someone_elses_address_gets_553(tmp_path: Path, pki: Pki, where: str) -> None:
    other = f"director@{OUR_DOMAIN}"
    async with running(settings_for(tmp_path, pki), "submission") as gateway:

        def session(client: smtplib.SMTP) -> str:
            client.starttls(context=client_tls(pki))
            client.ehlo()
            client.login("dpi", PASSWORD)
            envelope, header = (other, APP) if where == "envelope" else (APP, other)
            with pytest.raises((smtplib.SMTPSenderRefused, smtplib.SMTPDataError)) as refused:
                client.sendmail(envelope, [OUTSIDE], message(sender=header))
            return reply(refused.value)

        answer = await smtp(gateway.port, session)
        assert answer.startswith("553 5.7.1") and f"<{other}> is not assigned to dpi" in answer
        assert gateway.messages() == []


async def test_an_allowed_network_submits_without_auth(tmp_path: Path, pki: Pki) -> None:
    async with running(open_submission_settings(tmp_path, pki), "submission") as gateway:
        refused = await smtp(gateway.port, lambda c: c.sendmail(APP, [OUTSIDE], message()))
        assert refused == {}
        assert len(gateway.deliveries()) == 1


async def test_a_client_certificate_names_the_client(tmp_path: Path, pki: Pki) -> None:
    settings = listener_settings(
        tmp_path,
        pki,
        "submission",
        submission={"client_ca": str(pki.ca), "clients": [{"name": pki.client_address, "senders": [APP]}]},
    )
    async with running(settings, "submission") as gateway:

        def session(client: smtplib.SMTP) -> object:
            client.starttls(context=client_tls(pki, certificate=True))
            return client.sendmail(APP, [OUTSIDE], message())

        assert await smtp(gateway.port, session) == {}
        assert len(gateway.deliveries()) == 1


async def test_a_message_over_the_size_limit_is_refused_before_it_is_stored(tmp_path: Path, pki: Pki) -> None:
    async with running(
        open_submission_settings(tmp_path, pki, max_message_size=5000), "submission"
    ) as gateway:

        def announced_and_data(client: smtplib.SMTP) -> tuple[str, str, str]:
            client.ehlo()
            size = client.esmtp_features["size"]
            code, text = client.mail(APP, ["SIZE=9000"])
            declared = f"{code} {text.decode()}"
            client.rset()
            client.mail(APP)
            client.rcpt(OUTSIDE)
            code, text = client.data(message(body=("y" * 70 + "\n") * 100))
            return size, declared, f"{code} {text.decode()}"

        size, declared, sent = await smtp(gateway.port, announced_and_data)
        assert size == "5000"
        assert declared.startswith("552 5.3.4 Message too big")
        assert sent.startswith("552 5.3.4 Message too big")
        assert gateway.messages() == []


NIR_PATIENT = Patient("279035121518989", ins.NIR_OID, "DUPONT", "Hélène", date(1979, 3, 5), Sex.FEMALE)
PATIENT_FIELD = (
    "matricule=279035121518989; birth-name=DUPONT; given-name=Hélène; birth-date=1979-03-05; sex=F"
)
PATIENT_ADDRESS = "279035121518989@patient.mssante.fr"


def with_parts(*parts: tuple[str, str, bytes], **headers: str) -> bytes:
    """A message with attachments ``(filename, content type, content)``."""
    mail = email.message_from_bytes(message(**headers), _class=EmailMessage, policy=email.policy.default)
    assert isinstance(mail, EmailMessage)
    for filename, content_type, content in parts:
        maintype, subtype = content_type.split("/")
        mail.add_attachment(content, maintype=maintype, subtype=subtype, filename=filename)
    return mail.as_bytes(policy=email.policy.SMTP)


def cda_for(patient: Patient) -> bytes:
    """A CDA R2 N1 written by our own builder for ``patient``."""
    return cda.wrap_pdf(
        b"%PDF-1.4\n% cr\n%%EOF\n", patient, title="Compte rendu",
        type_code=Code("11490-0", "Lettre de liaison", xds.LOINC_OID),
        effective_time=datetime(2026, 11, 20, 9, 0, tzinfo=UTC), document_id="1.2.250.1.999.2",
        **cda_header.WRAPPER,
    )  # fmt: skip


def packaging_settings(tmp_path: Path, pki: Pki) -> Settings:
    """An open submission listener whose gateway has the X-MSS-NIL reference packages need."""
    settings = open_submission_settings(tmp_path, pki)
    gateway = dataclasses.replace(settings.gateway, nil_reference="DEV935997")
    documents = DocumentSettings(**cda_header.SETTINGS)  # the hospital's defaults for the CDA wrapper
    return dataclasses.replace(settings, gateway=gateway, documents=documents)


PDF = ("cr.pdf", "application/pdf", b"%PDF-1.4 compte rendu\n")
DOCUMENT_TYPE = '11490-0; label="Lettre de liaison"'


def data_reply(recipients: list[str], raw: bytes) -> Callable[[smtplib.SMTP], str]:
    """A session sending ``raw``: "" when accepted, else the refusal's reply."""

    def session(client: smtplib.SMTP) -> str:
        try:
            client.sendmail(APP, recipients, raw)
        except smtplib.SMTPDataError as error:
            return reply(error)
        return ""

    return session


@pytest.mark.parametrize(
    "parts",
    [
        pytest.param([("cr.xml", "text/xml", cda_for(NIR_PATIENT))], id="bare-cda"),
        pytest.param([PDF, ("cr.xml", "text/xml", cda_for(NIR_PATIENT))], id="cda-beside-a-pdf"),
    ],
)
async def test_a_cda_about_another_patient_than_x_mssgw_patient_is_refused_554(
    tmp_path: Path, pki: Pki, parts: list[tuple[str, str, bytes]]
) -> None:
    other = PATIENT_FIELD.replace("DUPONT", "MARTIN").replace("sex=F", "sex=M")
    raw = with_parts(*parts, X_MSSGW_Patient=other, X_MSSGW_Document_Type=DOCUMENT_TYPE)
    async with running(packaging_settings(tmp_path, pki), "submission", citizen=True) as gateway:
        answer = await smtp(gateway.port, data_reply([OUTSIDE], raw))
        assert answer == (
            "554 5.6.0 Not sent: one patient per message: cr.xml: birth name MARTIN in X-MSSGW-Patient, "
            "DUPONT in the document; sex M in X-MSSGW-Patient, F in the document"
        )
        assert gateway.messages() == []


async def test_x_mssgw_confidentiality_masks_the_document_and_a_patient_copy_refuses_it_all(
    tmp_path: Path, pki: Pki
) -> None:
    fields = {"X_MSSGW_Patient": PATIENT_FIELD, "X_MSSGW_Document_Type": DOCUMENT_TYPE}
    masked = with_parts(PDF, X_MSSGW_Confidentiality="INVISIBLE_PATIENT", **fields)
    async with running(packaging_settings(tmp_path, pki), "submission", citizen=True) as gateway:
        answer = await smtp(gateway.port, data_reply([OUTSIDE, PATIENT_ADDRESS], masked))
        assert answer.startswith("550 5.7.1 document 'Lettre de liaison' (")
        assert "is marked INVISIBLE_PATIENT" in answer
        assert gateway.messages() == []
        assert await smtp(gateway.port, data_reply([OUTSIDE], masked)) == ""
        ((_, _, stored),) = gateway.messages()
    record = parse_message(stored)
    assert [c.code for d in record.documents for c in d.confidentiality] == ["INVISIBLE_PATIENT"]


async def test_x_mssgw_document_type_gives_the_class_code_and_content_type_code(
    tmp_path: Path, pki: Pki
) -> None:
    kind = (
        f'{DOCUMENT_TYPE}; class-code="11^Résultats d\'examens"; '
        'content-type-code="04^Hospitalisation de jour"'
    )
    raw = with_parts(PDF, X_MSSGW_Patient=PATIENT_FIELD, X_MSSGW_Document_Type=kind)
    async with running(packaging_settings(tmp_path, pki), "submission", citizen=True) as gateway:
        assert await smtp(gateway.port, data_reply([OUTSIDE], raw)) == ""
        ((_, _, stored),) = gateway.messages()
    (metadata_xml,) = parse_message(stored).package_metadata
    metadata = parse_metadata(metadata_xml)
    assert metadata.submission is not None
    assert metadata.submission.content_type == Code("04", "Hospitalisation de jour", xds.CONTENT_TYPE_OID)
    [entry] = metadata.entries
    assert entry.document.class_code == Code("11", "Résultats d'examens", xds.CLASS_CODE_OID)
    assert entry.document.format_code == xds.PDF_FORMAT


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"X_MSSGW_Note": "x"}, "X-MSSGW-Note: unknown field (known: X-MSSGW-Patient, "),
        ({"X_MSSGW_Patient": PATIENT_FIELD, "X_MSSGW_Document_Type": DOCUMENT_TYPE,
          "X_MSSGW_Confidentiality": "SECRET"},
         "X-MSSGW-Confidentiality: 'SECRET' is not one of INVISIBLE_PATIENT, INVISIBLE_REP_LEGAUX, "),
        ({"X_MSSGW_Confidentiality": "INVISIBLE_PATIENT"},
         "X-MSSGW-Confidentiality: only with X-MSSGW-Patient"),
        ({"X_MSSGW_Document_Type": DOCUMENT_TYPE}, "X-MSSGW-Document-Type: only with X-MSSGW-Patient"),
    ],
)  # fmt: skip
async def test_an_instruction_the_gateway_cannot_follow_is_refused_554(
    tmp_path: Path, pki: Pki, headers: dict[str, str], reason: str
) -> None:
    raw = with_parts(PDF, **headers)
    async with running(packaging_settings(tmp_path, pki), "submission", citizen=True) as gateway:
        answer = await smtp(gateway.port, data_reply([OUTSIDE], raw))
        assert answer.startswith(f"554 5.6.0 Submission instruction refused: {reason}")
        assert gateway.messages() == []
