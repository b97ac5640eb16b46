"""A private PostgreSQL cluster for outage tests: ``initdb`` in a temporary folder, on an ephemeral port.

Outage tests stop and restart the database under a running gateway; they must never touch the machine's
shared server, so each gets a cluster of its own (the Debian server binaries under
``/usr/lib/postgresql/*/bin``). ``initdb`` refuses to run as root: as root the cluster belongs to the
``postgres`` system user (``runuser``), with the folder handed over to it.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT = 60


def server_binaries() -> Path | None:
    """The newest installed PostgreSQL server's ``bin`` folder (None if no server is installed)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass
class PgCluster:
    """One cluster: ``start``, ``stop`` (fast shutdown, as a restart or failover looks to clients)."""

    bin: Path
    directory: Path
    port: int
    user: str | None
    """The system user running the server when the tests run as root."""

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def data(self) -> Path:
        return self.directory / "data"

    def _run(self, args: Sequence[str]) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=START_TIMEOUT, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed ({result.returncode}): {result.stderr.strip()}")

    def init(self) -> PgCluster:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.directory, entry.pw_uid, entry.pw_gid)
        self._run(["initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8"])
        return self

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.directory} -c fsync=off"
        log = str(self.directory / "log")
        self._run(["pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "start"])

    def stop(self) -> None:
        self._run(["pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop"])

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


def new_cluster(directory: Path) -> PgCluster:
    """An initialised, started cluster under ``directory``; raises ``RuntimeError`` if that fails."""
    binaries = server_binaries()
    if binaries is None:
        raise RuntimeError("no PostgreSQL server installed (/usr/lib/postgresql/*/bin/initdb)")
    user = "postgres" if os.geteuid() == 0 else None
    cluster = PgCluster(binaries, directory, _free_port(), user).init()
    cluster.start()
    return cluster
