"""Tests of the test support itself: the PKI, the fake operator, the PostgreSQL schema fixture, DKIM keys.

The end-to-end tests lean on these peers; if a peer were wrong (a client certificate not checked, a
scripted failure not given) those tests could pass for the wrong reason. Real sockets on loopback only.
"""

from __future__ import annotations

import smtplib
import ssl
import stat
import threading
from pathlib import Path

import dkim as dkimpy
import pytest
import sqlalchemy
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.outbound.transports.smtp_client import SmtpConnection
from tests.support import pg
from tests.support.dkim import (
    KeyKind,
    RsaFormat,
    combined_dnsfunc,
    dkimpy_private_key,
    make_dkim_key,
)
from tests.support.fake_operator import FakeOperator, FakeOperatorFactory, refused_port
from tests.support.pki import Pki

REPO = Path(__file__).resolve().parents[2]
MESSAGE = b"From: a@hopital.test.mssante.fr\r\nTo: b@x.mssante.fr\r\nSubject: t\r\n\r\nbody\r\n"


def client_context(pki: Pki, *, with_cert: bool = True) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki.ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if with_cert:
        context.load_cert_chain(pki.client.cert, pki.client.key)
    return context


# -- PKI ---------------------------------------------------------------------------------------------


def test_pki_keys_are_private_and_certificates_public(pki: Pki) -> None:
    for authority in (pki.trusted, pki.untrusted):
        for pair in (authority.server, authority.client):
            assert stat.S_IMODE(pair.key.stat().st_mode) == 0o600
            assert stat.S_IMODE(pair.cert.stat().st_mode) == 0o644
        assert authority.ca.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")


def test_pki_client_certificate_is_for_client_auth_and_names_the_mailbox(pki: Pki) -> None:
    cert = x509.load_pem_x509_certificate(pki.client.cert.read_bytes())
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value

    assert ExtendedKeyUsageOID.CLIENT_AUTH in usage
    assert san.get_values_for_type(x509.RFC822Name) == [pki.client_address]


def test_pki_untrusted_authority_does_not_verify_trusted_server(pki: Pki) -> None:
    trusted = x509.load_pem_x509_certificate(pki.ca.read_bytes())
    untrusted = x509.load_pem_x509_certificate(pki.untrusted.ca.read_bytes())
    assert trusted.subject != untrusted.subject


# -- fake operator -----------------------------------------------------------------------------------


def test_operator_receives_over_starttls_with_client_certificate(
    pki: Pki, fake_operator: FakeOperatorFactory
) -> None:
    operator = fake_operator()
    with smtplib.SMTP("127.0.0.1", operator.port, local_hostname="gw.test") as client:
        client.starttls(context=client_context(pki))
        client.sendmail(
            "gw-app@hopital.test.mssante.fr",
            ["dr.b@x.mssante.fr"],
            MESSAGE,
            mail_options=["RET=HDRS", "ENVID=Q1+2Bx"],
            rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;Dr.B@x.mssante.fr"],
        )

    [received] = operator.wait_for_messages(1)
    assert received.content == MESSAGE
    assert received.rcpt_tos == ("dr.b@x.mssante.fr",)
    assert received.mail_params == {"SIZE": str(len(MESSAGE)), "RET": "HDRS", "ENVID": "Q1+2Bx"}
    assert received.rcpt_params("DR.B@x.mssante.fr") == {
        "NOTIFY": "SUCCESS,FAILURE",
        "ORCPT": "rfc822;Dr.B@x.mssante.fr",
    }
    assert received.tls_active
    assert received.tls.version in {"TLSv1.2", "TLSv1.3"}
    assert received.peer_cn == pki.client_address
    assert received.tls.emails == (pki.client_address,)
    assert received.helo == "gw.test"
    assert received.message["Subject"] == "t"
    assert (operator.connections, operator.transactions, operator.errors) == (1, 1, [])


def test_operator_advertises_extensions_and_demands_starttls(
    fake_operator: FakeOperatorFactory,
) -> None:
    operator = fake_operator(size_limit=1234)
    with smtplib.SMTP("127.0.0.1", operator.port) as client:
        client.ehlo()
        assert {"starttls", "size", "dsn", "pipelining"} <= set(client.esmtp_features)
        assert "auth" not in client.esmtp_features
        assert client.esmtp_features["size"] == "1234"
        assert client.mail("a@b.test") == (530, b"Must issue a STARTTLS command first")
    assert operator.messages == []


@pytest.mark.parametrize("certificate", ["none", "untrusted"])
def test_operator_refuses_client_without_trusted_certificate(
    pki: Pki, fake_operator: FakeOperatorFactory, certificate: str
) -> None:
    operator = fake_operator()
    context = client_context(pki, with_cert=False)
    if certificate == "untrusted":
        context.load_cert_chain(pki.untrusted.client.cert, pki.untrusted.client.key)

    with (
        pytest.raises((smtplib.SMTPServerDisconnected, ssl.SSLError, ConnectionError)),
        smtplib.SMTP("127.0.0.1", operator.port) as client,
    ):
        client.starttls(context=context)
        client.sendmail("a@b.test", ["c@d.test"], MESSAGE)

    operator.wait_until(lambda: len(operator.tls_failures) == 1, what="the handshake failure")
    assert operator.messages == []


def test_client_refuses_operator_with_untrusted_server_certificate(
    pki: Pki, fake_operator: FakeOperatorFactory
) -> None:
    operator = fake_operator(cert=pki.untrusted.server)
    with (
        pytest.raises(ssl.SSLCertVerificationError),
        smtplib.SMTP("127.0.0.1", operator.port) as client,
    ):
        client.starttls(context=client_context(pki))
    assert operator.messages == []


@pytest.mark.parametrize("server", ["expired_server", "misnamed_server"])
def test_client_refuses_trusted_ca_certificate_that_is_expired_or_for_another_host(
    pki: Pki, fake_operator: FakeOperatorFactory, server: str
) -> None:
    operator = fake_operator(cert=getattr(pki.trusted, server))
    with (
        pytest.raises(ssl.SSLCertVerificationError, match="expired|mismatch"),
        smtplib.SMTP("127.0.0.1", operator.port) as client,
    ):
        client.starttls(context=client_context(pki))
    assert operator.messages == []


def test_operator_scripted_451_twice_then_250(pki: Pki, fake_operator: FakeOperatorFactory) -> None:
    operator = fake_operator()
    operator.script(("DATA", 451, "4.3.0 try later"), ("DATA", 451, "4.3.0 still busy"))
    replies = []
    with smtplib.SMTP("127.0.0.1", operator.port) as client:
        client.starttls(context=client_context(pki))
        for _ in range(3):
            try:
                client.sendmail("a@b.test", ["c@d.test"], MESSAGE)
                replies.append(250)
            except smtplib.SMTPDataError as error:
                replies.append(error.smtp_code)

    assert replies == [451, 451, 250]
    assert [r.text for r in operator.refusals] == ["4.3.0 try later", "4.3.0 still busy"]
    assert len(operator.wait_for_messages(1)) == 1
    assert operator.transactions == 3
    assert operator.script_left == []


def test_operator_scripted_recipient_refusal_and_421_closing(
    fake_operator: FakeOperatorFactory,
) -> None:
    operator = fake_operator(cert=None, require_starttls=False, require_client_cert=False)
    operator.script(("RCPT", 550, "5.1.1 unknown", "bad@d.test"))
    with smtplib.SMTP("127.0.0.1", operator.port) as client:
        refused = client.sendmail("a@b.test", ["good@d.test", "bad@d.test"], MESSAGE)
        assert refused == {"bad@d.test": (550, b"5.1.1 unknown")}
        operator.script(("MAIL", 421, "4.7.0 closing"))
        with pytest.raises(smtplib.SMTPSenderRefused):
            client.sendmail("a@b.test", ["good@d.test"], MESSAGE)

    [received] = operator.messages
    assert received.rcpt_tos == ("good@d.test",)
    assert not received.tls_active
    assert [(r.stage, r.code) for r in operator.refusals] == [("RCPT", 550), ("MAIL", 421)]


def test_operator_without_dsn_refuses_dsn_parameters(fake_operator: FakeOperatorFactory) -> None:
    operator = fake_operator(cert=None, require_starttls=False, require_client_cert=False, dsn=False)
    with smtplib.SMTP("127.0.0.1", operator.port) as client:
        client.ehlo()
        assert "dsn" not in client.esmtp_features
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail("a@b.test", ["c@d.test"], MESSAGE, rcpt_options=["NOTIFY=NEVER"])


def test_operator_implicit_tls_with_auth_and_size(pki: Pki, fake_operator: FakeOperatorFactory) -> None:
    operator = fake_operator(implicit_tls=True, auth=("gw", "secret"), auth_required=True, size_limit=10_000)
    with smtplib.SMTP_SSL("127.0.0.1", operator.port, context=client_context(pki)) as client:
        client.ehlo()
        assert client.mail("a@b.test")[0] == 530
        client.rset()
        client.login("gw", "secret")
        with pytest.raises(smtplib.SMTPSenderRefused):
            client.sendmail("a@b.test", ["c@d.test"], b"x" * 20_000)
        client.sendmail("a@b.test", ["c@d.test"], MESSAGE)

    [received] = operator.wait_for_messages(1)
    assert received.auth_login == "gw"
    assert received.peer_cn == pki.client_address


def test_operator_hold_keeps_data_in_flight_until_release(
    pki: Pki, fake_operator: FakeOperatorFactory
) -> None:
    operator = fake_operator()
    operator.hold()
    outcome: list[object] = []

    def send() -> None:
        with smtplib.SMTP("127.0.0.1", operator.port) as client:
            client.starttls(context=client_context(pki))
            outcome.append(client.sendmail("a@b.test", ["c@d.test"], MESSAGE))

    sender = threading.Thread(target=send)
    sender.start()
    operator.wait_for_held(1)
    assert operator.messages == []
    operator.release()
    sender.join(10)
    assert outcome == [{}]
    assert len(operator.messages) == 1


async def test_operator_serves_async_clients_from_the_test_loop(
    pki: Pki, fake_operator: FakeOperatorFactory
) -> None:
    # The operator has its own loop in its own thread, so an async test can await a client here.
    operator = fake_operator()
    client = await SmtpConnection.open(
        "127.0.0.1",
        operator.port,
        implicit_tls=False,
        tls_context=client_context(pki),
        local_hostname="client.test",
        connect_timeout=5,
        command_timeout=5,
    )
    replies = await client.transaction("a@b.test", [], [("c@d.test", [])], MESSAGE)
    await client.quit()
    assert replies.data is not None and replies.data.code == 250

    [received] = await operator.wait_for_messages_async(1)
    assert received.peer_cn == pki.client_address


def test_operator_stop_closes_open_sessions(pki: Pki) -> None:
    operator = FakeOperator(cert=pki.server, client_ca=pki.ca).start()
    client = smtplib.SMTP("127.0.0.1", operator.port)
    try:
        client.ehlo()
        operator.stop()
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.noop()
    finally:
        client.close()
    operator.stop()  # a second stop is harmless


def test_wait_for_messages_times_out_with_a_summary(fake_operator: FakeOperatorFactory) -> None:
    operator = fake_operator()
    with pytest.raises(AssertionError, match=r"1 message\(s\).*connections=0"):
        operator.wait_for_messages(1, timeout=0.05)


def test_refused_port_refuses() -> None:
    with pytest.raises(ConnectionRefusedError):
        smtplib.SMTP("127.0.0.1", refused_port(), timeout=5)


# -- PostgreSQL --------------------------------------------------------------------------------------


@pytest.mark.postgres
def test_pg_temporary_schema_isolates_tables_and_is_dropped(pg_url: str) -> None:
    with pg.temporary_schema(pg_url) as url:
        options = sqlalchemy.make_url(url).query["options"]
        assert isinstance(options, str)
        schema = options.removeprefix("-csearch_path=")
        assert schema.startswith(pg.SCHEMA_PREFIX)
        engine = sqlalchemy.create_engine(url)
        try:
            with engine.begin() as connection:
                current = connection.execute(sqlalchemy.text("SELECT current_schema()")).scalar()
                connection.execute(sqlalchemy.text("CREATE TABLE probe (id integer)"))
                where = connection.execute(
                    sqlalchemy.text(
                        "SELECT table_schema FROM information_schema.tables WHERE table_name = 'probe'"
                    )
                ).scalars()
                assert current == schema
                assert schema in set(where)
        finally:
            engine.dispose()

    assert _schema_count(pg_url, schema) == 0


@pytest.mark.postgres
def test_pg_schema_url_fixture_gives_an_empty_schema(pg_schema_url: str) -> None:
    engine = sqlalchemy.create_engine(pg_schema_url)
    try:
        with engine.connect() as connection:
            tables = connection.execute(
                sqlalchemy.text(
                    "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()"
                )
            ).scalar()
    finally:
        engine.dispose()
    assert tables == 0


def test_pg_url_skips_or_fails_clearly_when_unreachable(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MSSGW_TEST_PG_URL", f"postgresql+psycopg://postgres@127.0.0.1:{refused_port()}/test")
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    pytester.makeconftest("from tests.conftest import pg_url")
    pytester.makepyfile("def test_db(pg_url):\n    pass\n")

    monkeypatch.delenv("MSSGW_REQUIRE_PG", raising=False)
    skipped = pytester.runpytest_subprocess("-rs", "-p", "no:cacheprovider")
    skipped.assert_outcomes(skipped=1)
    skipped.stdout.fnmatch_lines(["*PostgreSQL not reachable at *; set MSSGW_TEST_PG_URL*"])

    monkeypatch.setenv("MSSGW_REQUIRE_PG", "1")
    failed = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    failed.assert_outcomes(errors=1)


def _schema_count(url: str, schema: str) -> int:
    admin = sqlalchemy.create_engine(url)
    try:
        with admin.connect() as connection:
            count = connection.execute(
                sqlalchemy.text("SELECT count(*) FROM pg_namespace WHERE nspname = :name"),
                {"name": schema},
            ).scalar_one()
    finally:
        admin.dispose()
    assert isinstance(count, int)
    return count


# -- DKIM --------------------------------------------------------------------------------------------

SIGNED = (
    b"From: Dr A <dr.a@hopital.test.mssante.fr>\r\n"
    b"To: dr.b@x.mssante.fr\r\n"
    b"Subject: Compte rendu\r\n"
    b"Message-ID: <1@hopital.test.mssante.fr>\r\n"
    b"\r\n"
    b"Bonjour,\r\n"
)


@pytest.mark.parametrize(("kind", "rsa_format"), [("rsa", "pkcs8"), ("rsa", "pkcs1"), ("ed25519", "pkcs8")])
def test_dkim_sign_verify_round_trip_with_the_key_file(
    tmp_path: Path, kind: KeyKind, rsa_format: RsaFormat
) -> None:
    key = make_dkim_key(tmp_path, kind, rsa_format=rsa_format)
    assert stat.S_IMODE(key.private_key.stat().st_mode) == 0o600
    assert key.txt_record.startswith(f"v=DKIM1; k={kind}; p=".encode())

    # Sign the way the gateway will: dkimpy fed from the key file.
    header = dkimpy.sign(
        SIGNED,
        key.selector.encode(),
        key.domain.encode(),
        dkimpy_private_key(key.private_key.read_bytes()),
        signature_algorithm=key.algorithm,
    )
    signed = header + SIGNED

    assert key.verify(signed), key.failure(signed)
    assert not key.verify(signed.replace(b"Bonjour", b"Bonsoir"))
    assert not key.verify(SIGNED)
    assert key.failure(SIGNED) == "no DKIM-Signature header"


def test_dkim_rsa_pem_is_accepted_by_dkimpy_as_written(tmp_path: Path) -> None:
    # The RSA file goes to dkimpy unchanged; dkimpy_private_key is only needed for ed25519.
    key = make_dkim_key(tmp_path, "rsa")
    header = dkimpy.sign(SIGNED, key.selector.encode(), key.domain.encode(), key.private_key.read_bytes())
    assert key.verify(header + SIGNED)


def test_dkim_verify_rejects_another_key_and_other_names(tmp_path: Path) -> None:
    ours = make_dkim_key(tmp_path / "a", "rsa")
    other = make_dkim_key(tmp_path / "b", "rsa", selector="other")
    signed = other.sign(SIGNED)

    assert other.verify(signed)
    assert not ours.verify(signed)
    assert ours.dnsfunc(b"mssgw._domainkey.hopital.test.mssante.fr.") == ours.txt_record
    assert ours.dnsfunc("MSSGW._domainkey.hopital.test.mssante.fr") == ours.txt_record
    assert ours.dnsfunc(b"x._domainkey.hopital.test.mssante.fr.") is None
    assert combined_dnsfunc(ours, other)(b"other._domainkey.hopital.test.mssante.fr.", 5) == (
        other.txt_record
    )
