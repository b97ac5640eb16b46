"""The gateway as a user runs it: a config file, ``mssgw`` commands and ``mssgw run`` as a subprocess.

System tests drive the real command line (``python -m gateway``) so they see exit codes, stdout and stderr
exactly as a sysadmin does; readiness is the wake socket appearing, never a fixed sleep.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.dkim import DkimKey
from tests.support.fake_operator import FakeOperator
from tests.support.pki import Pki

START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
HOSTNAME = "mssgw.hopital.test.mssante.fr"
SENDER = "secretariat.cardio@hopital.test.mssante.fr"
_SUBMISSION_LISTENING = re.compile(r"event=listening listener=submission address=127\.0\.0\.1:(\d+)")


def toml_value(value: Any) -> str:
    """A TOML literal for the few value types test configs use."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def render_config(sections: dict[str, dict[str, Any]], routes: list[dict[str, Any]] | None = None) -> str:
    """Write sections (and ``[[routes]]``) as TOML; a list of tables becomes ``[[section.key]]`` tables."""
    lines: list[str] = []
    for name, values in sections.items():
        tables = {k: v for k, v in values.items() if isinstance(v, list) and v and isinstance(v[0], dict)}
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in values.items() if key not in tables)
        lines.append("")
        for key, items in tables.items():
            for item in items:
                lines.append(f"[[{name}.{key}]]")
                lines.extend(f"{k} = {toml_value(v)}" for k, v in item.items())
                lines.append("")
    for route in routes or []:
        lines.append("[[routes]]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in route.items())
        lines.append("")
    return "\n".join(lines)


@dataclass
class Gateway:
    """One gateway installation in a temporary folder."""

    directory: Path
    sections: dict[str, dict[str, Any]]
    routes: list[dict[str, Any]] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    runs: int = 0

    @property
    def config(self) -> Path:
        return self.directory / "mssgw.toml"

    @property
    def state_dir(self) -> Path:
        return Path(self.sections["gateway"]["state_dir"])

    @property
    def log(self) -> Path:
        return self.directory / f"mssgw-run-{self.runs}.log"

    def write(self) -> Path:
        self.config.write_text(render_config(self.sections, self.routes), encoding="utf-8")
        return self.config

    def command(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``mssgw ARGS -c <config>`` and return what it printed."""
        result = subprocess.run(
            [sys.executable, "-m", "gateway", *args, "-c", str(self.config)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"mssgw {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.command(*args, "--json").stdout)

    def send(self, *args: str) -> int:
        """``mssgw send …``; the queue id it printed."""
        return int(self.command("send", *args).stdout.strip())

    def start(self, env: dict[str, str] | None = None, umask: int = -1) -> subprocess.Popen[bytes]:
        """Start ``mssgw run`` (with ``env`` added to the environment, under ``umask`` when given) and
        return once it listens on its wake socket."""
        assert self.process is None, "already running"
        self.runs += 1
        socket_path = self.state_dir / "wake.sock"
        if socket_path.exists():
            socket_path.unlink()
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway", "run", "-c", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                umask=umask,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not socket_path.exists():
            if self.process.poll() is not None:
                raise AssertionError(f"mssgw run exited {self.process.returncode}:\n{self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"mssgw run not ready after {START_TIMEOUT}s:\n{self.output()}")
            time.sleep(0.02)
        return self.process

    def stop(self) -> int:
        """SIGTERM, and the exit code once it has drained."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(STOP_TIMEOUT)
        self.process = None
        return code

    def kill(self) -> int:
        """SIGKILL: the daemon gets no chance to tidy up. The exit code (-9 unless it had already died)."""
        assert self.process is not None
        self.process.kill()
        code = self.process.wait(STOP_TIMEOUT)
        self.process = None
        return code

    def peak_rss(self) -> int:
        """The running daemon's peak resident memory so far, in bytes (``VmHWM``, as the kernel counts it)."""
        assert self.process is not None
        status = Path(f"/proc/{self.process.pid}/status").read_text(encoding="ascii")
        found = re.search(r"^VmHWM:\s+(\d+) kB$", status, re.MULTILINE)
        assert found, status
        return int(found.group(1)) * 1024

    def reload(self) -> None:
        """SIGHUP, as ``systemctl reload`` sends it."""
        assert self.process is not None
        self.process.send_signal(signal.SIGHUP)

    def wait_for_output(self, text: str, count: int = 1, timeout: float = START_TIMEOUT) -> str:
        """The log once ``text`` appears ``count`` times (bounded polling: another process writes it)."""
        deadline = time.monotonic() + timeout
        while (output := self.output()).count(text) < count:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"mssgw run exited {self.process.returncode}:\n{output}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not logged {count} times within {timeout}s:\n{output}")
            time.sleep(0.02)
        return output

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""

    def cleanup(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(STOP_TIMEOUT)
        self.process = None


def gateway_for(
    directory: Path,
    pki: Pki,
    operator: FakeOperator | None,
    *,
    store_url: str = "",
    dkim_key: DkimKey | None = None,
    relay: dict[str, Any] | None = None,
) -> Gateway:
    """A client-mode gateway whose smarthost is ``operator`` (or a closed port when None)."""
    directory.mkdir(parents=True, exist_ok=True)
    sections: dict[str, dict[str, Any]] = {
        "gateway": {
            "hostname": HOSTNAME,
            "state_dir": str(directory / "state"),
            "nil_reference": "DEV935997",
            "postmaster": "postmaster@hopital.test.mssante.fr",
            "shutdown_timeout": "10s",
        },
        "store": {"url": store_url},
        "tls": {
            "ca_bundle": str(pki.ca),
            "client_certificate": str(pki.client.cert),
            "client_key": str(pki.client.key),
        },
        "smarthost": {
            "host": "127.0.0.1",
            "port": operator.port if operator is not None else closed_port(),
            "security": "starttls",
        },
        "relay": {
            "retry_schedule": ["200ms"],
            "connect_timeout": "5s",
            "command_timeout": "10s",
            "lease": "60s",
            **(relay or {}),
        },
    }
    if dkim_key is not None:
        sections["dkim"] = {
            "domain": dkim_key.domain,
            "selector": dkim_key.selector,
            "private_key_file": str(dkim_key.private_key),
            "algorithm": dkim_key.algorithm.decode("ascii"),
        }
    gateway = Gateway(directory, sections)
    gateway.write()
    return gateway


def folder_config(directory: Path, documents: dict[str, str] | None = None, **gateway: Any) -> Path:
    """``directory/mssgw.toml``: state in ``directory/state``, every message into the folder ``out``;
    ``gateway`` adds keys to ``[gateway]``, ``documents`` is the ``[documents]`` section."""
    path = directory / "mssgw.toml"
    sections: dict[str, Any] = {"gateway": {"state_dir": str(directory / "state"), **gateway}}
    if documents:
        sections["documents"] = documents
    route = {"domain": "*", "transport": "folder", "path": str(directory / "out")}
    path.write_text(render_config(sections, [route]), encoding="utf-8")
    return path


PATIENT_FILE = {
    "matricule": "279035121518989",
    "oid": "1.2.250.1.213.1.4.8",
    "birth_name": "PAT-TROIS",
    "given_name": "DOMINIQUE",
    "birth_date": "1979-03-28",
    "sex": "F",
}
"""The ``--patient`` file of PAT-TROIS Dominique (MSSANTE.md §5.7), as ``mssgw send`` reads it."""


def patient_file(directory: Path, **changes: str) -> str:
    """``directory/patient.json``: :data:`PATIENT_FILE` with ``changes``; its path."""
    path = directory / "patient.json"
    path.write_text(json.dumps({**PATIENT_FILE, **changes}), encoding="utf-8")
    return str(path)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def submission_section(pki: Pki, clients: list[dict[str, Any]], **options: Any) -> dict[str, Any]:
    """A ``[submission]`` listener on an ephemeral loopback port with the test PKI's server certificate."""
    return {
        "listen": ["127.0.0.1:0"],
        "certificate": str(pki.server.cert),
        "key": str(pki.server.key),
        **options,
        "clients": clients,
    }


def submission_port(gateway: Gateway) -> int:
    """The port the running gateway's submission listener bound (it logs it once listening)."""
    found = _SUBMISSION_LISTENING.search(gateway.wait_for_output("listener=submission"))
    assert found, gateway.output()
    return int(found.group(1))


def operator_mode(gateway: Gateway, pki: Pki, operator: FakeOperator) -> None:
    """``gateway`` as a hospital that is its own operator: every domain relayed to ``operator``, and the
    port-25 listener (on an ephemeral port) taking mail from the other operators."""
    gateway.sections["gateway"].update(mode="operator", test_mode=True)
    gateway.routes.append({"domain": "*", "transport": "smtp", "host": "127.0.0.1", "port": operator.port})
    gateway.sections["operator_listener"] = {
        "listen": ["127.0.0.1:0"],
        "certificate": str(pki.server.cert),
        "key": str(pki.server.key),
    }
