"""The configuration file: every mistake reported at once, each naming its key; defaults that work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import settings
from gateway.cli import main
from gateway.errors import ConfigError
from mappers import xds
from mappers.documents import Code
from tests.support.value_sets import svs, write_value_sets

EXAMPLE = Path(__file__).parents[3] / "config" / "mssgw.example.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mssgw.toml"
    path.write_text(text, encoding="utf-8")
    return path


def minimal(tmp_path: Path) -> dict[str, dict[str, object]]:
    ca = tmp_path / "ca.pem"
    ca.write_text("not checked by the loader", encoding="utf-8")
    return {
        "gateway": {"state_dir": str(tmp_path / "state")},
        "tls": {"ca_bundle": str(ca)},
        "smarthost": {"host": "smtp.operateur.test"},
    }


def test_a_minimal_file_gets_documented_defaults(tmp_path: Path) -> None:
    loaded = settings.from_mapping(minimal(tmp_path))
    assert loaded.relay.retry_schedule == (60.0, 300.0, 900.0, 3600.0, 14400.0)
    assert loaded.relay.max_lifetime == 5 * 86400
    assert loaded.smarthost.port == 587 and loaded.smarthost.security == "starttls"
    assert loaded.store_url == f"sqlite:///{tmp_path / 'state' / 'mssgw.db'}"
    assert loaded.gateway.owner == loaded.gateway.hostname


def test_every_mistake_is_reported_together_each_with_its_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[gateway]
mode = "relay"
[relay]
retry_schedule = ["1m", "soon"]
[smarthost]
host = "smtp.operateur.test"
prot = 25
""",
    )
    with pytest.raises(ConfigError) as caught:
        settings.load(path)
    problems = caught.value.problems
    # The rule across keys (a smarthost needs tls.ca_bundle) is reported with the values refused.
    assert problems == (
        "gateway.mode: 'relay' is not one of 'client', 'operator'",
        "smarthost.prot: unknown key (misspelt, or in the wrong section?)",
        "relay.retry_schedule[1]: 'soon' is not a duration (write e.g. 30s, 5m, 1h, 5d)",
        "tls.ca_bundle: required when mail leaves by SMTP (peer certificates are always verified)",
    )


def test_check_config_exits_78_and_lists_every_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        """
[gateway]
mode = "relay"
shutdown_timeout = "forever"
[relay]
concurrency = "many"
""",
    )
    assert main(["check-config", "-c", str(path)]) == 78
    err = capsys.readouterr().err
    assert "4 configuration problems" in err
    for key in ("gateway.mode", "gateway.shutdown_timeout", "relay.concurrency", "smarthost.host"):
        assert f"  - {key}: " in err


def test_a_secret_readable_by_others_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "client.key"
    key.write_text("secret", encoding="utf-8")
    os.chmod(key, 0o644)
    raw = minimal(tmp_path)
    raw["tls"]["client_key"] = str(key)
    raw["tls"]["client_certificate"] = str(raw["tls"]["ca_bundle"])
    with pytest.raises(ConfigError) as caught:
        settings.from_mapping(raw)
    assert caught.value.problems == (
        f"tls.client_key: secret file {key} has mode 0644: it must not be accessible to group or others "
        "(chmod 600)",
    )


def test_missing_files_and_cross_key_rules_name_the_key_to_change(tmp_path: Path) -> None:
    raw = minimal(tmp_path)
    raw["tls"] = {"ca_bundle": str(tmp_path / "nowhere.pem")}
    with pytest.raises(ConfigError) as caught:
        settings.from_mapping(raw)
    assert caught.value.problems == (f"tls.ca_bundle: file {tmp_path / 'nowhere.pem'} does not exist",)
    raw = minimal(tmp_path)
    raw["smarthost"] = {"host": ""}
    raw["routes"] = [{"domain": "a.test", "transport": "smtp"}]
    with pytest.raises(ConfigError) as caught:
        settings.from_mapping(raw)
    assert caught.value.problems == (
        "routes[0].host: required for an smtp route",
        'smarthost.host: required in client mode (or a route with domain = "*")',
    )


def test_relative_paths_are_read_from_the_folder_of_the_file(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("x", encoding="utf-8")
    path = write(tmp_path, '[tls]\nca_bundle = "ca.pem"\n[smarthost]\nhost = "h.test"\n')
    assert settings.load(path).tls.ca_bundle == tmp_path / "ca.pem"


def test_the_example_file_documents_every_key() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    for section in settings.Settings.__dataclass_fields__:
        if section == "source":
            continue
        hint = settings.Settings.__dataclass_fields__[section]
        assert f"[{section}]" in text or f"[[{section}]]" in text or f"# [[{section}]]" in text, hint
    for section_name, cls in (
        ("gateway", settings.GatewaySettings),
        ("store", settings.StoreSettings),
        ("tls", settings.TlsSettings),
        ("smarthost", settings.SmarthostSettings),
        ("relay", settings.RelaySettings),
        ("dkim", settings.DkimSettings),
        ("logging", settings.LoggingSettings),
        ("routes", settings.RouteSettings),
        ("channels", settings.ChannelSettings),
        ("inbound", settings.InboundSettings),
        ("inbound.mailboxes", settings.MailboxSettings),
        ("submission", settings.SubmissionSettings),
        ("submission.clients", settings.SubmissionClientSettings),
        ("operator_listener", settings.OperatorListenerSettings),
        ("hl7", settings.Hl7Settings),
        ("hl7.producers", settings.Hl7ProducerSettings),
        ("metrics", settings.MetricsSettings),
        ("trust", settings.TrustSettings),
        ("directory", settings.DirectorySettings),
        ("certificates", settings.CertificateSettings),
        ("imap", settings.ImapSettings),
        ("imap.accounts", settings.ImapAccountSettings),
    ):
        for key in cls.__dataclass_fields__:
            assert f"\n{key} = " in text or f"\n# {key} = " in text, f"{section_name}.{key} undocumented"


def test_the_example_file_loads_once_its_files_exist(tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    for name in ("igc-sante-ca.pem", "bal-applicative.crt", "bal-applicative.key"):
        target = tmp_path / name
        target.write_text("x", encoding="utf-8")
        os.chmod(target, 0o600)
        text = text.replace(f"/etc/mssgw/tls/{name}", str(target))
    loaded = settings.load(write(tmp_path, text))
    assert loaded.gateway.mode == "client"
    assert loaded.relay.lease == 600.0


def test_check_config_requires_the_nil_reference_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        f'[gateway]\nstate_dir = "{tmp_path}"\n'
        f'[[routes]]\ndomain = "*"\ntransport = "folder"\npath = "{tmp_path}"\n',
    )
    assert main(["check-config", "-c", str(path)]) == 78
    err = capsys.readouterr().err
    assert "  - gateway.nil_reference: required: the product reference the ANS gave" in err
    path.write_text(
        path.read_text(encoding="utf-8").replace("[gateway]\n", '[gateway]\nnil_reference = "DEV935997"\n')
    )
    assert main(["check-config", "-c", str(path)]) == 0


def test_the_first_run_configuration_passes_check_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "-c", str(EXAMPLE.with_name("local.toml"))]) == 0
    assert "configuration is valid" in capsys.readouterr().out


def test_a_missing_file_does_not_hide_a_bad_listen_address(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = minimal(tmp_path)
    certificate = tmp_path / "server.crt"
    certificate.write_text("x", encoding="utf-8")
    raw["submission"] = {
        "listen": ["587"],
        "certificate": str(certificate),
        "key": str(tmp_path / "missing.key"),
    }
    with pytest.raises(ConfigError) as caught:
        settings.from_mapping(raw)
    assert caught.value.problems == (
        f"submission.key: file {tmp_path / 'missing.key'} does not exist",
        "submission.listen[0]: '587' is not host:port (e.g. 127.0.0.1:587)",
    )


def test_check_config_into_a_closed_pipe_exits_quietly() -> None:
    reader, writer = os.pipe()
    os.close(reader)  # as `| head -1` does once it has its line
    try:
        result = subprocess.run(
            [sys.executable, "-m", "gateway", "check-config", "-c", str(EXAMPLE.with_name("local.toml"))],
            stdout=writer,
            stderr=subprocess.PIPE,
            timeout=60,
            check=False,
        )
    finally:
        os.close(writer)
    assert (result.returncode, result.stderr) == (141, b"")


def test_document_defaults_are_read_as_the_cda_wrapper_takes_them(tmp_path: Path) -> None:
    raw = minimal(tmp_path)
    raw["documents"] = {
        "facility_type": "SA01^Etablissement public de santé",
        "practice_setting": "ETABLISSEMENT^Etablissement de santé",
        "institution_id": "499700367909006",
        "author_rpps": "99700367909",
        "author_family": "DOC0036790",
        "author_specialty": "G15_10/SM44^Médecin - Radio-diagnostic (SM)^1.2.250.1.213.1.1.4.5",
    }
    defaults = settings.from_mapping(raw).documents.header_defaults()
    assert defaults.author.rpps == "899700367909" and defaults.author.institution_id == "499700367909006"
    assert defaults.facility_type is not None and defaults.facility_type.scheme == "1.2.250.1.71.4.2.4"
    assert defaults.practice_setting is not None and defaults.practice_setting.code == "ETABLISSEMENT"
    assert defaults.author.specialty is not None and defaults.author.specialty.code == "G15_10/SM44"


def test_bad_document_defaults_name_each_key(tmp_path: Path) -> None:
    raw = minimal(tmp_path)
    raw["documents"] = {"facility_type": "SA01", "author_role": "10^Médecin", "author_rpps": "12"}
    with pytest.raises(ConfigError) as caught:
        settings.from_mapping(raw)
    assert caught.value.problems == (
        "documents.facility_type: 'SA01' is not CODE^LABEL",
        "documents.author_role: '10^Médecin' is not CODE^LABEL^SYSTEM",
        "documents.author_rpps: '12' is not an RPPS number (11 digits, or 8 followed by the 11)",
        "documents.author_family: required for a default author (CI-SIS: no nullFlavor)",
    )


def test_xds_only_document_defaults_are_read_checked_and_held_to_their_value_sets(tmp_path: Path) -> None:
    raw = minimal(tmp_path)
    raw["documents"] = {
        "class_code": "11^Résultats d'examens",
        "content_type_code": "04^Hospitalisation de jour",
        "format_code": "urn:mssgw:test:cr^Format de test^1.2.250.1.999.9.1",
    }
    defaults = settings.from_mapping(raw).documents.header_defaults()
    assert defaults.class_code == Code("11", "Résultats d'examens", xds.CLASS_CODE_OID)
    assert defaults.content_type == Code("04", "Hospitalisation de jour", xds.CONTENT_TYPE_OID)
    assert defaults.format_code == Code("urn:mssgw:test:cr", "Format de test", "1.2.250.1.999.9.1")
    classes = tmp_path / "JDV_J06-test.xml"
    classes.write_bytes(svs("JDV_J06-test", "1.2.3.4.6", [("10", "Compte rendu", xds.CLASS_CODE_OID)]))
    raw["documents"] = {"class_code": "11^Résultats", "format_code": "urn:x^Format", "value_sets": {
        "class_code": str(classes)}}  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        settings.from_mapping(raw)
    assert caught.value.problems == (
        f"documents.class_code: '11' (code system {xds.CLASS_CODE_OID}) is not in the value set "
        f"JDV_J06-test (1.2.3.4.6) (read from {classes}, documents.value_sets.class_code)",
        "documents.format_code: 'urn:x^Format' is not CODE^LABEL^SYSTEM",
    )


def _documents_with_value_sets(tmp_path: Path, **codes: str) -> dict[str, dict[str, object]]:
    raw = minimal(tmp_path)
    raw["documents"] = {
        "facility_type": "SA01^Etablissement public de santé",
        "practice_setting": "ETABLISSEMENT^Etablissement de santé",
        "author_rpps": "99700367909",
        "author_family": "DOC0036790",
        "author_role": "10^Médecin^1.2.250.1.71.1.2.7",
        "author_specialty": "G15_10/SM44^Médecin - Radio-diagnostic (SM)^1.2.250.1.213.1.1.4.5",
        **codes,
        "value_sets": write_value_sets(tmp_path / "nos"),
    }
    return raw


def test_document_codes_in_the_value_sets_the_site_downloaded_load(tmp_path: Path) -> None:
    loaded = settings.from_mapping(_documents_with_value_sets(tmp_path))
    assert loaded.documents.value_sets.author_specialty == tmp_path / "nos" / "JDV_J01-test.xml"


def test_a_document_code_outside_its_value_set_is_refused_naming_the_key_file_and_value_set(
    tmp_path: Path,
) -> None:
    raw = _documents_with_value_sets(
        tmp_path,
        facility_type="SA99^Inconnu",
        author_specialty="G15_10/SM99^Spécialité inconnue^1.2.250.1.213.1.1.4.5",
        author_role="10^Médecin^1.2.250.1.213.1.1.4.5",
    )
    with pytest.raises(ConfigError) as caught:
        settings.from_mapping(raw)
    nos = tmp_path / "nos"
    assert caught.value.problems == (
        "documents.facility_type: 'SA99' (code system 1.2.250.1.71.4.2.4) is not in the value set "
        f"JDV_J02-test (1.2.3.4.2) (read from {nos / 'JDV_J02-test.xml'}, "
        "documents.value_sets.facility_type)",
        "documents.author_role: '10' is in the value set JDV_J47-test (1.2.3.4.47) under the "
        "code system 1.2.250.1.71.1.2.7, not 1.2.250.1.213.1.1.4.5 "
        f"(read from {nos / 'JDV_J47-test.xml'}, documents.value_sets.author_role)",
        "documents.author_specialty: 'G15_10/SM99' (code system 1.2.250.1.213.1.1.4.5) is not in the value "
        f"set JDV_J01-test (1.2.3.4.1) (read from {nos / 'JDV_J01-test.xml'}, "
        "documents.value_sets.author_specialty)",
    )


def test_a_value_set_file_that_is_not_one_is_refused_even_without_a_code(tmp_path: Path) -> None:
    raw = minimal(tmp_path)
    csv = tmp_path / "JDV_J04.csv"
    csv.write_text("code;libelle\nETABLISSEMENT;Etablissement de santé\n", encoding="utf-8")
    raw["documents"] = {"value_sets": {"practice_setting": str(csv), "facility_type": str(tmp_path / "none")}}
    with pytest.raises(ConfigError) as caught:
        settings.from_mapping(raw)
    (missing, not_svs) = caught.value.problems
    assert missing.startswith("documents.value_sets.facility_type: ")
    assert not_svs.startswith(f"documents.value_sets.practice_setting: {csv} is not well-formed XML")


def test_check_config_names_a_code_outside_its_value_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sets = write_value_sets(tmp_path / "nos")
    path = write(
        tmp_path,
        f'[gateway]\nstate_dir = "{tmp_path}"\nnil_reference = "DEV935997"\n'
        f'[[routes]]\ndomain = "*"\ntransport = "folder"\npath = "{tmp_path}"\n'
        '[documents]\npractice_setting = "LIBERAL^Libéral"\n'
        f'[documents.value_sets]\npractice_setting = "{sets["practice_setting"]}"\n',
    )
    assert main(["check-config", "-c", str(path)]) == 78
    err = capsys.readouterr().err
    assert "  - documents.practice_setting: 'LIBERAL' (code system 1.2.250.1.213.1.1.4.9) is not in" in err
    path.write_text(path.read_text(encoding="utf-8").replace("LIBERAL^Libéral", "AMBULATOIRE^Ambulatoire"))
    assert main(["check-config", "-c", str(path)]) == 0
