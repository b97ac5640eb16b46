"""Interoperability with swaks (Debian), a client we did not write: submission with AUTH over STARTTLS, and
an operator peer with its client certificate. Skips only if swaks is not installed (.ci/run installs it)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.inbound.credentials import hash_password
from tests.support.listener import listener_settings, running
from tests.support.mail import APP, MAILBOX, OUTSIDE, PEER_DOMAIN
from tests.support.pki import Pki, write_private

SWAKS = shutil.which("swaks")
pytestmark = pytest.mark.skipif(SWAKS is None, reason="swaks is not installed (apt-get install -y swaks)")


async def swaks(port: int, pki: Pki, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        SWAKS or "swaks",
        "--server", f"127.0.0.1:{port}",
        "--tls", "--tls-verify", "--tls-ca-path", str(pki.ca),
        "--helo", "client.test",
        "--timeout", "20",
        *args,
    ]  # fmt: skip
    return await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, timeout=60, check=False
    )


async def test_swaks_submits_with_auth_plain_over_starttls(tmp_path: Path, pki: Pki) -> None:
    credentials = write_private(
        tmp_path / "credentials", f"dpi:{hash_password('pw-123', log2_n=10)}\n".encode()
    )
    settings = listener_settings(
        tmp_path, pki, "submission", submission={"credentials_file": str(credentials)}
    )
    async with running(settings, "submission") as gateway:
        result = await swaks(
            gateway.port, pki,
            "--auth", "PLAIN", "--auth-user", "dpi", "--auth-password", "pw-123",
            "--from", APP, "--to", OUTSIDE, "--header", f"From: {APP}",
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        assert "<~  250 2.0.0 Queued as" in result.stdout
        assert gateway.deliveries() == [(OUTSIDE, None, None)]


async def test_swaks_as_a_trusted_operator_reaches_our_mailbox_and_not_beyond(
    tmp_path: Path, pki: Pki
) -> None:
    sender = f"dr@{PEER_DOMAIN}"
    async with running(listener_settings(tmp_path, pki, "operator"), "operator") as gateway:
        certificate = ("--tls-cert", str(pki.client.cert), "--tls-key", str(pki.client.key))
        good = await swaks(gateway.port, pki, *certificate, "--from", sender, "--to", MAILBOX)
        relay = await swaks(gateway.port, pki, *certificate, "--from", sender, "--to", "x@outside.test")
        assert good.returncode == 0, good.stdout + good.stderr
        assert relay.returncode != 0 and "554 5.7.1 <x@outside.test>: relaying denied" in relay.stdout
        assert len(gateway.messages()) == 1
