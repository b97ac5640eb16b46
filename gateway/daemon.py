"""The daemon: builds every service from the settings, runs them in one event loop, stops them in order.

Start: settings → store (schema) → services (scheduler, metrics,
trust list, certificate checks, relay — which first takes back this instance's old leases —, wake socket,
listeners and pollers) → ready
(``READY=1`` to systemd, then ``WATCHDOG=1`` from this loop). SIGTERM/SIGINT: ``STOPPING=1``; services stop
in reverse order; the relay lets deliveries in flight finish within ``gateway.shutdown_timeout`` and gives
back unfinished leases; exit 0. SIGHUP: ``RELOADING=1``; every service prepares the new settings first (TLS
material, trust list); only if all succeed do they switch, so a broken file is logged and the old
configuration stays in force; then ``READY=1``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol

from gateway import logsetup, metrics, relay_process, wake
from gateway import settings as settings_module
from gateway.certs import CertificateWatch
from gateway.channels.expiry import ChannelExpiry
from gateway.channels.steps import citizen_intake
from gateway.directory.service import DirectoryService
from gateway.errors import ConfigError, SchemaMismatch, StoreError
from gateway.file_modes import PRIVATE_DIR, make_dirs
from gateway.inbound.hl7_intake import Hl7Door
from gateway.inbound.imap_poller import ImapPoller, ingest_through
from gateway.inbound.listener import smtp_listeners
from gateway.inbound.mllp_server import MllpListener
from gateway.logsetup import log_event
from gateway.metrics import MetricsEndpoint
from gateway.outbound.mdm_sender import MdmSender
from gateway.outbound.relay import Relay
from gateway.outbound.signing import build_signer
from gateway.outbound.transports.registry import TransportRegistry
from gateway.outbound.zam_sender import ZamSender
from gateway.preflight import material_problems
from gateway.relay_process import RelayProcess
from gateway.scheduler import Scheduler
from gateway.sd_notify import Notifier
from gateway.settings import Settings
from gateway.store.db import Store, connect_store, prepare_schema
from gateway.store.faults import STORE_FAULTS, describe, is_disk_full
from gateway.store.reserve import SpaceReserve
from gateway.store_health import StoreHealth
from gateway.trust import TrustList, TrustListService

log = logging.getLogger(__name__)

PARENT_POLL = 1.0
"""Seconds between two checks, in a relay process, that its parent still runs."""

STATUS_INTERVAL = 10.0
"""Seconds between two ``STATUS=`` lines (queue depth) sent to systemd."""


def utc_now() -> datetime:
    """The daemon's clock; tests inject their own."""
    return datetime.now(UTC)


class Service(Protocol):
    """A long-running part of the daemon."""

    async def start(self) -> asyncio.Task[None] | None:
        """Start; return once ready (a listener bound). A returned task ending means the service died."""
        ...

    async def stop(self, grace: float) -> None:
        """Stop, letting work in flight finish within ``grace`` seconds."""
        ...

    def prepare_reload(self, settings: Settings) -> Callable[[], None]:
        """Check and build what ``settings`` need, raising if they cannot be used; return the switch."""
        ...


class WakeSocket:
    """The Unix datagram socket other processes ping after committing work for the relay."""

    def __init__(self, settings: Settings, on_wake: Callable[[], None]) -> None:
        self.state_dir = settings.gateway.state_dir
        self.on_wake = on_wake
        self.transport: asyncio.DatagramTransport | None = None

    async def start(self) -> None:
        self.transport = await wake.listen(self.state_dir, self.on_wake)

    async def stop(self, grace: float) -> None:
        if self.transport is not None:
            self.transport.close()

    def prepare_reload(self, settings: Settings) -> Callable[[], None]:
        return lambda: None


Role = Literal["all", "intake", "relay"]
"""What one process runs: everything, everything but the relay (the parent of a relay process), the relay."""


def build_services(
    settings: Settings,
    store: Store,
    scheduler: Scheduler,
    health: StoreHealth | None = None,
    role: Role = "all",
) -> list[Service]:
    """Every service of this gateway (or of ``role``'s share of it), in start order.

    ``trust_list`` is the one ``TrustList`` the operator listener and the relay consult; its service keeps
    it up to date. The scheduler starts first so the others can register their periodic jobs with it.
    With ``role = "intake"`` the relay runs in another process: commits wake it through the wake socket.
    """
    trust_list = TrustList()
    health = health or StoreHealth()
    metrics.SOURCES.store = store.stats.gauges
    metrics.SOURCES.store_healthy = lambda: health.up
    relay: Relay | None = None

    def wake_relay() -> None:
        """Wake the relay process after a commit (a lost ping only delays it to its next due time)."""
        wake.ping(settings.gateway.state_dir)

    if role != "intake":
        relay = Relay(
            settings,
            store.repository,
            TransportRegistry(settings),
            build_signer(settings),
            utc_now,
            # The intake's policy holds the official and local trust lists in force (reloads included).
            trusts=lambda domain: intake.trusts(domain),
            health=health,
        )
        wake_relay = relay.wake
    # The one door into the store for every inbound path, with the citizen-channel and receipt steps.
    intake, steps = citizen_intake(settings, store, utc_now, wake_relay, official=trust_list, health=health)
    # One process fetches the trust list: a relay process follows the copy its parent keeps.
    trust_service = TrustListService(settings, trust_list, scheduler, follows=role == "relay")
    if relay is not None and role == "relay":
        # The intake only for its policy (the trust lists the relay asks, reloaded with it); no listener.
        return [scheduler, trust_service, intake, relay, WakeSocket(settings, relay.wake)]
    services: list[Service] = [
        scheduler,
        MetricsEndpoint(settings),
        trust_service,
        DirectoryService(settings, store.directory, scheduler),
        CertificateWatch(settings, scheduler),
        ChannelExpiry(settings, store.channels, scheduler, utc_now),
        *([relay] if relay is not None else []),
        steps,
        intake,
    ]
    services.extend(smtp_listeners(settings, intake))
    if settings.hl7.listen:
        services.append(MllpListener(settings, Hl7Door(settings, intake, utc_now)))
    if any(p.zam_host for p in settings.hl7.producers):
        services.append(ZamSender(settings, store.zams, scheduler, utc_now))
    if settings.hl7.consumers:
        services.append(MdmSender(settings, store.mdms, scheduler, utc_now, wake_relay))
    if settings.imap.accounts:
        services.append(ImapPoller(settings, ingest_through(intake), store.imap_cursors, utc_now, health))
    if relay is not None:
        # Last, so that its socket appearing means every listener is bound (tests and scripts wait on it).
        services.append(WakeSocket(settings, relay.wake))
    return services


class Daemon:
    """One running gateway."""

    def __init__(self, config_path: Path, settings: Settings, role: Role = "all") -> None:
        self.config_path = config_path
        self.settings = settings
        self.role = role
        self.relay_process: RelayProcess | None = None
        self.services: list[Service] = []
        self._stop = asyncio.Event()
        self._reload_requested = asyncio.Event()
        self.notifier = Notifier.from_environment()
        self.store: Store | None = None
        self.health = StoreHealth(
            on_change=self._store_changed, reserve=SpaceReserve.for_store(settings.store_url)
        )

    async def run(self) -> int:
        """Run until a stop signal; the exit code for the process."""
        settings = self.settings
        make_dirs(settings.gateway.state_dir, PRIVATE_DIR)
        store = await asyncio.to_thread(connect_store, settings.store_url)
        self.store = store
        # Before the schema, which may need the room; on a full disk the start goes on without it.
        await asyncio.to_thread(self.health.room_for_intake)
        schema_later = await self._prepare(store)
        loop = asyncio.get_running_loop()
        watched: set[asyncio.Task[object]] = set()
        try:
            # Signals are handled from the start: a stop waits for the start to finish, a reload too.
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, self._stop.set)
            loop.add_signal_handler(signal.SIGHUP, self._reload_requested.set)
            scheduler = Scheduler(self.health)
            self.services = build_services(settings, store, scheduler, self.health, self.role)
            if self.role == "intake":
                # Last: started once the listeners are bound, stopped first.
                self.relay_process = RelayProcess(self.config_path, settings, self.notifier.watchdog_usec)
                self.services.append(self.relay_process)
            if self.role == "relay":
                relay_process.serve_counts()
            for service in self.services:
                started = await service.start()
                if started is not None:
                    watched.add(started)
            log_event(log, "started", owner=settings.gateway.owner, store=store.backend)
            # Every service is started (listeners bound, store open, relay running): only now is the
            # gateway ready for systemd, and the heartbeats begin.
            self.notifier.ready(await self._status("ready"))
            if self.notifier.address:
                watched.add(asyncio.create_task(self._watchdog(), name="watchdog"))
                scheduler.every("systemd-status", STATUS_INTERVAL, self._send_status)
            watched.add(asyncio.create_task(self._reloads(), name="reloads"))
            if self.role == "relay":
                watched.add(asyncio.create_task(self._parent_watch(os.getppid()), name="parent"))
            if schema_later:
                watched.add(asyncio.create_task(self._prepare_later(store), name="schema"))
            stop = asyncio.create_task(self._stop.wait())
            done, _ = await asyncio.wait({stop, *watched}, return_when=asyncio.FIRST_COMPLETED)
            for ended in done - {stop}:
                ended.result()  # a crashed service is a crashed daemon: let it raise
            stop.cancel()
            self.notifier.stopping()
            log_event(log, "stopping", timeout=self.settings.gateway.shutdown_timeout)
            for service in reversed(self.services):
                await service.stop(self.settings.gateway.shutdown_timeout)
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)
            for running in watched:
                running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*watched, return_exceptions=True)
            store.close()
        log_event(log, "stopped")
        # A relay process that failed its own orderly stop fails the gateway's (systemd sees it).
        return 0 if self.relay_process is None or self.relay_process.stopped_cleanly else 1

    async def _prepare(self, store: Store) -> bool:
        """Prepare the schema; True if that must wait for room on a full disk (the start goes on)."""
        try:
            await asyncio.to_thread(prepare_schema, store)
        except StoreError as error:
            if isinstance(error, SchemaMismatch) or not is_disk_full(error):
                store.close()
                raise
            # A full disk must not keep the gateway down: it answers 452 and delivers what it can.
            self.health.failed("open-store", error)
            return True
        return False

    async def _prepare_later(self, store: Store) -> None:
        """Prepare the schema once the disk has room; a schema of another version ends the daemon."""
        await self.health.retry("open-store", lambda: asyncio.to_thread(prepare_schema, store))
        await asyncio.Event().wait()

    async def _reloads(self) -> None:
        """Reload on each SIGHUP (one received while starting is served once the start is done)."""
        while True:
            await self._reload_requested.wait()
            self._reload_requested.clear()
            self._reload()

    def _reload(self) -> None:
        self.notifier.reloading()
        try:
            fresh = settings_module.load(self.config_path)
            problems = material_problems(fresh)
            if problems:
                raise ConfigError(fresh.source, problems)
            switches = [service.prepare_reload(fresh) for service in self.services]
        except (ConfigError, OSError, ValueError) as error:
            log_event(log, "reload-refused", logging.ERROR, reason=str(error).replace("\n", " "))
            self.notifier.ready("reload refused, running on the previous configuration (see the log)")
            return
        for switch in switches:
            switch()
        self.settings = fresh
        logsetup.configure(fresh.logging)
        log_event(log, "reloaded")
        self.notifier.ready("reloaded")

    async def _parent_watch(self, parent: int) -> None:
        """Stop (in order, giving leases back) when the gateway that started this relay process is gone:
        killed outright, it could not forward the stop."""
        while os.getppid() == parent:  # noqa: ASYNC110 - the kernel reparents us: no event to wait on
            await asyncio.sleep(PARENT_POLL)
        log_event(log, "parent-gone", logging.WARNING, parent=parent)
        self._stop.set()
        await asyncio.Event().wait()

    async def _watchdog(self) -> None:
        """``WATCHDOG=1`` at half ``WatchdogSec=``, from the event loop itself: a blocked loop stops the
        pings and systemd restarts the daemon."""
        interval = self.notifier.watchdog_interval
        while interval is not None:
            self.notifier.watchdog()
            await asyncio.sleep(interval)
        await asyncio.Event().wait()

    async def _send_status(self) -> None:
        self.notifier.status(await self._status("running"))

    def _store_changed(self, up: bool, reason: str) -> None:
        """Tell systemd at once when the store goes away or comes back, not at the next status tick."""
        if up:
            self.notifier.status("running: store available again")
        else:
            self.notifier.status(f"degraded: store unavailable ({reason}), mail refused with 451, retrying")

    async def _status(self, state: str) -> str:
        """``running: queue 3 queued, 1 deferred, 0 sending, 0 held`` for ``systemctl status``."""
        assert self.store is not None
        try:
            depth = await asyncio.to_thread(self.store.repository.queue_depth)
        except STORE_FAULTS as error:
            return f"{state}, degraded: store unavailable ({describe(error)}), retrying"
        counts = ", ".join(f"{depth.get(s, 0)} {s}" for s in ("queued", "deferred", "sending", "held"))
        if not self.health.up:
            cause = "disk full" if self.health.disk_full else "writes fail"
            return f"{state}, degraded: store {cause}, retrying; queue {counts}"
        return f"{state}: queue {counts}"
