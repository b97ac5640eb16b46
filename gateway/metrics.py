"""Prometheus metrics: every metric of the gateway is defined here, with small functions to record them.

Inbound listeners, the IMAP bridge, the relay and the scheduler jobs call ``message_accepted``,
``delivery_recorded``, ``imap_lag`` …; gauges read from the store (queue depth, oldest queued age, channels)
and the trust-list age are computed at scrape time in the HTTP server's thread, never on the event loop.
Labels are bounded sets (listener names, short reason codes, states): never an address, subject or id.

With ``gateway.relay_process`` the relay counts in its own process: the endpoint asks it for its counts at
each scrape (``COUNTS.elsewhere``, see ``gateway.relay_process``) and serves the sums, so one scrape of
``mssgw run`` still says everything.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.errors import StoreError
from gateway.logsetup import log_event
from gateway.settings import Settings
from gateway.settings_checks import split_host_port
from gateway.store.stats import StoreGauges

log = logging.getLogger(__name__)

COUNTED = CollectorRegistry()
"""What this process counts itself (every counter, histogram and gauge below): what a relay process sends."""

MESSAGES_ACCEPTED = Counter(
    "mssgw_messages_accepted",
    "Messages committed to the store, by entry point",
    ["listener"],
    registry=COUNTED,
)
MESSAGES_REFUSED = Counter(
    "mssgw_messages_refused",
    "Messages or recipients refused, by entry point and short reason code",
    ["listener", "reason"],
    registry=COUNTED,
)
HL7_MESSAGES = Counter(
    "mssgw_hl7_messages",
    'HL7 messages answered on the MLLP listener, by producer ("unknown" when not configured), ACK code '
    "(AA, AE, AR) and table 0357 code",
    ["producer", "ack", "code"],
    registry=COUNTED,
)
HL7_ZAMS = Counter(
    "mssgw_hl7_zams",
    "ZAM sent to HL7 producers, by event (Z02, Z03) and outcome (acked: the producer's AA; deferred: another "
    "code, no ACK or no connection, sent again later)",
    ["kind", "outcome"],
    registry=COUNTED,
)
HL7_CONSUMER_MESSAGES = Counter(
    "mssgw_hl7_consumer_messages",
    "MDM sends to HL7 consumers, by consumer and outcome: the ACK code (AA, AE, AR, CA, CE, CR), deferred "
    "(no connection or no ACK, sent again later) or unanswered (retries spent: the sender gets a 906 MDN)",
    ["consumer", "outcome"],
    registry=COUNTED,
)
AUTH_FAILURES = Counter(
    "mssgw_auth_failures",
    "Failed AUTH logins on the submission listener (wrong login or password)",
    ["listener"],
    registry=COUNTED,
)
DELIVERIES = Counter(
    "mssgw_deliveries",
    "Delivery attempts by outcome (sent, deferred, failed, held)",
    ["outcome"],
    registry=COUNTED,
)
RETRIES = Counter(
    "mssgw_delivery_retries",
    "Delivery attempts after the first one (retries and re-sends)",
    registry=COUNTED,
)
DELIVERY_LATENCY = Histogram(
    "mssgw_delivery_latency_seconds",
    "From acceptance into the store to the next hop's 250",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400),
    registry=COUNTED,
)
IMAP_LAG = Gauge(
    "mssgw_imap_lag_seconds",
    "Seconds since the IMAP bridge last caught up with each account",
    ["account"],
    registry=COUNTED,
)
CERTIFICATE_DAYS = Gauge(
    "mssgw_certificate_expiry_days",
    "Days until a configured certificate expires (negative: expired)",
    ["key", "path"],
    registry=COUNTED,
)

DIRECTORY_UNKNOWN = Counter(
    "mssgw_directory_unknown_recipients",
    "MSSante recipients absent from the national directory, by check mode (warn: sent, refuse: refused)",
    ["mode"],
    registry=COUNTED,
)


def directory_unknown(mode: str) -> None:
    """A recipient at an MSSante domain was not in the national directory (``mode``: warn or refuse)."""
    DIRECTORY_UNKNOWN.labels(mode).inc()


def message_accepted(listener: str) -> None:
    """A message from ``listener`` (``submission``, ``operator``, ``imap``, ``cli`` …) was committed."""
    MESSAGES_ACCEPTED.labels(listener).inc()


def hl7_answered(producer: str, ack: str, code: int) -> None:
    """One ACK sent to an HL7 producer; producers are configured, so the label set stays bounded."""
    HL7_MESSAGES.labels(producer, ack, str(code)).inc()


def zam_sent(kind: str, outcome: str) -> None:
    """One ZAM exchange with its producer ended ``acked`` or ``deferred``."""
    HL7_ZAMS.labels(kind, outcome).inc()


def hl7_consumer_message(consumer: str, outcome: str) -> None:
    """One MDM send to ``consumer`` ended with ``outcome`` (configured consumers: a bounded label set)."""
    HL7_CONSUMER_MESSAGES.labels(consumer, outcome).inc()


def message_refused(listener: str, reason: str) -> None:
    """A message or recipient was refused; ``reason`` is a short code (``auth``, ``trust-list``, ``size``)."""
    MESSAGES_REFUSED.labels(listener, reason).inc()


def auth_failed(listener: str) -> None:
    """A client of ``listener`` gave a wrong login or password."""
    AUTH_FAILURES.labels(listener).inc()


def delivery_recorded(outcome: str, attempt: int, latency: float | None = None) -> None:
    """One delivery attempt ended with ``outcome``; ``latency`` (seconds since acceptance) when sent."""
    DELIVERIES.labels(outcome).inc()
    if attempt > 1:
        RETRIES.inc()
    if latency is not None:
        DELIVERY_LATENCY.observe(max(latency, 0.0))


def imap_lag(account: str, seconds: float) -> None:
    """How far the IMAP bridge is behind on ``account``."""
    IMAP_LAG.labels(account).set(seconds)


def certificate_expiry(key: str, path: str, days: float) -> None:
    """Days left on the certificate at ``path`` named by the setting ``key``."""
    CERTIFICATE_DAYS.labels(key, path).set(days)


class _Sources(Collector):
    """Gauges computed when Prometheus scrapes, from callables the daemon registers."""

    def __init__(self) -> None:
        self.store: Callable[[], StoreGauges] | None = None
        self.store_healthy: Callable[[], bool] = lambda: True
        """False while the daemon's own store calls fail (writes on a full disk, though reads answer)."""
        self.trust_list_loaded: Callable[[], datetime | None] | None = None

    def collect(self) -> Iterable[Metric]:
        return list(self._collect(datetime.now(UTC)))

    def _collect(self, now: datetime) -> Iterator[Metric]:
        gauges: StoreGauges | None = None
        if self.store is not None:
            try:
                gauges = self.store()
            except StoreError as error:
                log_event(log, "metrics-store-unavailable", logging.WARNING, reason=str(error))
            up = 1 if gauges is not None and self.store_healthy() else 0
            yield GaugeMetricFamily(
                "mssgw_store_up",
                "Whether the store answered this scrape and the daemon's last call",
                value=up,
            )
        if gauges is not None:
            depth = GaugeMetricFamily(
                "mssgw_queue_depth", "Deliveries still to do, by state", labels=["state"]
            )
            for state in ("queued", "deferred", "sending", "held"):
                depth.add_metric([state], gauges.queue_depth.get(state, 0))
            yield depth
            oldest = gauges.oldest_waiting
            yield GaugeMetricFamily(
                "mssgw_queue_oldest_age_seconds",
                "Age of the oldest delivery still waiting (0 when the queue is empty)",
                value=(now - oldest).total_seconds() if oldest else 0.0,
            )
            channels = GaugeMetricFamily("mssgw_channels", "Citizen channels by state", labels=["state"])
            for state, count in sorted(gauges.channels.items()):
                channels.add_metric([state], count)
            yield channels
            zams = GaugeMetricFamily(
                "mssgw_hl7_zams_pending",
                "ZAM owed to HL7 producers and not yet acknowledged, by event (the backlog)",
                labels=["kind"],
            )
            for kind in ("Z02", "Z03"):
                zams.add_metric([kind], gauges.zams_pending.get(kind, 0))
            yield zams
            pending = GaugeMetricFamily(
                "mssgw_hl7_consumer_pending",
                "MDMs not yet acknowledged by each HL7 consumer",
                labels=["consumer"],
            )
            oldest_mdm = GaugeMetricFamily(
                "mssgw_hl7_consumer_oldest_age_seconds",
                "Age of the oldest MDM each HL7 consumer has not acknowledged",
                labels=["consumer"],
            )
            for consumer, (count, since) in sorted(gauges.mdm_pending.items()):
                pending.add_metric([consumer], count)
                oldest_mdm.add_metric([consumer], (now - since).total_seconds() if since else 0.0)
            yield pending
            yield oldest_mdm
        if self.trust_list_loaded is not None:
            loaded = self.trust_list_loaded()
            # Never loaded is as old as can be: an alert on the age fires, and on loaded == 0 too.
            yield GaugeMetricFamily(
                "mssgw_trust_list_loaded",
                "Whether a trust list is in force (0: none was ever loaded)",
                value=0 if loaded is None else 1,
            )
            yield GaugeMetricFamily(
                "mssgw_trust_list_age_seconds",
                "Age of the trust list in force (+Inf: none loaded)",
                value=(now - loaded).total_seconds() if loaded else float("inf"),
            )


SOURCES = _Sources()


def counted_json() -> bytes:
    """This process's counts, for the process that serves ``/metrics`` (``_created`` times included)."""
    families = [
        [f.name, f.documentation, f.type, f.unit, [[s.name, s.labels, s.value] for s in f.samples]]
        for f in COUNTED.collect()
    ]
    return json.dumps(families, allow_nan=True).encode()


def families_from_json(data: bytes) -> list[Metric]:
    """The families ``counted_json`` wrote (in another process of this gateway)."""
    families = []
    for name, documentation, kind, unit, samples in json.loads(data):
        family = Metric(name, documentation, kind, unit)
        for sample, labels, value in samples:
            family.add_sample(sample, labels, value)
        families.append(family)
    return families


def merged(own: Iterable[Metric], other: Iterable[Metric]) -> list[Metric]:
    """One family per name, as Prometheus wants: counts and histograms summed, the earliest ``_created``,
    and for a gauge this process's value unless only ``other`` has it."""
    families: dict[str, Metric] = {}
    for family in own:
        families[family.name] = family
    for family in other:
        mine = families.get(family.name)
        if mine is None:
            families[family.name] = family
            continue
        values = {(s.name, tuple(sorted(s.labels.items()))): s for s in mine.samples}
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            found = values.get(key)
            if found is None:
                values[key] = sample
            elif sample.name.endswith("_created"):
                values[key] = found._replace(value=min(found.value, sample.value))
            elif mine.type != "gauge":
                values[key] = found._replace(value=found.value + sample.value)
        mine.samples = list(values.values())
    return list(families.values())


class _Counts(Collector):
    """This process's counts, plus those of the relay process when there is one."""

    def __init__(self) -> None:
        self.elsewhere: Callable[[], list[Metric]] | None = None
        """The relay process's families (none when it cannot answer), set while it runs."""

    def collect(self) -> Iterable[Metric]:
        elsewhere = self.elsewhere
        return merged(COUNTED.collect(), elsewhere() if elsewhere is not None else [])


COUNTS = _Counts()
REGISTRY = CollectorRegistry()
"""Everything ``/metrics`` serves."""
REGISTRY.register(COUNTS)
REGISTRY.register(SOURCES)


class MetricsEndpoint:
    """The HTTP endpoint (``metrics.listen``) Prometheus scrapes; a daemon service."""

    def __init__(self, settings: Settings) -> None:
        self.listen = settings.metrics.listen
        self._server: tuple[WSGIServer, threading.Thread] | None = None

    async def start(self) -> None:
        self._server = self._bind(self.listen)

    def _bind(self, listen: str) -> tuple[WSGIServer, threading.Thread] | None:
        if not listen:
            return None
        host, port = split_host_port(listen)
        server, thread = _serve(host, port)
        shown = f"[{host}]" if ":" in host else host
        log_event(log, "metrics-listening", address=f"{shown}:{server.server_port}")
        return server, thread

    async def stop(self, grace: float) -> None:
        _close(self._server)
        self._server = None

    def prepare_reload(self, settings: Settings) -> Callable[[], None]:
        """Move the endpoint if ``metrics.listen`` changed; a port that cannot be bound keeps the old one."""
        listen = settings.metrics.listen

        def apply() -> None:
            if listen == self.listen:
                return
            try:
                fresh = self._bind(listen)
            except OSError as error:
                log_event(log, "metrics-bind-failed", logging.ERROR, address=listen, reason=str(error))
                return
            _close(self._server)
            self._server, self.listen = fresh, listen

        return apply


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """A scrape is not an event: nothing on stderr."""


def _only_metrics(app: WSGIApplication) -> WSGIApplication:
    """``/metrics`` and nothing else: any other path is a 404, not the metrics under another name."""

    def serve(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"Not found: the metrics are at /metrics\n"]
        return app(environ, start_response)

    return serve


def _serve(host: str, port: int) -> tuple[WSGIServer, threading.Thread]:
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    bound = type("_BoundServer", (_Server,), {"address_family": family})
    app = _only_metrics(make_wsgi_app(REGISTRY))
    server: WSGIServer = make_server(host, port, app, bound, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="metrics", daemon=True)
    thread.start()
    return server, thread


def _close(server: tuple[WSGIServer, threading.Thread] | None) -> None:
    if server is not None:
        server[0].shutdown()
        server[0].server_close()
        server[1].join()
