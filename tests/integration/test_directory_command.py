"""``mssgw directory update|search|show|status`` and the recipient check of ``mssgw send``, as a sysadmin
and an application run them, on files in the real extraction format: accents, an address on two lines, a
truncated download, a wrong column count, a file 40 % smaller than the one in force."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.directory import SAMPLE_LINES, generated_lines, line, write_file
from tests.support.gateway import SENDER, Gateway, gateway_for
from tests.support.https import HttpsServer
from tests.support.pki import Pki
from tests.unit.mappers.test_trustlist import trust_list_xml


@pytest.fixture
def gateway(tmp_path: Path, pki: Pki) -> Gateway:
    made = gateway_for(tmp_path / "gw", pki, None)
    made.sections["directory"] = {"min_entries": 3, "min_share": 0.6}
    made.write()
    return made


def sample(tmp_path: Path, **options: bool) -> Path:
    return write_file(
        tmp_path / ("sample.zip" if options.get("zipped") else "sample.txt"), SAMPLE_LINES, **options
    )


def test_an_update_from_a_zip_is_searched_without_accents_or_case(gateway: Gateway, tmp_path: Path) -> None:
    result = gateway.command("directory", "update", "--from", str(sample(tmp_path, zipped=True)))
    assert "directory updated: 5 addresses from 6 lines (1 lines repeating an address)" in result.stdout
    assert "file of 2026-12-06 02:00:00 UTC" in result.stdout  # 03:00 in Paris, from the file name
    found = gateway.json("directory", "search", "LEFEVRE", "helene")
    assert [r["address"] for r in found["results"]] == ["marie.lefevre@chu-exemple.mssante.fr"]
    assert found["results"][0]["holder"] == "MME Marie-Hélène LEFÈVRE" and found["more"] is False
    listed = gateway.command("directory", "search", "saint-étienne", "--speciality", "néonatologie").stdout
    assert "marie.lefevre@chu-exemple.mssante.fr" in listed and "secretariat.cardio" not in listed
    by_place = gateway.json("directory", "search", "--department", "42")["results"]
    assert {r["address"] for r in by_place} == {
        "marie.lefevre@chu-exemple.mssante.fr",
        "secretariat.cardio@chu-exemple.mssante.fr",
    }
    assert gateway.command("directory", "search", "personne").stdout == "no mailbox found\n"


def test_show_prints_every_role_of_an_address_and_66_for_an_unknown_one(
    gateway: Gateway, tmp_path: Path
) -> None:
    gateway.command("directory", "update", "--from", str(sample(tmp_path)))
    shown = gateway.command("directory", "show", "Marie.Lefevre@chu-exemple.mssante.fr").stdout
    assert "marie.lefevre@chu-exemple.mssante.fr  (PER)" in shown
    assert "role: Médecin, Pédiatrie at CHU de Saint-Étienne" in shown
    assert "role: Médecin, Néonatologie, Maternité at Clinique du Forez" in shown
    assert "address: 12 R de la République, 42055 SAINT-ÉTIENNE CEDEX 2, France" in shown
    missing = gateway.command("directory", "show", "nobody@medecin.mssante.fr", check=False)
    assert missing.returncode == 66 and "not in the national directory" in missing.stderr


@pytest.mark.parametrize(
    ("lines", "said"),
    [
        ([*SAMPLE_LINES[:4], SAMPLE_LINES[4][:60]], "line 6: "),
        (
            [*SAMPLE_LINES, line(address="x@medecin.mssante.fr") + "|en trop"],
            "line 8: 32 columns, expected 31",
        ),
        ([line()], "1 addresses, fewer than directory.min_entries = 3"),
        ([], "0 addresses, fewer than directory.min_entries = 3"),
    ],
    ids=["truncated", "wrong-column-count", "too-few", "header-only"],
)
def test_a_bad_file_is_refused_and_the_directory_in_force_stays(
    gateway: Gateway, tmp_path: Path, lines: list[str], said: str
) -> None:
    gateway.command("directory", "update", "--from", str(sample(tmp_path)))
    bad = write_file(tmp_path / "bad.txt", lines)
    refused = gateway.command("directory", "update", "--from", str(bad), check=False)
    assert refused.returncode == 65 and said in refused.stderr, refused.stderr
    assert "refused, the directory in force stays" in refused.stderr
    assert gateway.json("directory", "search", "lefevre")["results"]
    states = [(i["state"], i["addresses"]) for i in gateway.json("directory", "status")]
    assert states[0][0] == "refused" and states[1] == ("current", 5)


def test_a_file_40_percent_smaller_than_the_last_is_refused_unless_accepted(
    gateway: Gateway, tmp_path: Path
) -> None:
    gateway.command(
        "directory",
        "update",
        "--from",
        str(write_file(tmp_path / "big.txt", generated_lines(101, duplicates=0))),
    )
    smaller = write_file(tmp_path / "small.txt", generated_lines(60, seed=2, duplicates=0))
    refused = gateway.command("directory", "update", "--from", str(smaller), check=False)
    assert refused.returncode == 65, refused.stderr
    assert "under 60% of the 101 of the directory in force" in refused.stderr
    accepted = gateway.command("directory", "update", "--from", str(smaller), "--accept-smaller")
    assert "directory updated: 60 addresses" in accepted.stdout


def test_an_update_over_https_is_verified_against_the_configured_ca(
    gateway: Gateway, pki: Pki, tmp_path: Path
) -> None:
    gateway.sections["directory"]["ca_bundle"] = str(pki.ca)
    gateway.write()
    with HttpsServer(pki.server) as server:
        server.files["/extraction"] = sample(tmp_path, zipped=True).read_bytes()
        result = gateway.command("directory", "update", "--from", server.url("/extraction"))
    assert "5 addresses" in result.stdout
    with HttpsServer(pki.untrusted.server) as server:
        server.files["/extraction"] = b"x"
        refused = gateway.command("directory", "update", "--from", server.url("/extraction"), check=False)
    assert refused.returncode == 65 and "cannot fetch" in refused.stderr


def send_to(gateway: Gateway, recipient: str) -> tuple[int, str]:
    result = gateway.command("send", "--from", SENDER, "--to", recipient, "--subject", "Bonjour", check=False)
    return result.returncode, result.stderr


@pytest.fixture
def with_directory(gateway: Gateway, tmp_path: Path) -> Gateway:
    trust = tmp_path / "trust.xml"
    trust.write_bytes(
        trust_list_xml("medecin.mssante.fr", "chu-exemple.mssante.fr", "hopital.test.mssante.fr")
    )
    gateway.command("trust", "update", "--from", str(trust))
    gateway.command("directory", "update", "--from", str(sample(tmp_path)))
    return gateway


def test_refuse_mode_stops_a_mistyped_mssante_address_with_suggestions(with_directory: Gateway) -> None:
    with_directory.sections["directory"]["check"] = "refuse"
    with_directory.write()
    code, said = send_to(with_directory, "dr.martn@medecin.mssante.fr")
    assert code == 65, said
    assert "<dr.martn@medecin.mssante.fr>: not in the national MSSante directory" in said
    assert "did you mean dr.martin@medecin.mssante.fr?" in said
    assert send_to(with_directory, "dr.martin@medecin.mssante.fr")[0] == 0
    # Patients are never in the directory; a domain off the trust list is not the directory's to judge.
    assert send_to(with_directory, "someone@elsewhere.example")[0] == 0


def test_warn_mode_sends_and_off_mode_does_not_look(with_directory: Gateway) -> None:
    assert send_to(with_directory, "dr.martn@medecin.mssante.fr")[0] == 0
    with_directory.sections["directory"]["check"] = "off"
    with_directory.write()
    assert send_to(with_directory, "dr.martn@medecin.mssante.fr")[0] == 0


def test_without_a_directory_nothing_is_checked(gateway: Gateway, tmp_path: Path) -> None:
    gateway.sections["directory"]["check"] = "refuse"
    gateway.write()
    code, said = send_to(gateway, "dr.martn@medecin.mssante.fr")
    assert code == 0, said
    status = gateway.command("directory", "status").stdout
    assert "no directory in force" in status
    assert json.loads(gateway.command("directory", "status", "--json").stdout) == []
