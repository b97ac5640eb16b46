"""The IMAP and HL7 doors while the store is away (a private PostgreSQL cluster stopped under ``mssgw run``):
the outage is logged once, the daemon stays up, and once the store is back the mail is taken exactly once —
the IMAP message left on the server until committed, the HL7 producer told ``AE`` (temporary) and then ``AA``.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from gateway.store.db import open_store
from tests.resilience.test_postgresql_outage import wait_for
from tests.support.dovecot import BINARY, Dovecot
from tests.support.fake_operator import FakeOperatorFactory
from tests.support.gateway import Gateway, gateway_for
from tests.support.hl7 import message, patient_cda
from tests.support.imap_bridge import PASSWORD, USER, imap_message, secret_file
from tests.support.mail import MAILBOX, OUR_DOMAIN
from tests.support.mllp import send
from tests.support.pg_cluster import PgCluster
from tests.support.pki import Pki
from tests.system.test_hl7_mllp import hl7_port, hl7_section
from tests.system.test_imap_dovecot import counts

OUTAGE = 3.0
"""Long enough for several backoff rounds (0.1 s doubling): a log line per retry would show."""

PROCESSED = "Done"


def lines(gateway: Gateway, event: str) -> int:
    """How many log lines of ``event`` the daemon wrote."""
    return len(re.findall(rf"event={event}(?:\s|$)", gateway.output(), re.MULTILINE))


def episode_lines(gateway: Gateway) -> dict[str, int]:
    return {event: lines(gateway, event) for event in ("store-unavailable", "store-back")}


@pytest.mark.peer
@pytest.mark.skipif(BINARY is None, reason="dovecot is not installed (apt-get install dovecot-imapd)")
def test_imap_mail_arriving_during_an_outage_stays_on_the_server_and_is_imported_once_after(
    tmp_path: Path, pki: Pki, pg_cluster: PgCluster, gateways: list[Gateway]
) -> None:
    dovecot = Dovecot(tmp_path / "dovecot", pki, {USER: PASSWORD}).start()
    try:
        gateway = gateway_for(tmp_path / "gw", pki, None, store_url=pg_cluster.url)
        gateway.sections["inbound"] = {"domains": [OUR_DOMAIN], "mailboxes": [{"address": MAILBOX}]}
        account = {
            "name": "secretariat",
            "host": "127.0.0.1",
            "port": dovecot.port,
            "security": "starttls",
            "address": MAILBOX,
            "username": USER,
            "password_file": str(secret_file(tmp_path / "imap.password", PASSWORD)),
            "after_import": "move",
            "processed_folder": PROCESSED,
        }
        gateway.sections["imap"] = {"backoff_initial": "100ms", "backoff_max": "1s", "accounts": [account]}
        gateway.write()
        gateways.append(gateway)
        gateway.start()
        gateway.wait_for_output("event=imap-first-sync")
        pg_cluster.stop()
        with dovecot.mailbox(USER) as mailbox:
            mailbox.append(imap_message(1))
            wait_for(lambda: "event=store-unavailable" in gateway.output(), 30, "the outage seen", gateway)
            time.sleep(OUTAGE)
            assert gateway.process is not None and gateway.process.poll() is None, gateway.output()
            assert mailbox.count() == 1, "a message not committed left the inbox"
            pg_cluster.start()
            wait_for(lambda: "event=imap-imported" in gateway.output(), 60, "the import", gateway)
            wait_for(lambda: mailbox.count() == 0, 30, "the inbox emptied", gateway)
            assert mailbox.count("Done") == 1
        assert gateway.stop() == 0
        output = gateway.output()
        assert episode_lines(gateway) == {"store-unavailable": 1, "store-back": 1}, output[-4000:]
        assert "event=imap-error" not in output, output[-4000:]
        assert lines(gateway, "store-failed") <= 1, output[-4000:]  # none if another call saw it first
        assert "Traceback" not in output, output[-4000:]
        store = open_store(pg_cluster.url)
        try:
            assert counts(store) == (1, 1)
        finally:
            store.close()
    finally:
        dovecot.stop()


def test_hl7_while_the_store_is_away_is_refused_ae_temporary_then_taken_once_aa(
    tmp_path: Path,
    pki: Pki,
    fake_operator: FakeOperatorFactory,
    pg_cluster: PgCluster,
    gateways: list[Gateway],
) -> None:
    operator = fake_operator()
    gateway = gateway_for(tmp_path / "gw", pki, operator, store_url=pg_cluster.url)
    # The test messages carry the ANS test INS (OID …4.10): mail to its patient address needs test mode.
    gateway.sections["gateway"]["test_mode"] = True
    gateway.sections["hl7"] = hl7_section()
    gateway.write()
    gateways.append(gateway)
    gateway.start()
    port = hl7_port(gateway)
    er7 = message(cdas=(patient_cda(),))
    pg_cluster.stop()
    refused = send(port, er7)
    assert refused.code == "AE", (refused, gateway.output()[-4000:])
    assert refused.text.startswith("temporary: nothing was kept"), refused
    assert "The message store is unavailable" in refused.text, refused
    assert gateway.process is not None and gateway.process.poll() is None, gateway.output()
    pg_cluster.start()
    assert gateway.json("queue", "list") == [], "a message refused AE was kept"
    accepted = send(port, er7)
    assert accepted.code == "AA", (accepted, gateway.output()[-4000:])
    operator.wait_for_messages(1)
    assert gateway.stop() == 0
    assert len(operator.messages) == 1
    assert episode_lines(gateway) == {"store-unavailable": 1, "store-back": 1}, gateway.output()[-4000:]
