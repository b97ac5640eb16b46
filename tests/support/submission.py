"""The submission listener of a test gateway, and a hospital application speaking to it over STARTTLS.

System tests that submit mail as the hospital's software does use ``add_submission`` on a gateway before
starting it, then ``submission_client`` for an authenticated ``smtplib`` session.
"""

from __future__ import annotations

import re
import smtplib
import ssl
from pathlib import Path

from gateway.inbound.credentials import hash_password
from tests.support.gateway import SENDER, Gateway
from tests.support.pki import Pki, write_private

PASSWORD = "s3cret submission password"
_LISTENING = re.compile(r"event=listening listener=submission address=127\.0\.0\.1:(\d+)")


def add_submission(gateway: Gateway, pki: Pki, directory: Path, port: int = 0) -> None:
    """Listen for submission on loopback ``port`` (0: an ephemeral one); client ``dpi`` may send as
    ``SENDER``. A fixed port lets clients find the gateway again after a restart."""
    credentials = write_private(
        directory / "credentials", f"dpi:{hash_password(PASSWORD, log2_n=10)}\n".encode()
    )
    gateway.sections["submission"] = {
        "listen": [f"127.0.0.1:{port}"],
        "certificate": str(pki.server.cert),
        "key": str(pki.server.key),
        "credentials_file": str(credentials),
    }
    gateway.sections["inbound"] = {"domains": ["hopital.test.mssante.fr"]}
    gateway.write()
    with gateway.config.open("a", encoding="utf-8") as config:
        config.write(f'\n[[submission.clients]]\nname = "dpi"\nsenders = ["{SENDER}"]\n')


def submission_port(gateway: Gateway) -> int:
    """The port the running gateway's submission listener logged (the last run's log)."""
    found = _LISTENING.search(gateway.output())
    assert found, gateway.output()
    return int(found.group(1))


def submission_client(gateway: Gateway, pki: Pki, timeout: float = 10, port: int = 0) -> smtplib.SMTP:
    """An SMTP session with the gateway on ``port`` (0: the one its log names), after STARTTLS and
    login as ``dpi``."""
    client = smtplib.SMTP("127.0.0.1", port or submission_port(gateway), timeout=timeout)
    client.starttls(context=ssl.create_default_context(cafile=str(pki.ca)))
    client.login("dpi", PASSWORD)
    return client
