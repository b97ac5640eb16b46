"""Interop with a real Postfix in front of the submission listener: the hospital's MTA relays a message to
the gateway (STARTTLS, the client known by its network), the operator refuses the recipient, and the
gateway's bounce comes back through that same Postfix to the original sender's mailbox (a test sink that
Postfix's transport map names for the hospital's domain).
"""

from __future__ import annotations

import os
import re
import smtplib
from pathlib import Path

import pytest

from tests.support.fake_operator import FakeOperatorFactory
from tests.support.gateway import SENDER, gateway_for, submission_port, submission_section
from tests.support.mail import message
from tests.support.pki import Pki
from tests.support.postfix import BINARY, free_port, postfix_instance

pytestmark = [
    pytest.mark.skipif(BINARY is None, reason="Postfix is not installed (apt-get install postfix)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="a private Postfix master needs root"),
]

DOMAIN = "hopital.test.mssante.fr"
RECIPIENT = "dr.martin@cabinet.test.mssante.fr"


def test_a_bounce_comes_back_to_the_sender_through_postfix(
    tmp_path: Path, pki: Pki, fake_operator: FakeOperatorFactory
) -> None:
    operator = fake_operator()
    operator.script(("RCPT", 550, "5.1.1 no such user here", RECIPIENT))
    mailbox = fake_operator(cert=None, require_starttls=False, require_client_cert=False)
    postfix_port = free_port()
    gateway = gateway_for(tmp_path / "gw", pki, operator)
    client = {
        "name": "postfix",
        "senders": [f"@{DOMAIN}"],
        "networks": ["127.0.0.1/32"],
        "return_host": "127.0.0.1",
        "return_port": postfix_port,
    }
    gateway.sections["submission"] = submission_section(pki, [client])
    gateway.sections["inbound"] = {"domains": [DOMAIN]}
    gateway.write()
    gateway.start()
    try:
        listening = submission_port(gateway)
        with postfix_instance(
            port=postfix_port,
            domain=DOMAIN,
            relayhost_port=listening,
            sink_port=mailbox.port,
        ) as postfix:
            with smtplib.SMTP("127.0.0.1", postfix.port, timeout=10) as client:
                assert client.sendmail(SENDER, [RECIPIENT], message(sender=SENDER, to=RECIPIENT)) == {}
            try:
                bounced = mailbox.wait_for_messages(1, timeout=60)[0]
            except AssertionError as error:
                raise AssertionError(f"{error}\n{postfix.log()}\n{gateway.output()}") from error
            log = postfix.wait_for_log("status=sent", 2)
        assert gateway.stop() == 0
    finally:
        gateway.cleanup()
    relayed = operator.refusals[0]
    assert relayed.address == RECIPIENT and relayed.mail_from == SENDER
    assert bounced.mail_from == "<>" and bounced.rcpt_tos == (SENDER,)
    content = bounced.content.decode("utf-8", "replace")
    assert "Status: 5.1.1" in content and "no such user here" in content
    # It went through Postfix (its Received line) after the gateway wrote it.
    assert re.search(r"Received: from .*\n?.*by postfix\.hopital\.test\.mssante\.fr", content), content
    assert f"Reporting-MTA: dns; {gateway.sections['gateway']['hostname']}" in content
    # Postfix → gateway over TLS (the submission listener demands it).
    assert f"TLS connection established to 127.0.0.1[127.0.0.1]:{listening}" in log, log
