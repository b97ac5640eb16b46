"""The inbound sections of the configuration: listeners, clients, mailboxes; every problem names its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway import settings, settings_checks
from gateway.errors import ConfigError
from gateway.preflight import material_problems
from tests.support.pki import Pki


def base(tmp_path: Path, pki: Pki) -> dict[str, dict[str, object]]:
    return {
        "gateway": {"state_dir": str(tmp_path / "state"), "mode": "operator", "nil_reference": "DEV935997"},
        "tls": {"ca_bundle": str(pki.ca)},
    }


def problems(raw: dict[str, dict[str, object]]) -> list[str]:
    with pytest.raises(ConfigError) as error:
        settings.from_mapping(raw)
    return list(error.value.problems)


def test_listeners_and_clients_are_checked_together(tmp_path: Path, pki: Pki) -> None:
    raw = base(tmp_path, pki)
    raw["gateway"]["mode"] = "client"
    raw["smarthost"] = {"host": "smtp.operateur.test"}
    raw["submission"] = {
        "listen": ["127.0.0.1:587", "nowhere"],
        "clients": [{"name": "dpi", "networks": ["10.0.0.0/33"]}, {"name": "dpi"}],
    }
    raw["operator_listener"] = {"listen": ["0.0.0.0:25"], "certificate": str(pki.server.cert)}
    assert problems(raw) == [
        "submission.listen[1]: 'nowhere' is not host:port (e.g. 127.0.0.1:587)",
        "submission.certificate: a listener needs certificate and key (STARTTLS)",
        "operator_listener.certificate: a listener needs certificate and key (STARTTLS)",
        'operator_listener.listen: only in gateway.mode = "operator"',
        "submission.clients[0].name: 'dpi' is listed twice",
        "submission.clients[0].networks[0]: '10.0.0.0/33' is not a network",
        "submission.clients[1].name: 'dpi' is listed twice",
    ]


def test_mailboxes_and_listeners_load(tmp_path: Path, pki: Pki) -> None:
    raw = base(tmp_path, pki)
    raw["inbound"] = {
        "domains": ["hopital.test"],
        "mailboxes": [{"address": "a@hopital.test", "drop_folder": "drop", "forward_protocol": "lmtp"}],
        "dkim_policy": "refuse",
    }
    raw["operator_listener"] = {
        "listen": ["[::1]:0"],
        "certificate": str(pki.server.cert),
        "key": str(pki.server.key),
    }
    loaded = settings.from_mapping(raw, source=str(tmp_path / "mssgw.toml"))
    box = loaded.inbound.mailboxes[0]
    assert box.drop_folder == tmp_path / "drop" and box.delivered and not box.forward_host
    assert settings_checks.split_host_port("[::1]:0") == ("::1", 0)
    assert material_problems(loaded) == []


def test_unusable_listener_material_is_reported_before_start(tmp_path: Path, pki: Pki) -> None:
    raw = base(tmp_path, pki)
    raw["operator_listener"] = {
        "listen": ["127.0.0.1:0"],
        "certificate": str(pki.server.cert),
        "key": str(pki.untrusted.server.key),
    }
    raw["submission"] = {
        "listen": ["127.0.0.1:0"],
        "certificate": str(pki.server.cert),
        "key": str(pki.server.key),
        "credentials_file": str(pki.server.key),
    }
    found = material_problems(settings.from_mapping(raw))
    # The listener certificates are checked with the others, which name a key mismatch precisely.
    assert found[0] == (
        f"operator_listener.certificate: {pki.server.cert}: the certificate does not match the private "
        f"key {pki.untrusted.server.key}"
    )
    assert found[1].startswith("submission.credentials_file: line 1 is not name:scrypt$")
    assert not any(p.startswith("operator_listener.certificate: cannot use") for p in found)
    assert not any("PRIVATE KEY" in problem for problem in found)


@pytest.mark.parametrize(
    ("cap", "problem"),
    [
        (-1, "inbound.max_inflight_bytes: -1 must not be negative"),
        (
            1000,
            "inbound.max_inflight_bytes: must be at least inbound.max_message_size (0: no cap), "
            "or a message of the largest size accepted could never be received",
        ),
    ],
)
def test_the_bytes_in_flight_cap_leaves_room_for_the_largest_message(
    tmp_path: Path, pki: Pki, cap: int, problem: str
) -> None:
    raw = base(tmp_path, pki)
    raw["inbound"] = {"max_message_size": 2000, "max_inflight_bytes": cap}
    assert problems(raw) == [problem]
    raw["inbound"] = {"max_message_size": 2000, "max_inflight_bytes": 0}
    assert settings.from_mapping(raw).inbound.max_inflight_bytes == 0
