"""``mssgw trust update|list|check`` as a sysadmin runs them: from a file or over HTTPS, the last good copy
kept, an empty or malformed list refused, what changed reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.gateway import Gateway, gateway_for
from tests.support.https import HttpsServer
from tests.support.pki import Pki
from tests.unit.mappers.test_trustlist import SAMPLE, trust_list_xml


@pytest.fixture
def gateway(tmp_path: Path, pki: Pki) -> Gateway:
    return gateway_for(tmp_path / "gw", pki, None)


def test_an_update_from_a_file_with_a_unicode_domain_is_kept_and_checked(gateway: Gateway) -> None:
    result = gateway.command("trust", "update", "--from", str(SAMPLE))
    assert "trust list updated: 4 domains, 4 added, 0 removed" in result.stdout
    assert "+ xn--hpital-rgional-ikb2o.mssante.fr" in result.stdout
    assert (gateway.state_dir / "trustlist.xml").read_bytes() == SAMPLE.read_bytes()
    assert "ch-exemple.mssante.fr" in gateway.command("trust", "list").stdout.split()
    checked = gateway.command("trust", "check", "HÔPITAL-Régional.mssante.fr")
    assert "is on the trust list" in checked.stdout
    refused = gateway.command("trust", "check", "evil.example.com", check=False)
    assert refused.returncode == 66 and "not on the trust list" in refused.stderr


def test_a_second_update_reports_what_was_added_and_removed(gateway: Gateway, tmp_path: Path) -> None:
    first = tmp_path / "first.xml"
    first.write_bytes(trust_list_xml("a.mssante.fr", "b.mssante.fr"))
    second = tmp_path / "second.xml"
    second.write_bytes(trust_list_xml("b.mssante.fr", "c.mssante.fr", "not a domain"))
    gateway.command("trust", "update", "--from", str(first))
    change = gateway.json("trust", "update", "--from", str(second))
    assert change == {
        "total": 2,
        "added": ["c.mssante.fr"],
        "removed": ["a.mssante.fr"],
        "rejected": ["not a domain"],
    }


@pytest.mark.parametrize(
    ("content", "said"),
    [(trust_list_xml(), "the trust list is empty"), (b"<ListeBlanche><Domaine>", "not well-formed")],
    ids=["empty", "malformed"],
)
def test_an_unusable_list_is_refused_and_the_last_good_copy_stays(
    gateway: Gateway, tmp_path: Path, content: bytes, said: str
) -> None:
    gateway.command("trust", "update", "--from", str(SAMPLE))
    bad = tmp_path / "bad.xml"
    bad.write_bytes(content)
    result = gateway.command("trust", "update", "--from", str(bad), check=False)
    assert result.returncode == 65
    assert result.stderr.startswith("mssgw: --from:") and said in result.stderr
    assert (gateway.state_dir / "trustlist.xml").read_bytes() == SAMPLE.read_bytes()


def test_an_update_over_https_is_verified_against_the_configured_ca(gateway: Gateway, pki: Pki) -> None:
    gateway.sections["trust"] = {"ca_bundle": str(pki.ca)}
    gateway.write()
    with HttpsServer(pki.server) as server:
        server.files["/listeblanchemssante.xml"] = SAMPLE.read_bytes()
        result = gateway.command("trust", "update", "--from", server.url("/listeblanchemssante.xml"))
    assert "4 domains" in result.stdout
    listed = json.loads(gateway.command("trust", "list", "--json").stdout)
    assert "mssante.fr" in listed["domains"] and listed["loaded_at"]


def test_a_server_with_an_untrusted_certificate_is_refused(gateway: Gateway, pki: Pki) -> None:
    gateway.sections["trust"] = {"ca_bundle": str(pki.ca)}
    gateway.write()
    with HttpsServer(pki.untrusted.server) as server:
        server.files["/l.xml"] = SAMPLE.read_bytes()
        result = gateway.command("trust", "update", "--from", server.url("/l.xml"), check=False)
    assert result.returncode == 65 and "CERTIFICATE_VERIFY_FAILED" in result.stderr
    assert not (gateway.state_dir / "trustlist.xml").exists()


def test_plain_http_is_refused(gateway: Gateway) -> None:
    result = gateway.command("trust", "update", "--from", "http://127.0.0.1:1/l.xml", check=False)
    assert result.returncode == 65 and "https://" in result.stderr
