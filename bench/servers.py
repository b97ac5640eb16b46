"""The servers under test, each started fresh for one run and stopped by PID at its end.

Postfix at its best: disk queue with its default fsync, relaying everything to the sink with
``smtp_tls_security_level = secure``, the bench client certificate and ``smtp_tls_connection_reuse = yes``
(which hands TLS to ``tlsproxy``, present in the shared master.cf). mssgw: ``python -m gateway run`` with a
generated config, a submission listener letting 127.0.0.1 in without STARTTLS or AUTH (smtp-source speaks
neither, and Postfix's smtpd takes it in plain text too), the sink as its smarthost (STARTTLS, client
certificate), on SQLite in a fresh state folder or in a fresh PostgreSQL schema. Everything else is left
at its defaults.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.procstat import peak_rss, tree_cpu_seconds
from tests.support.gateway import HOSTNAME, Gateway, submission_port, submission_section
from tests.support.pg import temporary_schema
from tests.support.pki import Pki
from tests.support.postfix import BASE_MAIN, SERVICES, free_port, instance_folder, started

OUR_DOMAIN = "hopital.test.mssante.fr"
SERVERS = ("postfix", "mssgw-sqlite", "mssgw-pg", "mssgw-sqlite-2p", "mssgw-pg-2p")
"""``-2p``: ``gateway.relay_process = true``, the relay in a second process."""

_POSTFIX_MAIN = """\
relayhost = [127.0.0.1]:{sink_port}
smtp_tls_security_level = secure
smtp_tls_secure_cert_match = localhost
smtp_tls_CAfile = {pki.ca}
smtp_tls_cert_file = {pki.client.cert}
smtp_tls_key_file = {pki.client.key}
smtp_tls_connection_reuse = yes
smtp_tls_loglevel = 0
"""


@dataclass(frozen=True)
class Running:
    """A started server: where smtp-source connects, the PID whose tree is measured, whether RSS counts."""

    name: str
    port: int
    pid: int
    measure_rss: bool

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.pid)

    def peak_rss(self) -> int | None:
        return peak_rss(self.pid) if self.measure_rss else None


@contextlib.contextmanager
def server(name: str, pki: Pki, sink_port: int, senders: int, pg_url: str) -> Iterator[Running]:
    """Start server ``name`` (one of ``SERVERS``) relaying to the sink for the block."""
    if name == "postfix":
        with postfix(pki, sink_port) as running:
            yield running
    else:
        with (
            temporary_schema(pg_url)
            if name.startswith("mssgw-pg")
            else contextlib.nullcontext("") as store_url,
            mssgw(name, pki, sink_port, senders, store_url) as running,
        ):
            yield running


@contextlib.contextmanager
def postfix(pki: Pki, sink_port: int) -> Iterator[Running]:
    root = instance_folder()
    port = free_port()
    try:
        (root / "main.cf").write_text(
            BASE_MAIN.format(root=root, domain=OUR_DOMAIN)
            + _POSTFIX_MAIN.format(pki=pki, sink_port=sink_port),
            encoding="utf-8",
        )
        (root / "master.cf").write_text(f"{port} inet n - n - - smtpd\n{SERVICES}", encoding="utf-8")
        with started(root, port) as instance:
            master = instance.master_pid()
            assert master is not None, instance.log()
            yield Running("postfix", port, master, measure_rss=False)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def mssgw(name: str, pki: Pki, sink_port: int, senders: int, store_url: str) -> Iterator[Running]:
    directory = Path(tempfile.mkdtemp(prefix="mssgw-bench-gw-"))
    client = {"name": "bench", "senders": [f"@{OUR_DOMAIN}"], "networks": ["127.0.0.1/32"]}
    sections = {
        "gateway": {
            "hostname": HOSTNAME,
            "state_dir": str(directory / "state"),
            "nil_reference": "DEV935997",
            "postmaster": f"postmaster@{OUR_DOMAIN}",
            "relay_process": name.endswith("-2p"),
        },
        "store": {"url": store_url},
        "tls": {
            "ca_bundle": str(pki.ca),
            "client_certificate": str(pki.client.cert),
            "client_key": str(pki.client.key),
        },
        "smarthost": {"host": "127.0.0.1", "port": sink_port, "security": "starttls"},
        # One connection per message from one address: the per-peer cap must let every sender in.
        "inbound": {
            "domains": [OUR_DOMAIN],
            "connections_per_peer": senders,
            "max_connections": senders + 50,
        },
        "submission": submission_section(pki, [client], require_starttls=False),
    }
    gateway = Gateway(directory, sections)
    gateway.write()
    try:
        process = gateway.start()
        yield Running(name, submission_port(gateway), process.pid, measure_rss=True)
        gateway.stop()
    finally:
        gateway.cleanup()
        shutil.rmtree(directory, ignore_errors=True)
