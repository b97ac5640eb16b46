"""The notify client speaks sd_notify(3): one datagram of KEY=value lines, to a path or an abstract name."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.sd_notify import Notifier


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    sock.bind(str(path))
    sock.settimeout(5)
    yield str(path), sock
    sock.close()


def test_ready_carries_a_status_line(manager: tuple[str, socket.socket]) -> None:
    address, sock = manager
    Notifier(address).ready("ready: queue 0 queued")
    assert sock.recv(4096) == b"READY=1\nSTATUS=ready: queue 0 queued"


def test_reloading_carries_the_monotonic_time(manager: tuple[str, socket.socket]) -> None:
    address, sock = manager
    Notifier(address).reloading()
    fields = dict(line.split("=", 1) for line in sock.recv(4096).decode().splitlines())
    assert fields["RELOADING"] == "1" and int(fields["MONOTONIC_USEC"]) > 0


def test_an_abstract_socket_name_is_understood() -> None:
    name = f"mssgw-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        Notifier("@" + name).stopping()
        assert sock.recv(4096).startswith(b"STOPPING=1\n")


def test_outside_systemd_nothing_is_sent_and_nothing_fails() -> None:
    notifier = Notifier.from_environment({})
    assert notifier.address is None and notifier.watchdog_interval is None
    notifier.ready("ready")
    notifier.watchdog()


def test_a_vanished_manager_is_not_an_error(tmp_path: Path) -> None:
    Notifier(str(tmp_path / "gone.sock")).status("still here")


def test_the_watchdog_interval_is_half_of_watchdog_sec_and_only_for_the_named_pid() -> None:
    ours = Notifier.from_environment(
        {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}
    )
    assert ours.watchdog_interval == 15.0
    other = Notifier.from_environment(
        {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}
    )
    assert other.watchdog_interval is None
