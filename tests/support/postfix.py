"""A real Postfix from Debian for interop tests: a private instance the test starts and stops itself.

``postfix -c <folder>`` with its own main.cf and master.cf, queue and data directories under the test's
folder, one smtpd on an ephemeral 127.0.0.1 port, no chroot, no local delivery, and never the system
instance (/etc/postfix is only read for the package's own file list). It plays the hospital's MTA in front
of the submission listener: mail for outside goes to ``relayhost`` (the gateway) with TLS required; mail for
the hospital's own domain goes to ``sink`` (a test SMTP server). Postfix's master needs root.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

BINARY = shutil.which("postfix") or ("/usr/sbin/postfix" if Path("/usr/sbin/postfix").exists() else None)
START_TIMEOUT = 20.0

BASE_MAIN = """\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.{domain}
mydomain = {domain}
myorigin = $myhostname
mydestination =
local_recipient_maps =
local_transport = error:5.1.1 no local delivery in this instance
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtp_dns_support_level = disabled
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
biff = no
"""
"""What every private instance shares: its own folders, loopback only, no local delivery, relaying for
127.0.0.0/8, its log in its own folder."""

_MAIN = """\
relayhost = [127.0.0.1]:{relayhost_port}
transport_maps = texthash:{root}/transport
smtp_tls_security_level = none
smtp_tls_policy_maps = texthash:{root}/tls_policy
smtp_tls_loglevel = 1
"""

# No chroot (the column after "unpriv"): the instance's files are all outside any chroot.
SERVICES = """\
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
tlsmgr unix - - n 1000? 1 tlsmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
proxywrite unix - - n - 1 proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
lmtp unix - - n - - lmtp
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
tlsproxy unix - - n - 0 tlsproxy
postlog unix-dgram n - n - 1 postlogd
"""
"""master.cf's internal services (no chroot); an instance adds its own ``inet`` listener line."""


@dataclass(frozen=True)
class Postfix:
    """A running private instance: where it listens and what it logged."""

    root: Path
    port: int

    def master_pid(self) -> int | None:
        """The master's process id (its children are the instance's daemons)."""
        return _master_pid(self.root)

    def log(self) -> str:
        return _log(self.root)

    def wait_for_log(self, text: str, count: int = 1) -> str:
        """The log once ``text`` is in it ``count`` times (postlogd writes it a moment after the fact)."""
        deadline = time.monotonic() + START_TIMEOUT
        while (log := self.log()).count(text) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not logged {count} times by postfix:\n{log}")
            time.sleep(0.05)
        return log


def free_port() -> int:
    """A loopback port free right now: Postfix binds it itself from master.cf, and the gateway must know
    it (as ``return_host``) before Postfix can know the gateway's."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@contextlib.contextmanager
def postfix_instance(*, port: int, domain: str, relayhost_port: int, sink_port: int) -> Iterator[Postfix]:
    """Start a private Postfix listening on ``port`` (see ``free_port``); stopped (``postfix -c DIR stop``)
    and its folder removed when the block ends."""
    root = instance_folder()
    try:
        (root / "main.cf").write_text(
            BASE_MAIN.format(root=root, domain=domain)
            + _MAIN.format(root=root, relayhost_port=relayhost_port),
            encoding="utf-8",
        )
        (root / "master.cf").write_text(f"{port} inet n - n - - smtpd\n{SERVICES}", encoding="utf-8")
        (root / "transport").write_text(f"{domain} smtp:[127.0.0.1]:{sink_port}\n", encoding="utf-8")
        (root / "tls_policy").write_text(f"[127.0.0.1]:{relayhost_port} encrypt\n", encoding="utf-8")
        with started(root, port) as postfix:
            yield postfix
    finally:
        shutil.rmtree(root, ignore_errors=True)


def instance_folder() -> Path:
    """A fresh folder for an instance (its queue and data folders made), for the caller to remove.

    It is under the system's temporary folder, not pytest's ``tmp_path``: Postfix's daemons run as its
    mail owner, who cannot enter pytest's private (0700) folders.
    """
    root = Path(tempfile.mkdtemp(prefix="mssgw-postfix-"))
    # mkdtemp's 0700 would keep Postfix's daemons (its mail owner) out; its data folder is that owner's.
    os.chmod(root, 0o755)  # noqa: S103 - a folder to enter, nobody but root may write into it
    (root / "queue").mkdir(mode=0o755)
    (root / "data").mkdir(mode=0o700)
    owner = pwd.getpwnam("postfix")
    os.chown(root / "data", owner.pw_uid, owner.pw_gid)
    return root


@contextlib.contextmanager
def started(root: Path, port: int) -> Iterator[Postfix]:
    """Run the instance configured in ``root`` (main.cf, master.cf listening on ``port``) for the block;
    ``postfix -c ROOT stop`` and wait for its master to be gone when the block ends."""
    assert BINARY is not None
    try:
        # ``start`` creates the queue's sub-folders itself; ``set-permissions`` is never run, as it would
        # also reset the modes of the system's Postfix programs.
        _postfix(root, "start")
        _wait_for_banner(port, root)
        yield Postfix(root, port)
    finally:
        master = _master_pid(root)
        _postfix(root, "stop", check=False)
        _wait_for_exit(master)


def _postfix(root: Path, command: str, check: bool = True) -> None:
    assert BINARY is not None
    result = subprocess.run(
        [BINARY, "-c", str(root), command], capture_output=True, text=True, timeout=60, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"postfix -c {root} {command} exited {result.returncode}:\n{result.stderr}{_log(root)}"
        )


def _wait_for_banner(port: int, root: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                if sock.recv(100).startswith(b"220"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"postfix not listening on {port} after {START_TIMEOUT}s:\n{_log(root)}")
        time.sleep(0.05)


def _log(root: Path) -> str:
    """What the instance logged (its fatal errors at start go to stderr only on a terminal)."""
    path = root / "maillog"
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


def _master_pid(root: Path) -> int | None:
    try:
        return int((root / "queue" / "pid" / "master.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _wait_for_exit(pid: int | None) -> None:
    """``postfix stop`` only signals the master: wait until it (and so this instance) is gone."""
    deadline = time.monotonic() + START_TIMEOUT
    while pid is not None and time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
