"""Limits and protocol abuse on the inbound listeners: smuggling, SIZE, recipients, commands, connections,
idle timeout, a store failing mid-session, and a reload that changes the certificate for the next client."""

from __future__ import annotations

import asyncio
import shutil
import smtplib
import ssl
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.inbound.intake import Intake, build_policy
from gateway.inbound.listener import smtp_listeners
from gateway.store.db import open_store
from tests.support.listener import client_tls, listener_settings, open_submission_settings, running, smtp
from tests.support.mail import APP, OUTSIDE, message
from tests.support.pki import Pki, make_pki
from tests.support.smtp_wire import Wire


@pytest.mark.parametrize(
    "smuggled",
    [b"\n.\n", b"\r\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\r"],
    ids=["LF.LF", "CRLF.LF", "LF.CRLF", "CR.CR", "CRLF.CR"],
)
async def test_a_smuggled_end_of_data_does_not_split_the_message(
    tmp_path: Path, pki: Pki, smuggled: bytes
) -> None:
    async with running(open_submission_settings(tmp_path, pki), "submission") as gateway:
        wire = await Wire.connect(gateway.port)
        await wire.send(b"EHLO client.test\r\n")
        assert (await wire.send(f"MAIL FROM:<{APP}>\r\n".encode())).startswith("250")
        assert (await wire.send(f"RCPT TO:<{OUTSIDE}>\r\n".encode())).startswith("250")
        assert (await wire.send(b"DATA\r\n")).startswith("354")
        payload = (
            message().rstrip(b"\r\n")
            + smuggled
            + f"MAIL FROM:<{APP}>\r\nRCPT TO:<victim@outside.test>\r\nDATA\r\nSmuggled\r\n".encode()
            + b"\r\n.\r\n"
        )
        answer = await wire.send(payload)
        assert answer.startswith("554 5.6.0 Bare LF or CR"), answer
        assert (await wire.send(b"NOOP\r\n")).startswith("250")  # no stray replies queued behind
        await wire.close()
        assert gateway.messages() == []


async def test_the_recipient_limit_gives_452_and_the_others_go_through(tmp_path: Path, pki: Pki) -> None:
    async with running(open_submission_settings(tmp_path, pki, max_recipients=2), "submission") as gateway:
        recipients = [f"r{i}@outside.test" for i in range(3)]
        refused = await smtp(gateway.port, lambda c: c.sendmail(APP, recipients, message()))
        assert refused == {
            recipients[2]: (452, b"4.5.3 Too many recipients: send the others in a new message (limit 2)")
        }
        assert sorted(d[0] for d in gateway.deliveries()) == recipients[:2]


async def test_too_many_commands_close_the_connection(tmp_path: Path, pki: Pki) -> None:
    async with running(open_submission_settings(tmp_path, pki, max_commands=5), "submission") as gateway:
        wire = await Wire.connect(gateway.port)
        answers = [await wire.send(b"NOOP\r\n") for _ in range(6)]
        assert answers[:5] == ["250 OK"] * 5
        assert answers[5].startswith("421 4.7.0 Too many commands")
        assert await wire.reply() == "<closed>"
        await wire.close()


async def test_connections_per_peer_are_limited(tmp_path: Path, pki: Pki) -> None:
    async with running(
        open_submission_settings(tmp_path, pki, connections_per_peer=2), "submission"
    ) as gateway:
        first, second = await Wire.connect(gateway.port), await Wire.connect(gateway.port)
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        third = Wire(reader, writer)
        assert (await third.reply()).startswith("421 4.7.0 Too many connections")
        await first.send(b"QUIT\r\n")
        await first.close()
        await third.close()
        assert (await second.send(b"NOOP\r\n")) == "250 OK"
        await second.close()


async def test_connections_over_max_connections_get_421_and_the_others_go_on(
    tmp_path: Path, pki: Pki
) -> None:
    settings = open_submission_settings(tmp_path, pki, max_connections=2)
    async with running(settings, "submission") as gateway:
        first, second = await Wire.connect(gateway.port), await Wire.connect(gateway.port)
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        third = Wire(reader, writer)
        assert (await third.reply()).startswith("421 4.3.2 Too many connections")
        assert await reader.read() == b""  # closed
        await third.close()
        await first.send(b"QUIT\r\n")
        await first.close()
        assert (await second.send(b"NOOP\r\n")) == "250 OK"
        fourth = await Wire.connect(gateway.port)  # a slot is free again
        assert (await fourth.send(b"NOOP\r\n")) == "250 OK"
        await second.close()
        await fourth.close()


async def test_max_connections_counts_the_sessions_of_every_listener_together(
    tmp_path: Path, pki: Pki
) -> None:
    operator = {"listen": ["127.0.0.1:0"], "certificate": str(pki.server.cert), "key": str(pki.server.key)}
    settings = open_submission_settings(tmp_path, pki, {"operator_listener": operator}, max_connections=2)
    store = open_store(settings.store_url)
    intake = Intake(build_policy(settings), store.repository.add_messages, lambda: datetime.now(UTC))
    submission, port25 = smtp_listeners(settings, intake)
    for listener in (submission, port25):
        await listener.start()
    try:
        first = await Wire.connect(submission.ports[0])
        second = await Wire.connect(port25.ports[0])
        for port in (submission.ports[0], port25.ports[0]):  # full, whichever port is tried
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            over = Wire(reader, writer)
            assert (await over.reply()).startswith("421 4.3.2 Too many connections")
            assert await reader.read() == b""
            await over.close()
        await first.send(b"QUIT\r\n")
        await first.close()
        third = await Wire.connect(port25.ports[0])  # the slot freed on one listener serves the other
        assert (await third.send(b"NOOP\r\n")) == "250 OK"

        await submission.stop(1.0)  # a listener's stop waits for its own sessions only
        assert (await second.send(b"NOOP\r\n")) == "250 OK"
        await second.close()
        await third.close()
    finally:
        await port25.stop(1.0)
        store.close()


async def test_an_idle_connection_is_closed_after_the_timeout(tmp_path: Path, pki: Pki) -> None:
    async with running(open_submission_settings(tmp_path, pki, timeout=0.3), "submission") as gateway:
        wire = await Wire.connect(gateway.port)
        assert await wire.reply() == "421 4.4.2 Connection timed out: closing"
        assert await wire.reply() == "<closed>"
        await wire.close()


async def test_a_store_unavailable_mid_session_answers_451_and_keeps_nothing(
    tmp_path: Path, pki: Pki
) -> None:
    settings = open_submission_settings(tmp_path, pki)
    state, moved = settings.gateway.state_dir, tmp_path / "state-away"
    async with running(settings, "submission") as gateway:
        wire = await Wire.connect(gateway.port)
        await wire.send(b"EHLO client.test\r\n")
        await wire.send(f"MAIL FROM:<{APP}>\r\n".encode())
        assert (await wire.send(f"RCPT TO:<{OUTSIDE}>\r\n".encode())).startswith("250")
        assert (await wire.send(b"DATA\r\n")).startswith("354")
        # The database goes away between RCPT and the end of DATA: its folder vanishes, connections drop.
        gateway.store.engine.dispose()
        shutil.move(state, moved)
        answer = await wire.send(message() + b".\r\n")
        assert answer.startswith("451 4.3.0 The message store is unavailable"), answer
        shutil.move(moved, state)
        # Back again: the same session goes on, and the retry is stored exactly once.
        await wire.send(f"MAIL FROM:<{APP}>\r\n".encode())
        await wire.send(f"RCPT TO:<{OUTSIDE}>\r\n".encode())
        await wire.send(b"DATA\r\n")
        assert (await wire.send(message(Message_ID="<again@test>") + b".\r\n")).startswith("250 2.0.0 Queued")
        await wire.close()
        assert len(gateway.messages()) == 1 and len(gateway.deliveries()) == 1


async def test_a_reload_serves_the_new_certificate_to_the_next_connection(tmp_path: Path, pki: Pki) -> None:
    settings = listener_settings(tmp_path, pki, "submission")
    fresh = make_pki(tmp_path / "fresh")
    async with running(settings, "submission") as gateway:

        def issuer(context: ssl.SSLContext):  # type: ignore[no-untyped-def]
            def session(client: smtplib.SMTP) -> object:
                client.starttls(context=context)
                assert client.sock is not None
                return dict(x[0] for x in client.sock.getpeercert()["issuer"])["organizationName"]  # type: ignore[index]

            return session

        before = await smtp(gateway.port, issuer(client_tls(pki)))
        reloaded = listener_settings(
            tmp_path,
            pki,
            "submission",
            submission={"certificate": str(fresh.server.cert), "key": str(fresh.server.key)},
        )
        gateway.listener.prepare_reload(reloaded)()
        after = await smtp(gateway.port, issuer(ssl.create_default_context(cafile=str(fresh.ca))))
        assert (
            before == after == "Hopital Test CA"
        )  # same organisation name, but a new CA: verified only by it
        with pytest.raises(ssl.SSLError):
            await smtp(gateway.port, issuer(client_tls(pki)))


async def test_out_of_order_and_non_ascii_commands_get_enhanced_codes(tmp_path: Path, pki: Pki) -> None:
    async with running(open_submission_settings(tmp_path, pki), "submission") as gateway:
        wire = await Wire.connect(gateway.port)
        assert (await wire.send(f"MAIL FROM:<{APP}>\r\n".encode())).startswith("503 5.5.1 Send EHLO")
        await wire.send(b"EHLO client.test\r\n")
        assert (await wire.send("MAIL FROM:<hélène@x.test>\r\n".encode())).startswith("553 5.6.7")
        assert (await wire.send(f"MAIL FROM:<{APP}> SMTPUTF8\r\n".encode())).startswith("555 5.5.4")
        assert (await wire.send(f"MAIL FROM:<{APP}>\r\n".encode())).startswith("250 2.1.0")
        assert (await wire.send(b"DATA\r\n")).startswith("503 5.5.1 Need RCPT")
        await wire.close()


async def test_data_keeps_aiosmtpds_rules_for_dots_line_length_size_and_pipelining(
    tmp_path: Path, pki: Pki
) -> None:
    limit = 4096
    async with running(
        open_submission_settings(tmp_path, pki, max_message_size=limit), "submission"
    ) as gateway:
        wire = await Wire.connect(gateway.port)
        await wire.send(b"EHLO client.test\r\n")
        envelope = f"MAIL FROM:<{APP}>\r\nRCPT TO:<{OUTSIDE}>\r\nDATA\r\n".encode()

        async def transaction(data: bytes) -> str:
            for _ in range(3):
                assert (await wire.reply() if _ else await wire.send(envelope))[:1] in "23"
            return await wire.send(data)

        good = message(body="..\n.x\nfin\n")
        stuffed = b"." + good.replace(b"\r\n.", b"\r\n..")
        answer = await transaction(stuffed + b".\r\n")
        assert answer.startswith("250"), answer
        assert [raw for _, _, raw in gateway.messages()] == [
            good
        ]  # one dot off each line start, the first too
        head = message().partition(b"\r\n\r\n")[0] + b"\r\n\r\n"
        longest = head + b"a" * 999 + b"\r\n"  # 999 octets and CRLF: the longest line allowed
        assert (await transaction(longest + b".\r\n")).startswith("250")
        too_long = head.replace(b"<t", b"<u") + b"a" * 1000 + b"\r\n"
        assert (await transaction(too_long + b".\r\n")).startswith("500 5.5.2")
        assert (await transaction(message(body="b" * limit) + b".\r\n")).startswith("552")
        # The empty message, and a command sent right behind the dot, read once each.
        assert (await transaction(b".\r\nNOOP\r\n")).startswith("554")
        assert (await wire.reply()).startswith("250")
        await wire.close()
        assert len(gateway.messages()) == 2
