"""Connecting to an IMAP server as the bridge does: STARTTLS (the aioimaplib extension) or implicit TLS, the
server always verified, never a login in clear text, and the three ways of logging in."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.inbound.imap_session import ImapError, ImapSession, Timeouts
from gateway.settings import ImapAccountSettings
from gateway.tls import client_context
from tests.support.fake_imap import BASE_CAPABILITIES, FakeImap
from tests.support.imap_bridge import PASSWORD, USER, bridge_settings, secret_file, server_context
from tests.support.pki import Pki

TIMEOUTS = Timeouts(connect=5.0, command=5.0)


@pytest.fixture
async def servers() -> AsyncIterator[list[FakeImap]]:
    started: list[FakeImap] = []
    yield started
    for server in started:
        await server.stop()


async def serve(servers: list[FakeImap], **options: Any) -> FakeImap:
    server = await FakeImap(**options).start()
    servers.append(server)
    return server


async def connect(tmp_path: Path, pki: Pki, server: FakeImap, **account: Any) -> ImapSession:
    settings = bridge_settings(tmp_path, pki, server.port, **account)
    chosen: ImapAccountSettings = settings.imap.accounts[0]
    return await ImapSession.open(chosen, client_context(chosen.tls_settings(settings.tls)), TIMEOUTS)


def tls_version(session: ImapSession) -> str:
    ssl_object = session.client.protocol.transport.get_extra_info("ssl_object")
    assert ssl_object is not None, "the connection is not encrypted"
    return str(ssl_object.version())


async def test_starttls_upgrades_the_connection_before_the_login(
    tmp_path: Path, pki: Pki, servers: list[FakeImap]
) -> None:
    server = await serve(servers, tls=server_context(pki), passwords={USER: PASSWORD})
    session = await connect(tmp_path, pki, server)
    try:
        assert tls_version(session) in ("TLSv1.2", "TLSv1.3")
        assert "IDLE" in session.capabilities
        assert (await session.select("INBOX")).uidvalidity == server.uidvalidity
    finally:
        await session.logout()
        await session.close()
    assert server.logins == [USER]


async def test_implicit_tls(tmp_path: Path, pki: Pki, servers: list[FakeImap]) -> None:
    server = await serve(servers, tls=server_context(pki), implicit_tls=True)
    session = await connect(tmp_path, pki, server, security="tls")
    try:
        assert tls_version(session) in ("TLSv1.2", "TLSv1.3")
    finally:
        await session.close()
    assert server.logins == [USER]


async def test_a_server_without_starttls_gets_no_login(
    tmp_path: Path, pki: Pki, servers: list[FakeImap]
) -> None:
    server = await serve(servers, capabilities=BASE_CAPABILITIES.replace("STARTTLS ", ""))
    with pytest.raises(ImapError, match="does not offer STARTTLS; refusing to log in over clear text"):
        await connect(tmp_path, pki, server)
    assert server.logins == []


async def test_bytes_injected_after_the_starttls_reply_are_refused(
    tmp_path: Path, pki: Pki, servers: list[FakeImap]
) -> None:
    server = await serve(servers, tls=server_context(pki), inject_after_starttls=True)
    with pytest.raises(ImapError, match="sent data after its STARTTLS reply"):
        await connect(tmp_path, pki, server)
    assert server.logins == []


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_an_untrusted_server_certificate_gets_no_login(
    tmp_path: Path, pki: Pki, servers: list[FakeImap], security: str
) -> None:
    untrusted = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    untrusted.load_cert_chain(pki.untrusted.server.cert, pki.untrusted.server.key)
    server = await serve(servers, tls=untrusted, implicit_tls=security == "tls")
    with pytest.raises(ssl.SSLCertVerificationError):
        await connect(tmp_path, pki, server, security=security)
    assert server.logins == []


async def test_a_wrong_password_is_a_clear_error(tmp_path: Path, pki: Pki, servers: list[FakeImap]) -> None:
    server = await serve(servers, tls=server_context(pki), passwords={USER: "another one"})
    with pytest.raises(ImapError, match="the server refused the password login"):
        await connect(tmp_path, pki, server)


@pytest.mark.parametrize("sasl_ir", [True, False], ids=["SASL-IR", "continuation"])
async def test_xoauth2_reads_its_token_file(
    tmp_path: Path, pki: Pki, servers: list[FakeImap], sasl_ir: bool
) -> None:
    capabilities = BASE_CAPABILITIES if sasl_ir else BASE_CAPABILITIES.replace("SASL-IR ", "")
    server = await serve(
        servers, capabilities=capabilities, tls=server_context(pki), tokens={USER: "token-1"}
    )
    token = secret_file(tmp_path / "imap.token", "token-1")
    session = await connect(tmp_path, pki, server, auth="xoauth2", token_file=str(token))
    await session.close()
    secret_file(token, "expired")
    with pytest.raises(ImapError, match="refused the xoauth2 login"):
        await connect(tmp_path, pki, server, auth="xoauth2", token_file=str(token))
    assert server.logins == [USER]


async def test_sasl_external_logs_in_with_the_client_certificate(
    tmp_path: Path, pki: Pki, servers: list[FakeImap]
) -> None:
    server = await serve(servers, tls=server_context(pki, ask_client_certificate=True))
    session = await connect(
        tmp_path,
        pki,
        server,
        auth="external",
        username="",
        client_certificate=str(pki.client.cert),
        client_key=str(pki.client.key),
    )
    await session.close()
    assert server.logins == [pki.client_address]
