"""Operator mode end to end: ``mssgw run`` listens on its port-25 listener; a trusted peer operator (smtplib
with its client certificate) delivers to one of our mailboxes, and the relay drops it into the mailbox's
folder as files business software imports. A SIGHUP re-reads the trust list without dropping the listener.
"""

from __future__ import annotations

import re
import signal
import smtplib
import ssl
import stat
import time
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

from tests.support.gateway import Gateway, gateway_for
from tests.support.mail import MAILBOX, OUR_DOMAIN, message
from tests.support.pki import Pki

PEER = "dr.durand@clinique.test.mssante.fr"
_LISTENING = re.compile(r"event=listening listener=operator address=127\.0\.0\.1:(\d+)")


def operator_gateway(tmp_path: Path, pki: Pki, trusted: str) -> Gateway:
    gateway = gateway_for(tmp_path / "gw", pki, None)
    gateway.sections["gateway"]["mode"] = "operator"
    del gateway.sections["smarthost"]
    gateway.sections["inbound"] = {"domains": [OUR_DOMAIN], "trust_list_file": str(tmp_path / "trusted.txt")}
    gateway.sections["operator_listener"] = {
        "listen": ["127.0.0.1:0"],
        "certificate": str(pki.server.cert),
        "key": str(pki.server.key),
    }
    (tmp_path / "trusted.txt").write_text(f"# test trust list\n{trusted}\n", encoding="utf-8")
    gateway.write()
    with gateway.config.open("a", encoding="utf-8") as config:
        config.write(f'\n[[inbound.mailboxes]]\naddress = "{MAILBOX}"\ndrop_folder = "{tmp_path / "drop"}"\n')
    return gateway


def deliver(gateway: Gateway, pki: Pki, raw: bytes) -> str:
    found = _LISTENING.search(gateway.output())
    assert found, gateway.output()
    context = ssl.create_default_context(cafile=str(pki.ca))
    context.load_cert_chain(str(pki.client.cert), str(pki.client.key))
    with smtplib.SMTP("127.0.0.1", int(found.group(1)), timeout=10) as client:
        client.starttls(context=context)
        client.ehlo()
        code, text = client.mail(PEER)
        if code != 250:
            return f"{code} {text.decode()}"
        client.rcpt(MAILBOX)
        code, text = client.data(raw)
        return f"{code} {text.decode()}"


def wait_for_files(folder: Path, pattern: str, count: int) -> list[Path]:
    deadline = time.monotonic() + 30
    # The relay writes the folder after its own commit; a folder has no event a test could wait on.
    while len(found := sorted(folder.glob(pattern))) < count:
        assert time.monotonic() < deadline, f"{count} {pattern} files expected in {folder}"
        time.sleep(0.05)
    return found


def test_a_trusted_operator_delivers_into_our_mailbox_drop_folder(
    tmp_path: Path, pki: Pki, gateways: list[Gateway]
) -> None:
    gateway = operator_gateway(tmp_path, pki, "clinique.test.mssante.fr")
    gateways.append(gateway)
    gateway.start()
    raw = message(sender=PEER, to=MAILBOX, body="Compte rendu\n")
    assert deliver(gateway, pki, raw).startswith("250 2.0.0 Queued as")
    dropped = wait_for_files(tmp_path / "drop", "*.eml", 1)
    assert gateway.stop() == 0
    content = dropped[0].read_bytes()
    assert content.startswith(b"Authentication-Results: mssgw.hopital.test.mssante.fr; dkim=none\r\n")
    assert content.endswith(raw.split(b"\r\n\r\n", 1)[1])


def test_under_umask_000_the_store_is_private_and_the_drop_group_readable(
    tmp_path: Path, pki: Pki, gateways: list[Gateway]
) -> None:
    gateway = operator_gateway(tmp_path, pki, "clinique.test.mssante.fr")
    gateways.append(gateway)
    gateway.start(umask=0)
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = PEER, MAILBOX, "Compte rendu"
    mail.set_content("Bonjour\n")
    mail.add_attachment(b"%PDF-1.4\n%%EOF\n", maintype="application", subtype="pdf", filename="cr.pdf")
    assert deliver(gateway, pki, mail.as_bytes(policy=SMTP)).startswith("250 2.0.0 Queued as")
    [dropped] = wait_for_files(tmp_path / "drop", "*.eml", 1)
    assert gateway.stop() == 0
    documents = dropped.with_suffix(".documents")
    modes = {path: stat.S_IMODE(path.stat().st_mode) for path in (dropped, documents, *documents.iterdir())}
    assert modes == {dropped: 0o640, documents: 0o750, documents / "cr.pdf": 0o640}
    assert stat.S_IMODE((tmp_path / "drop").stat().st_mode) == 0o750
    assert stat.S_IMODE(gateway.state_dir.stat().st_mode) == 0o700
    store_files = list(gateway.state_dir.glob("mssgw.db*"))
    assert store_files and {stat.S_IMODE(p.stat().st_mode) for p in store_files} == {0o600}


def test_sighup_rereads_the_trust_list(tmp_path: Path, pki: Pki, gateways: list[Gateway]) -> None:
    gateway = operator_gateway(tmp_path, pki, "other.test")
    gateways.append(gateway)
    process = gateway.start()
    raw = message(sender=PEER, to=MAILBOX)
    assert deliver(gateway, pki, raw).startswith("550 5.7.1 Sender domain clinique.test.mssante.fr")
    (tmp_path / "trusted.txt").write_text("clinique.test.mssante.fr\n", encoding="utf-8")
    process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while "event=reloaded" not in gateway.output():
        assert time.monotonic() < deadline, gateway.output()
        time.sleep(0.05)
    assert deliver(gateway, pki, raw).startswith("250 2.0.0 Queued as")
    assert gateway.stop() == 0
