"""Interop with Debian's OpenDKIM, a DKIM verifier we did not write: every message the relay signs must pass
``opendkim -t`` as the fake operator (or the hospital's internal MTA) received it.

``mssgw run`` as a subprocess; mail comes in through the submission listener (read by our own DATA
reader, dot-unstuffed), through ``mssgw send``, and through the operator listener to a mailbox forwarded
inside; the relay signs (rsa-sha256 and ed25519-sha256) and delivers. The messages are the ones a DATA
reader or a line-end normalisation gets wrong: lines of dots, lines of 998 octets, 8-bit UTF-8, trailing
white space and folded headers, an IHE_XDM.zip package, a body written with LF line ends. Skips only if
opendkim is not installed (.ci/run installs it).
"""

from __future__ import annotations

import email
import email.policy
import re
import smtplib
import ssl
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.support import cda_header
from tests.support.dkim import DkimKey, KeyKind, make_dkim_key
from tests.support.fake_operator import FakeOperatorFactory, ReceivedMessage
from tests.support.gateway import SENDER, Gateway, gateway_for, patient_file
from tests.support.mail import MAILBOX, OUR_DOMAIN, message
from tests.support.opendkim import BINARY, opendkim_verify
from tests.support.pki import Pki
from tests.support.submission import add_submission, submission_client

pytestmark = pytest.mark.skipif(
    BINARY is None, reason="OpenDKIM is not installed (apt-get install opendkim opendkim-tools)"
)

RECIPIENT = "dr.martin@cabinet.test.mssante.fr"
PEER = "dr.durand@clinique.test.mssante.fr"
_OPERATOR_LISTENING = re.compile(r"event=listening listener=operator address=127\.0\.0\.1:(\d+)")


def raw_message(subject: str, body: list[bytes], *headers: bytes) -> bytes:
    """A CRLF message written octet by octet (no library to tidy up what is being tested)."""
    head = [
        f"From: {SENDER}".encode(),
        f"To: {RECIPIENT}".encode(),
        f"Subject: {subject}".encode(),
        b"Date: Mon, 23 Nov 2026 09:00:00 +0000",
        f"Message-ID: <{subject}@hopital.test.mssante.fr>".encode(),
        b"MIME-Version: 1.0",
        *headers,
    ]
    return b"\r\n".join([*head, b"", *body]) + b"\r\n"


def _long(length: int, start: bytes = b"") -> bytes:
    return start + b"x" * (length - len(start))


DOTS = [b".", b"..", b".foo", b"...", b". ", b"a line", b".", b"end"]
LONG = [_long(998), _long(997), _long(996), _long(998, b"."), _long(998, b"..")]
UTF8 = "Résumé : fièvre à 39 °C, œdème, «\u00a0suivi\u00a0» — 患者 ✓".encode()

SUBMITTED: dict[str, tuple[bytes, list[str]]] = {
    "dots": (raw_message("dots", DOTS, b"Content-Type: text/plain; charset=us-ascii"), []),
    "long-lines": (
        raw_message(
            "long-lines", LONG, b"Content-Type: text/plain; charset=us-ascii", _long(998, b"X-Long: ")
        ),
        [],
    ),
    "8bit": (
        raw_message(
            "8bit",
            [UTF8, b"", b".\xc3\xa9t\xc3\xa9", _long(998, UTF8 * 14)],
            b"Content-Type: text/plain; charset=utf-8",
            b"Content-Transfer-Encoding: 8bit",
        ),
        ["BODY=8BITMIME"],
    ),
    "white-space": (
        raw_message(
            "white-space",
            [b"trailing spaces   ", b"\ttab first\t", b"", b"  ", b"in  between\t \tspaces", b"", b"", b""],
            b"Content-Type: text/plain;\r\n\tcharset=us-ascii",
            b"X-Folded: one\r\n  two\r\n\tthree   ",
        ),
        [],
    ),
}


@pytest.fixture(params=["rsa", "ed25519"])
def dkim_key(request: pytest.FixtureRequest, tmp_path: Path) -> DkimKey:
    kind: KeyKind = request.param
    return make_dkim_key(tmp_path / "dkim", kind)


def xdm_package(tmp_path: Path) -> Path:
    """An IHE_XDM.zip built by ``mssgw xdm build`` from a PDF, for the patient of ``patient_file``."""
    pdf = tmp_path / "cr.pdf"
    pdf.write_bytes(b"%PDF-1.4\n% compte rendu\n%%EOF\n")
    package = tmp_path / "IHE_XDM.zip"
    subprocess.run(
        [sys.executable, "-m", "gateway", "xdm", "build", "--doc", str(pdf),
         "--patient", patient_file(tmp_path), "--type-code", "11490-0",
         "--type-label", "Lettre de liaison", *cda_header.OPTIONS, "-o", str(package)],
        capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    return package


def xdm_message(package: Path) -> bytes:
    mail = EmailMessage()
    mail["From"] = SENDER
    mail["To"] = RECIPIENT
    mail["Subject"] = "xdm"
    mail["Message-ID"] = "<xdm@hopital.test.mssante.fr>"
    mail.set_content("Veuillez trouver le compte rendu.\n.\n")
    mail.add_attachment(package.read_bytes(), "application", "zip", filename="IHE_XDM.zip")
    return mail.as_bytes(policy=email.policy.SMTP)


def subject(received: ReceivedMessage) -> str:
    return str(received.message["Subject"])


def body(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[1]


def assert_opendkim_passes(key: DkimKey, received: list[ReceivedMessage], tmp_path: Path) -> None:
    failures = []
    for number, delivered in enumerate(received):
        verdict = opendkim_verify(key, delivered.content, tmp_path / "opendkim" / str(number))
        if not verdict.passed(key):
            failures.append(f"{subject(delivered)}: {verdict}")
    assert not failures, "\n".join(failures)


def test_what_the_relay_signs_passes_opendkim(
    tmp_path: Path,
    pki: Pki,
    fake_operator: FakeOperatorFactory,
    dkim_key: DkimKey,
    gateways: list[Gateway],
) -> None:
    operator = fake_operator()
    gateway = gateway_for(tmp_path / "gw", pki, operator, dkim_key=dkim_key)
    add_submission(gateway, pki, tmp_path)
    gateways.append(gateway)
    gateway.start()
    package = xdm_package(tmp_path)
    submitted = {**SUBMITTED, "xdm": (xdm_message(package), [])}
    with submission_client(gateway, pki) as client:
        for raw, options in submitted.values():
            assert client.sendmail(SENDER, [RECIPIENT], raw, mail_options=options) == {}
    # mssgw send: a body file with LF line ends, and the IHE_XDM.zip send builds from --doc itself.
    body_file = tmp_path / "body.txt"
    body_file.write_text("Bonjour,\n.\n..\nvoilà le CR.  \n\n", encoding="utf-8")
    pdf = tmp_path / "cr.pdf"  # the one xdm_package wrote
    gateway.send(
        "--from", SENDER, "--to", RECIPIENT, "--subject", "cli", "--body-file", str(body_file),
        "--patient", patient_file(tmp_path), "--doc", str(pdf),
        "--type-code", "11490-0", "--type-label", "Lettre de liaison", *cda_header.OPTIONS,
    )  # fmt: skip

    received = operator.wait_for_messages(len(submitted) + 1, timeout=30)
    assert gateway.stop() == 0
    assert_opendkim_passes(dkim_key, received, tmp_path)
    # Nothing lost on the way: the operator has the lines as they were written.
    by_subject = {subject(r): r.content for r in received}
    for name in SUBMITTED:
        assert body(by_subject[name]) == body(SUBMITTED[name][0]), name
    (cli_raw,) = (content for name, content in by_subject.items() if name not in submitted)
    cli = email.message_from_bytes(cli_raw, policy=email.policy.default)
    assert "IHE_XDM.zip" in [p.get_filename() for p in cli.iter_attachments()]
    xdm = email.message_from_bytes(by_subject["xdm"], policy=email.policy.default)
    (attachment,) = xdm.iter_attachments()
    assert attachment.get_content() == package.read_bytes()


def test_mail_from_the_operator_listener_forwarded_inside_passes_opendkim(
    tmp_path: Path, pki: Pki, fake_operator: FakeOperatorFactory, gateways: list[Gateway]
) -> None:
    dkim_key = make_dkim_key(tmp_path / "dkim", domain=OUR_DOMAIN)
    internal = fake_operator(cert=None, require_starttls=False, require_client_cert=False)
    gateway = gateway_for(tmp_path / "gw", pki, None, dkim_key=dkim_key)
    gateway.sections["gateway"]["mode"] = "operator"
    del gateway.sections["smarthost"]
    trust_list = tmp_path / "trusted.txt"
    trust_list.write_text(f"{PEER.partition('@')[2]}\n", encoding="utf-8")
    gateway.sections["inbound"] = {"domains": [OUR_DOMAIN], "trust_list_file": str(trust_list)}
    gateway.sections["operator_listener"] = {
        "listen": ["127.0.0.1:0"],
        "certificate": str(pki.server.cert),
        "key": str(pki.server.key),
    }
    gateway.write()
    with gateway.config.open("a", encoding="utf-8") as config:
        config.write(
            f'\n[[inbound.mailboxes]]\naddress = "{MAILBOX}"\nforward_host = "127.0.0.1"\n'
            f"forward_port = {internal.port}\n"
        )
    gateways.append(gateway)
    gateway.start()
    found = _OPERATOR_LISTENING.search(gateway.wait_for_output("listener=operator"))
    assert found, gateway.output()
    context = ssl.create_default_context(cafile=str(pki.ca))
    context.load_cert_chain(str(pki.client.cert), str(pki.client.key))
    sent = [
        message(sender=PEER, to=MAILBOX, subject="dots", body="\n".join(s.decode() for s in DOTS) + "\n"),
        raw_message("long-lines", LONG).replace(SENDER.encode(), PEER.encode()),
    ]
    with smtplib.SMTP("127.0.0.1", int(found.group(1)), timeout=10) as client:
        client.starttls(context=context)
        for raw in sent:
            assert client.sendmail(PEER, [MAILBOX], raw) == {}

    received = internal.wait_for_messages(len(sent), timeout=30)
    assert gateway.stop() == 0
    assert_opendkim_passes(dkim_key, received, tmp_path)
    assert {body(r.content) for r in received} == {body(raw) for raw in sent}


def test_opendkim_fails_a_message_changed_after_signing(tmp_path: Path) -> None:
    """The check above cannot pass by misreading OpenDKIM: a reference signature passes, one octet changed
    in the body fails."""
    key = make_dkim_key(tmp_path / "dkim")
    signed = key.sign(raw_message("reference", DOTS))
    assert opendkim_verify(key, signed, tmp_path / "good").passed(key)
    changed = opendkim_verify(key, signed.replace(b"a line", b"a lime"), tmp_path / "changed")
    assert changed.returncode == 0 and not changed.passed(key)
    assert changed.results == [("fail", key.domain, key.selector)], changed
