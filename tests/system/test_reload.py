"""SIGHUP (``systemctl reload mssgw``): the file, the TLS material and the trust list are read again;
deliveries in flight finish; a broken file is refused with a log line and the old configuration stays."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.fake_operator import FakeOperator, FakeOperatorFactory
from tests.support.gateway import SENDER, Gateway, gateway_for
from tests.support.pki import Pki, write_private
from tests.unit.mappers.test_trustlist import SAMPLE

RECIPIENT = "dr.martin@cabinet.test.mssante.fr"


def send(gateway: Gateway, subject: str) -> int:
    return gateway.send("--from", SENDER, "--to", RECIPIENT, "--subject", subject)


def test_a_renewed_client_certificate_is_presented_on_the_next_connection_after_reload(
    tmp_path: Path, pki: Pki, fake_operator: FakeOperatorFactory, gateways: list[Gateway]
) -> None:
    both_cas = tmp_path / "both-cas.pem"
    both_cas.write_bytes(pki.ca.read_bytes() + pki.untrusted.ca.read_bytes())
    operator = fake_operator(client_ca=both_cas)
    installed = tmp_path / "installed"
    installed.mkdir()
    cert, key = installed / "client.crt", installed / "client.key"
    shutil.copyfile(pki.client.cert, cert)
    write_private(key, pki.client.key.read_bytes())
    gateway = gateway_for(tmp_path / "gw", pki, operator)
    gateway.sections["tls"].update(client_certificate=str(cert), client_key=str(key))
    gateway.write()
    gateways.append(gateway)
    gateway.start()
    send(gateway, "before")
    assert operator.wait_for_messages(1)[0].peer_cn == pki.client_address

    # The renewal a sysadmin does: new files at the same paths, then a reload.
    shutil.copyfile(pki.untrusted.client.cert, cert)
    write_private(key, pki.untrusted.client.key.read_bytes())
    gateway.reload()
    gateway.wait_for_output("event=reloaded")
    send(gateway, "after")
    assert operator.wait_for_messages(2)[1].peer_cn == pki.untrusted.client_address
    assert gateway.stop() == 0


@pytest.fixture
def running(
    tmp_path: Path, pki: Pki, fake_operator: FakeOperatorFactory, gateways: list[Gateway]
) -> tuple[Gateway, FakeOperator]:
    """A started gateway relaying to a fake operator."""
    operator = fake_operator()
    gateway = gateway_for(tmp_path / "gw", pki, operator)
    gateways.append(gateway)
    gateway.start()
    return gateway, operator


def test_a_delivery_in_flight_during_a_reload_completes(running: tuple[Gateway, FakeOperator]) -> None:
    gateway, operator = running
    operator.hold()
    queue_id = send(gateway, "in flight")
    operator.wait_for_held(1)
    gateway.reload()
    gateway.wait_for_output("event=reloaded")
    operator.release()
    operator.wait_for_messages(1)
    assert gateway.stop() == 0
    (delivery,) = gateway.json("queue", "show", str(queue_id))["deliveries"]
    assert delivery["state"] == "sent" and delivery["attempts"] == 1


def test_a_broken_file_is_refused_and_the_daemon_goes_on_with_the_old_one(
    pki: Pki, running: tuple[Gateway, FakeOperator]
) -> None:
    gateway, operator = running
    good = gateway.config.read_text(encoding="utf-8")
    gateway.config.write_text(good.replace("[relay]", "[relay]\nconcurency = 4"), encoding="utf-8")
    gateway.reload()
    output = gateway.wait_for_output("event=reload-refused")
    assert "relay.concurency: unknown key" in output
    gateway.sections["tls"]["client_key"] = str(pki.untrusted.client.key)
    gateway.write()
    gateway.reload()
    output = gateway.wait_for_output("event=reload-refused", count=2)
    assert "does not match the private key" in output
    send(gateway, "still running")
    assert operator.wait_for_messages(1)[0].peer_cn == pki.client_address
    assert "event=reloaded" not in gateway.output()
    assert gateway.stop() == 0


def test_the_trust_list_is_read_again_on_reload(tmp_path: Path, pki: Pki, gateways: list[Gateway]) -> None:
    gateway = gateway_for(tmp_path / "gw", pki, None)
    gateways.append(gateway)
    gateway.start()
    assert "event=trust-list-missing" in gateway.output()
    gateway.command("trust", "update", "--from", str(SAMPLE))
    gateway.reload()
    assert "event=trust-list-in-force domains=4" in gateway.wait_for_output("event=reloaded")
    assert gateway.stop() == 0
