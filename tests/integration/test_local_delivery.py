"""Mail for our mailboxes leaving the store: the drop folder (never a partial file), the internal MTA."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import stat
import threading
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import Envelope

from gateway.outbound.routing import Destination, Router
from gateway.outbound.transports.base import OutboundMessage, OutboundRecipient, Outcome
from gateway.outbound.transports.local import LocalTransport
from gateway.settings import from_mapping
from mappers.documents import Code
from mappers.mime import build_message
from mappers.records import Mailbox, MessageRecord
from mappers.xds import LOINC_OID
from tests.support.fake_operator import FakeOperatorFactory
from tests.support.mail import MAILBOX, PEER_DOMAIN
from tests.unit.mappers import samples
from tests.unit.mappers.test_dsn import POSTFIX_DSN

SENDER = f"dr@{PEER_DOMAIN}"


def with_documents(size: int, queue_id: int) -> OutboundMessage:
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = SENDER, MAILBOX, "Compte rendu"
    mail["Message-ID"] = f"<drop{queue_id}@test>"
    mail.set_content("Bonjour\n")
    mail.add_attachment(os.urandom(size), maintype="application", subtype="pdf", filename="../../cr.pdf")
    mail.add_attachment(b"second", maintype="application", subtype="pdf", filename="cr.pdf")
    content = mail.as_bytes(policy=mail.policy.clone(linesep="\r\n"))
    return OutboundMessage(SENDER, (OutboundRecipient(MAILBOX),), content, queue_id=queue_id)


async def test_a_reader_never_sees_a_partial_drop(tmp_path: Path) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    transport = LocalTransport(Destination("local", path=folder), "mssgw.test", 10)
    messages = {m.queue_id: m for m in (with_documents(3_000_000, n) for n in range(1, 9))}
    seen: dict[str, int] = {}
    problems: list[str] = []
    done = threading.Event()

    def reader() -> None:
        # Reads the folder as business software does, as fast as it can, while the writer works.
        while not done.is_set():
            for entry in os.listdir(folder):
                if not entry.endswith(".eml") or entry.startswith("."):
                    continue
                queue_id = int(entry.split("-", 1)[0])
                if (folder / entry).read_bytes() != messages[queue_id].content:
                    problems.append(f"{entry}: partial or wrong content")
                documents = folder / entry.replace(".eml", ".documents")
                if sorted(os.listdir(documents)) != ["cr-2.pdf", "cr.pdf"]:
                    problems.append(f"{entry}: documents missing")
                seen[entry] = seen.get(entry, 0) + 1

    watcher = threading.Thread(target=reader)
    watcher.start()
    try:
        for message in messages.values():
            results = await transport.send(message)
            assert [r.outcome for r in results] == [Outcome.DELIVERED]
    finally:
        done.set()
        watcher.join()
    assert problems == []
    assert len([e for e in os.listdir(folder) if e.endswith(".eml")]) == len(messages)
    assert not [e for e in os.listdir(folder) if e.startswith(".tmp-")]
    assert seen, "the reader never looked while files were there"


async def test_a_retry_rewrites_the_same_drop_instead_of_adding_one(tmp_path: Path) -> None:
    transport = LocalTransport(Destination("local", path=tmp_path), "mssgw.test", 10)
    message = with_documents(10, 42)
    await transport.send(message)
    await transport.send(message)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 2 and names[0].endswith(".documents") and names[1].endswith(".eml")
    assert names[0].removesuffix(".documents") == names[1].removesuffix(".eml")


async def test_mail_for_a_mailbox_is_forwarded_to_the_internal_mta(
    fake_operator: FakeOperatorFactory,
) -> None:
    mta = fake_operator(cert=None, client_ca=None, require_starttls=False, require_client_cert=False)
    transport = LocalTransport(Destination("local", "127.0.0.1", mta.port), "mssgw.test", 10)
    results = await transport.send(with_documents(10, 1))
    assert [r.outcome for r in results] == [Outcome.DELIVERED]
    received = await mta.wait_for_messages_async(1)
    assert received[0].rcpt_tos == (MAILBOX,)


async def test_a_refusing_internal_mta_fails_the_delivery_with_its_reply(
    fake_operator: FakeOperatorFactory,
) -> None:
    mta = fake_operator(cert=None, client_ca=None, require_starttls=False, require_client_cert=False)
    mta.script(("RCPT", 550, "5.1.1 unknown user", MAILBOX))
    results = await LocalTransport(Destination("local", "127.0.0.1", mta.port), "mssgw.test", 10).send(
        with_documents(10, 1)
    )
    assert (results[0].outcome, results[0].code) == (Outcome.PERMANENT, 550)


def test_our_mailboxes_are_routed_before_any_route(tmp_path: Path) -> None:
    settings = from_mapping(
        {
            "gateway": {"mode": "operator"},
            "routes": [{"domain": "*", "transport": "folder", "path": str(tmp_path / "all")}],
            "inbound": {
                "mailboxes": [
                    {"address": MAILBOX, "drop_folder": str(tmp_path / "box"), "forward_host": "mta.local"},
                    {"address": f"archive@{PEER_DOMAIN}"},
                ]
            },
        }
    )
    router = Router(settings)
    assert router.destination(MAILBOX.upper()) == Destination(
        "local", "mta.local", 25, path=tmp_path / "box", lmtp=False
    )
    assert router.destination(f"archive@{PEER_DOMAIN}").kind == "folder"


async def test_mail_for_a_mailbox_is_forwarded_over_lmtp() -> None:
    received: list[tuple[str, list[str]]] = []

    class Store:
        async def handle_DATA(self, server: LMTP, session: object, envelope: Envelope) -> str:
            received.append((envelope.mail_from or "", list(envelope.rcpt_tos)))
            return "250 2.0.0 delivered to the mailbox"

    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: LMTP(Store(), hostname="mailstore.test"), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        destination = Destination("local", "127.0.0.1", port, lmtp=True)
        two = dataclasses.replace(
            with_documents(10, 1),
            recipients=(OutboundRecipient(MAILBOX), OutboundRecipient(f"b@{PEER_DOMAIN}")),
        )
        results = await LocalTransport(destination, "mssgw.test", 10).send(two)
    finally:
        server.close()
        await server.wait_closed()
    assert [r.outcome for r in results] == [Outcome.DELIVERED, Outcome.DELIVERED]
    assert received == [(SENDER, [MAILBOX]), (SENDER, [f"b@{PEER_DOMAIN}"])]


def received(content: bytes, queue_id: int = 7) -> OutboundMessage:
    return OutboundMessage(SENDER, (OutboundRecipient(MAILBOX),), content, queue_id=queue_id)


async def dropped(folder: Path, message: OutboundMessage) -> dict[str, bytes]:
    """The ``.documents/`` files the local transport wrote for ``message``, by name."""
    results = await LocalTransport(Destination("local", path=folder), "mssgw.test", 10).send(message)
    assert [r.outcome for r in results] == [Outcome.DELIVERED]
    [documents] = folder.glob("*.documents")
    return {p.name: p.read_bytes() for p in sorted(documents.iterdir())}


async def test_a_received_package_is_dropped_as_metadata_cda_and_decoded_pdf(tmp_path: Path) -> None:
    letter = samples.cda_document(type_code=Code("11490-0", "Lettre de liaison", LOINC_OID))
    record = MessageRecord(
        Mailbox(SENDER), (Mailbox(MAILBOX),), "Lettre", patient=samples.patient(), documents=(letter,)
    )
    content = bytes(build_message(record, nil_reference="DEV935997", hostname="gw.test", now=samples.NOW))
    files = await dropped(tmp_path, received(content))
    assert sorted(files) == [
        "DOC0001-lettre-de-liaison.cda.xml",
        "DOC0001-lettre-de-liaison.pdf",
        "METADATA.XML",
    ]
    assert files["DOC0001-lettre-de-liaison.pdf"] == samples.PDF
    assert files["DOC0001-lettre-de-liaison.cda.xml"] == letter.content
    assert b"ExtrinsicObject" in files["METADATA.XML"] and b"DOC0001.XML" in files["METADATA.XML"]


async def test_a_received_dsn_is_dropped_with_its_per_recipient_block(tmp_path: Path) -> None:
    files = await dropped(tmp_path, received(POSTFIX_DSN))
    status = files["delivery-status-1.txt"].decode()
    assert "Reporting-MTA: dns; mx.x.mssante.fr" in status
    assert "Final-Recipient: RFC822; dr.b@x.mssante.fr" in status and "Status: 5.2.2" in status


async def dropped_in_setgid_folder(tmp_path: Path, umask: int) -> Path:
    """Drop a message with documents into a folder prepared as the README says (``chmod 2750``) under
    ``umask``; its ``.documents/`` folder."""
    folder = tmp_path / "drop"
    folder.mkdir()
    folder.chmod(0o2750)
    previous = os.umask(umask)
    try:
        await dropped(folder, with_documents(10, 3))
    finally:
        os.umask(previous)
    [documents] = folder.glob("*.documents")
    return documents


async def test_a_setgid_drop_folder_passes_its_group_on_whatever_the_umask(tmp_path: Path) -> None:
    # A restrictive umask must not hide the files from the business software's group either.
    documents = await dropped_in_setgid_folder(tmp_path, 0o077)
    assert stat.S_IMODE(documents.stat().st_mode) == 0o2750
    files = [*documents.parent.glob("*.eml"), *documents.iterdir()]
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o640}


async def test_a_setgid_drop_folder_works_under_the_units_restrict_suid_sgid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """systemd's RestrictSUIDSGID=yes makes a chmod that sets the setgid bit fail with EPERM: under the
    unit's UMask=0027 the folders must come out right without one."""
    real_chmod = os.chmod

    def restricted_chmod(path: object, mode: int, *args: object, **kwargs: object) -> None:
        if mode & (stat.S_ISUID | stat.S_ISGID) and Path(str(path)).name != "drop":
            raise PermissionError(1, "Operation not permitted (RestrictSUIDSGID)")
        real_chmod(path, mode, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "chmod", restricted_chmod)  # the drop folder itself is the sysadmin's chmod
    documents = await dropped_in_setgid_folder(tmp_path, 0o027)  # systemd/mssgw.service: UMask=0027
    assert stat.S_IMODE(documents.stat().st_mode) == 0o2750
