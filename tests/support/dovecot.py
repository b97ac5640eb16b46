"""A real Dovecot IMAP server for interop tests, started by the test with its own configuration.

Everything lives under a folder the test owns (tmp_path): configuration, runtime sockets, logs, maildirs and a
passwd-file. It listens on two ephemeral loopback ports, STARTTLS (required before login) and implicit TLS,
with the test PKI's server certificate, and is never the system service. As a normal user every process
runs as that user; as root (CI), Dovecot refuses root for its login and mail processes, so they run as the
package's unprivileged users (dovenull, dovecot; mail chrooted into the test's folder). ``mailbox()`` is a
stdlib imaplib client for the test's own appends and checks.
"""

from __future__ import annotations

import contextlib
import grp
import imaplib
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from tests.support.pki import Pki

BINARY = shutil.which("dovecot") or ("/usr/sbin/dovecot" if Path("/usr/sbin/dovecot").exists() else None)
START_TIMEOUT = 20.0

_CONFIG = """\
base_dir = {root}/run
state_dir = {root}/state
instance_name = mssgw-test-{port}
log_path = {root}/dovecot.log
listen = 127.0.0.1
protocols = imap
ssl = required
ssl_cert = <{cert}
ssl_key = <{key}
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = yes
auth_mechanisms = plain
default_internal_user = {internal_user}
default_internal_group = {internal_group}
default_login_user = {login_user}
first_valid_uid = 0
first_valid_gid = 0
mail_location = maildir:{mail_root}/%u
mail_max_userip_connections = 100
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={mail_root}/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls_port}
    ssl = yes
  }}
}}
{root_only}"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class Dovecot:
    """One private Dovecot; ``users`` maps login → password."""

    def __init__(self, root: Path, pki: Pki, users: dict[str, str]) -> None:
        assert BINARY is not None, "dovecot is not installed"
        self.root = root
        self.pki = pki
        self.users = users
        self.port = free_port()
        self.tls_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def config(self) -> Path:
        return self.root / "dovecot.conf"

    def start(self) -> Dovecot:
        for name in ("run", "state", "mail"):
            (self.root / name).mkdir(parents=True, exist_ok=True)
        (self.root / "passwd").write_text(
            "".join(f"{user}:{{PLAIN}}{password}::::::\n" for user, password in self.users.items()),
            encoding="utf-8",
        )
        uid, gid = os.getuid(), os.getgid()
        user, group = pwd.getpwuid(uid).pw_name, grp.getgrgid(gid).gr_name
        if uid == 0:
            # Dovecot never runs its login processes as root: as root (CI), they run as the package's
            # unprivileged users, chrooted into the runtime folder, and only the processes that read
            # the test's files (auth, mail) stay with this user.
            # Mail processes may not be root either: they run as "dovecot", chrooted into the mail folder.
            names = {"internal_user": "dovecot", "internal_group": "dovecot", "login_user": "dovenull"}
            mail = pwd.getpwnam("dovecot")
            uid, gid = mail.pw_uid, mail.pw_gid
            os.chown(self.root / "mail", uid, gid)
            mail_root = "/"
            extra = (
                "service auth {\n  user = root\n}\nservice auth-worker {\n  user = root\n}\n"
                f"mail_chroot = {self.root}/mail\nvalid_chroot_dirs = {self.root}/mail\n"
            )
        else:
            names = {"internal_user": user, "internal_group": group, "login_user": user}
            mail_root = str(self.root / "mail")
            extra = "service anvil {\n  chroot =\n}\nservice imap-login {\n  chroot =\n}\n"
        self.config.write_text(
            _CONFIG.format(
                root=self.root,
                port=self.port,
                tls_port=self.tls_port,
                cert=self.pki.server.cert,
                key=self.pki.server.key,
                uid=uid,
                gid=gid,
                root_only=extra,
                mail_root=mail_root.rstrip("/"),
                **names,
            ),
            encoding="utf-8",
        )
        assert BINARY is not None
        with open(self.root / "dovecot.stderr", "wb") as stderr:
            self.process = subprocess.Popen(
                [BINARY, "-F", "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=stderr
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not self._greets():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"dovecot did not start:\n{self.logs()}")
            time.sleep(0.05)
        return self

    def _greets(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                return sock.recv(100).startswith(b"* OK")
        except OSError:
            return False

    def logs(self) -> str:
        parts = [self.root / "dovecot.log", self.root / "dovecot.stderr"]
        return "\n".join(p.read_text(errors="replace") for p in parts if p.exists())

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(20)
        self.process = None

    @contextlib.contextmanager
    def mailbox(self, user: str) -> Iterator[Mailbox]:
        """A logged-in stdlib client (STARTTLS, the test CA) for appends and checks."""
        context = ssl.create_default_context(cafile=str(self.pki.ca))
        client = imaplib.IMAP4("127.0.0.1", self.port, timeout=30)
        try:
            client.starttls(context)
            client.login(user, self.users[user])
            yield Mailbox(client)
        finally:
            with contextlib.suppress(imaplib.IMAP4.error, OSError):
                client.logout()


class Mailbox:
    """What the tests do on the server: append (with an INTERNALDATE), count, read flags."""

    def __init__(self, client: imaplib.IMAP4) -> None:
        self.client = client

    def append(self, raw: bytes, folder: str = "INBOX", when: datetime | None = None) -> None:
        date = imaplib.Time2Internaldate(when) if when is not None else None
        status, detail = self.client.append(folder, "", date, raw)
        assert status == "OK", detail

    def create(self, folder: str) -> None:
        self.client.create(folder)

    def count(self, folder: str = "INBOX") -> int:
        status, data = self.client.select(folder, readonly=True)
        if status != "OK":
            return 0
        return int(data[0] or 0)

    def flags(self, folder: str = "INBOX") -> list[str]:
        """The flags of every message of ``folder``, in UID order."""
        self.client.select(folder, readonly=True)
        status, data = self.client.uid("FETCH", "1:*", "(FLAGS)")
        assert status == "OK"
        return [item.decode() for item in data if isinstance(item, bytes)]
