"""The daemon refreshes the trust list from ``trust.url`` over HTTPS on schedule, keeps the last good copy
when the published list is broken, and puts each good one in force without a restart."""

from __future__ import annotations

from pathlib import Path

from tests.support.gateway import Gateway, gateway_for
from tests.support.https import HttpsServer
from tests.support.pki import Pki
from tests.unit.mappers.test_trustlist import SAMPLE, trust_list_xml


def test_the_list_is_fetched_at_start_then_refreshed_and_a_broken_one_is_ignored(
    tmp_path: Path, pki: Pki, gateways: list[Gateway]
) -> None:
    with HttpsServer(pki.server) as server:
        server.files["/listeblanchemssante.xml"] = SAMPLE.read_bytes()
        gateway = gateway_for(tmp_path / "gw", pki, None)
        gateway.sections["trust"] = {
            "url": server.url("/listeblanchemssante.xml"),
            "ca_bundle": str(pki.ca),
            "refresh": "1s",
        }
        gateway.write()
        gateways.append(gateway)
        gateway.start()
        output = gateway.wait_for_output("event=trust-list-updated")
        assert "total=4 added=4 removed=0" in output
        assert "event=trust-list-in-force domains=4" in output

        server.files["/listeblanchemssante.xml"] = b"<ListeBlanche><Domaine>"
        output = gateway.wait_for_output("event=trust-list-refresh-failed")
        assert "not well-formed" in output
        assert (gateway.state_dir / "trustlist.xml").read_bytes() == SAMPLE.read_bytes()

        server.files["/listeblanchemssante.xml"] = trust_list_xml("mssante.fr", "nouveau.mssante.fr")
        output = gateway.wait_for_output("added=1 removed=3")
        assert "event=trust-list-in-force domains=2" in output
        assert gateway.stop() == 0
    assert gateway.command("trust", "check", "nouveau.mssante.fr").returncode == 0
