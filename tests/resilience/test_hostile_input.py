"""Hostile input on the submission listener: every case gets its exact refusal, nothing of it is queued,
and the same session then queues a good message (refusing never loses what was, or will be, accepted).
Once in process, case by case; then all of them against one ``mssgw run``, which keeps every good message
and stops with exit 0.

Raw bytes on a real socket (``smtp_wire.Wire``), since smtplib would fix most of them before sending.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.gateway import Gateway, gateway_for, submission_port, submission_section
from tests.support.listener import open_submission_settings, running
from tests.support.mail import APP, OUR_DOMAIN, OUTSIDE, message
from tests.support.pki import Pki
from tests.support.smtp_wire import Wire

OTHER = f"director@{OUR_DOMAIN}"
LOCAL, _, DOMAIN = APP.partition("@")


def transaction(data: bytes) -> list[bytes]:
    """The commands of one transaction carrying ``data`` (CRLF message bytes)."""
    return [
        f"MAIL FROM:<{APP}>\r\n".encode(),
        f"RCPT TO:<{OUTSIDE}>\r\n".encode(),
        b"DATA\r\n",
        data + b".\r\n",
    ]


def with_fields(*fields: str) -> bytes:
    """The test message with ``fields`` added on top of its header."""
    return "".join(f"{f}\r\n" for f in fields).encode() + message()


HOSTILE = [
    pytest.param([f"MAIL FROM:<{LOCAL}\r@{DOMAIN}>\r\n".encode()], "553 5.1.7", id="sender-CR"),
    pytest.param([f"MAIL FROM:<{LOCAL}\0@{DOMAIN}>\r\n".encode()], "553 5.1.7", id="sender-NUL"),
    pytest.param([f'MAIL FROM:<"{OUTSIDE}"@{DOMAIN}>\r\n'.encode()], "553 5.1.7", id="sender-quoted-at"),
    pytest.param(
        [f"MAIL FROM:<victim%outside.test@{DOMAIN}>\r\n".encode()], "553 5.1.7", id="sender-percent"
    ),
    pytest.param([f"MAIL FROM:<@relay.test:{APP}>\r\n".encode()], "553 5.1.7", id="sender-source-route"),
    pytest.param(
        [f"MAIL FROM:<{APP}>\r\n".encode(), f"RCPT TO:<@relay.test:{OUTSIDE}>\r\n".encode()],
        "553 5.1.3",
        id="recipient-source-route",
    ),
    pytest.param([f"MAIL FROM:<{APP}>\n".encode()], "500 5.5.2", id="command-bare-LF"),
    pytest.param(
        [f"MAIL FROM:<{APP}>\r\n".encode(), f"RCPT TO:<{OUTSIDE}>\n".encode()], "500 5.5.2", id="rcpt-bare-LF"
    ),
    pytest.param(transaction(message().replace(b"Hello", b"Hel\0lo")), "554 5.6.0 NUL", id="data-NUL"),
    pytest.param(
        transaction(with_fields(*(f"X-Filler: {n}" for n in range(1001)))),
        "554 5.6.0 The message cannot be read safely: message has 1009 header fields; the limit is 1000",
        id="too-many-header-fields",
    ),
    pytest.param(
        transaction(with_fields(f"From: {APP}")),
        "554 5.6.0 The message has 2 From fields: RFC 5322 allows one",
        id="two-from-fields",
    ),
    pytest.param(
        transaction(message().replace(f"From: {APP}".encode(), f"From: {APP}, {OTHER}".encode())),
        f"553 5.7.1 From address <{OTHER}> is not assigned to lab",
        id="second-from-address",
    ),
    pytest.param(
        transaction(with_fields(f"Sender: {OTHER}")),
        f"553 5.7.1 Sender address <{OTHER}> in the header is not assigned to lab",
        id="sender-field",
    ),
]


@pytest.mark.parametrize(("commands", "refusal"), HOSTILE)
async def test_hostile_input_is_refused_and_the_session_still_queues_good_mail(
    tmp_path: Path, pki: Pki, commands: list[bytes], refusal: str
) -> None:
    async with running(open_submission_settings(tmp_path, pki), "submission") as gateway:
        wire = await Wire.connect(gateway.port)
        assert (await wire.send(b"EHLO client.test\r\n")).startswith("250")
        *steps, last = commands
        for step in steps:
            assert (await wire.send(step))[:1] in "23", step
        assert (await wire.send(last)).startswith(refusal)
        assert gateway.messages() == []
        assert (await wire.send(b"RSET\r\n")).startswith("250")
        good = message(subject="after the hostile input")
        replies = [await wire.send(step) for step in transaction(good)]
        assert replies[-1].startswith("250 2.0.0 Queued as"), replies
        await wire.close()
        assert [raw for _, _, raw in gateway.messages()] == [good]
        assert len(gateway.deliveries()) == 1


async def test_a_daemon_fed_every_hostile_case_keeps_each_good_message_and_stops_cleanly(
    tmp_path: Path, pki: Pki, gateways: list[Gateway]
) -> None:
    # No operator: what is accepted stays queued, where it can be counted.
    gateway = gateway_for(tmp_path / "gw", pki, None)
    client = {"name": "lab", "senders": [APP], "networks": ["127.0.0.1/32"]}
    gateway.sections["submission"] = submission_section(pki, [client], require_starttls=False)
    gateway.sections["inbound"] = {"domains": [OUR_DOMAIN]}
    gateway.write()
    gateway.start()
    gateways.append(gateway)
    wire = await Wire.connect(submission_port(gateway))
    await wire.send(b"EHLO client.test\r\n")
    for case in HOSTILE:
        *steps, last = case.values[0]
        for step in steps:
            await wire.send(step)
        assert (await wire.send(last)).startswith(case.values[1]), case.id
        assert (await wire.send(b"RSET\r\n")).startswith("250")
        replies = [await wire.send(step) for step in transaction(message(subject=case.id))]
        assert replies[-1].startswith("250 2.0.0 Queued as"), (case.id, replies)
    await wire.close()
    queued = gateway.json("queue", "list", "--all")
    assert len(queued) == len(HOSTILE)
    assert gateway.stop() == 0
    assert "Traceback" not in gateway.output()
