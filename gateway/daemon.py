"""The daemon: builds every component from the settings, runs them in one event loop, stops them in order.

Start: settings → store (schema) → take back this instance's old leases → relay → wake socket → ready.
SIGTERM/SIGINT: stop claiming, let deliveries in flight finish within ``gateway.shutdown_timeout``, give back
unfinished leases, exit 0. SIGHUP: re-read the settings; a broken file is logged and the old one stays.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from datetime import UTC, datetime
from pathlib import Path

from gateway import logsetup, wake
from gateway import settings as settings_module
from gateway.errors import ConfigError
from gateway.logsetup import log_event
from gateway.outbound.relay import Relay
from gateway.outbound.signing import DkimSigner
from gateway.outbound.transports.registry import TransportRegistry
from gateway.settings import Settings
from gateway.store.db import open_store

log = logging.getLogger(__name__)


def utc_now() -> datetime:
    """The daemon's clock; tests inject their own."""
    return datetime.now(UTC)


def build_signer(settings: Settings) -> DkimSigner | None:
    """The DKIM signer, when a key is configured."""
    return DkimSigner(settings.dkim) if settings.dkim.enabled else None


class Daemon:
    """One running gateway."""

    def __init__(self, config_path: Path, settings: Settings) -> None:
        self.config_path = config_path
        self.settings = settings
        self._stop = asyncio.Event()

    async def run(self) -> int:
        """Run until a stop signal; the exit code for the process."""
        settings = self.settings
        settings.gateway.state_dir.mkdir(parents=True, exist_ok=True)
        store = await asyncio.to_thread(open_store, settings.store_url)
        repository = store.repository
        recovered = await asyncio.to_thread(
            repository.recover_owner, settings.gateway.owner, utc_now(), settings.relay.crash_limit
        )
        relay = Relay(settings, repository, TransportRegistry(settings), build_signer(settings), utc_now)
        relay_task = asyncio.create_task(relay.run(), name="relay")
        wake_transport = await wake.listen(settings.gateway.state_dir, relay.wake)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload, relay)
        log_event(
            log,
            "started",
            owner=settings.gateway.owner,
            recovered_leases=recovered,
            store=store.backend,
        )
        try:
            stop = asyncio.create_task(self._stop.wait())
            done, _ = await asyncio.wait({stop, relay_task}, return_when=asyncio.FIRST_COMPLETED)
            if relay_task in done:
                relay_task.result()  # a crashed relay is a crashed daemon: let it raise
            log_event(log, "stopping", timeout=self.settings.gateway.shutdown_timeout)
            await relay.stop(self.settings.gateway.shutdown_timeout)
            relay_task.cancel()
            await asyncio.gather(relay_task, return_exceptions=True)
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(signum)
            wake_transport.close()
            store.close()
        log_event(log, "stopped")
        return 0

    def _reload(self, relay: Relay) -> None:
        try:
            fresh = settings_module.load(self.config_path)
            transports = TransportRegistry(fresh)
            signer = build_signer(fresh)
        except (ConfigError, OSError, ValueError) as error:
            log_event(log, "reload-refused", logging.ERROR, reason=str(error).replace("\n", " "))
            return
        old = relay.transports
        relay.reload(fresh, transports, signer)
        self.settings = fresh
        logsetup.configure(fresh.logging)
        asyncio.get_running_loop().create_task(old.close())
        log_event(log, "reloaded")
