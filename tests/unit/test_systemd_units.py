"""The systemd unit a sysadmin installs: notify type, reload, restart policy and the hardening we promise,
checked directive by directive, and accepted by ``systemd-analyze verify``."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from gateway.settings import GatewaySettings

UNITS = Path(__file__).parents[2] / "systemd"
SERVICE = UNITS / "mssgw.service"
INSTALLED_AT = "/usr/local/bin/mssgw"


def directives(path: Path) -> dict[str, list[str]]:
    """``[Section]Key`` → every value given (a key may repeat, as SystemCallFilter does)."""
    found: dict[str, list[str]] = defaultdict(list)
    section = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found[f"{section}.{key.strip()}"].append(value.strip())
    return found


def seconds(value: str) -> float:
    units = {"s": 1, "min": 60}
    for suffix, factor in units.items():
        if value.endswith(suffix):
            return float(value.removesuffix(suffix)) * factor
    return float(value)


def test_the_service_tells_systemd_when_it_is_ready_and_alive() -> None:
    unit = directives(SERVICE)
    assert unit["Service.Type"] == ["notify"]
    assert unit["Service.NotifyAccess"] == ["main"]
    assert seconds(unit["Service.WatchdogSec"][0]) >= 10
    assert unit["Service.ExecReload"] == ["/bin/kill -HUP $MAINPID"]


def test_a_broken_configuration_stops_the_start_and_is_never_restarted() -> None:
    unit = directives(SERVICE)
    assert unit["Service.ExecStartPre"] == [f"{INSTALLED_AT} check-config"]
    assert unit["Service.ExecStart"] == [f"{INSTALLED_AT} run"]
    assert unit["Service.Restart"] == ["on-failure"]
    assert unit["Service.RestartPreventExitStatus"] == ["78"]


def test_systemd_waits_longer_than_the_daemon_drains() -> None:
    unit = directives(SERVICE)
    assert seconds(unit["Service.TimeoutStopSec"][0]) > GatewaySettings().shutdown_timeout


def test_the_service_runs_hardened_as_its_own_user() -> None:
    unit = directives(SERVICE)
    expected = {
        "User": "mssgw",
        "StateDirectory": "mssgw",
        "StateDirectoryMode": "0700",  # gateway.file_modes.PRIVATE_DIR: the store holds every message
        "ProtectSystem": "strict",
        "ReadWritePaths": "/var/lib/mssgw",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "CAP_NET_BIND_SERVICE",
        "AmbientCapabilities": "CAP_NET_BIND_SERVICE",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "SystemCallArchitectures": "native",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectControlGroups": "yes",
        "RestrictNamespaces": "yes",
        "RestrictSUIDSGID": "yes",
        "LockPersonality": "yes",
    }
    for key, value in expected.items():
        assert unit[f"Service.{key}"] == [value], key
    assert "@system-service" in unit["Service.SystemCallFilter"]
    assert GatewaySettings().state_dir == Path("/var/lib/mssgw")


def test_the_user_and_its_folders_are_declared() -> None:
    sysusers = (UNITS / "mssgw.sysusers.conf").read_text(encoding="utf-8")
    assert any(line.startswith("u mssgw ") for line in sysusers.splitlines())
    tmpfiles = (UNITS / "mssgw.tmpfiles.conf").read_text(encoding="utf-8")
    assert any(
        line.split()[:5] == ["d", "/var/lib/mssgw", "0700", "mssgw", "mssgw"]
        for line in tmpfiles.splitlines()
        if line.strip()
    )


def test_systemd_analyze_verifies_the_units(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (Debian package systemd; .ci/run installs it)")
    # verify checks that the programs exist: point the copy at this checkout's mssgw instead of
    # /usr/local/bin, where a real installation puts it.
    mssgw = Path(sys.executable).parent / "mssgw"
    copy = tmp_path / "mssgw.service"
    copy.write_text(SERVICE.read_text(encoding="utf-8").replace(INSTALLED_AT, str(mssgw)), encoding="utf-8")
    result = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "mssgw.service" not in result.stderr, result.stderr
