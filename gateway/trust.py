"""The MSSanté trust list in force: fetched (file or HTTPS), kept as the last good copy, refreshed on time.

Parsing is ``mappers.trustlist`` (pure); this module does the I/O: reads the copy in ``state_dir``, fetches
a new one over HTTPS verified against the configured CA bundle, replaces the copy only with a list that
parses and is not empty, and says what changed. ``TrustList`` is what the operator listener and the relay
ask; a refresh or a reload changes its contents in place, so holders of the object always see the list
in force. It never decides anything about a message itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import tempfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from gateway import metrics
from gateway.errors import InputError
from gateway.logsetup import log_event
from gateway.scheduler import Scheduler
from gateway.settings import Settings
from mappers.trustlist import ParsedTrustList, TrustListError, normalise_domain, parse_trust_list

log = logging.getLogger(__name__)

TRUST_FILE = "trustlist.xml"
FOLLOW_INTERVAL = 5.0
"""Seconds between two looks, in a relay process, at whether its parent replaced the last good copy."""
_MAX_SIZE = 20 * 1024 * 1024


class TrustList:
    """The set of MSSanté domains mail may be exchanged with.

    Interface for the operator-mode listener (sender domain on receipt) and the relay (recipient domain
    before sending): ``is_trusted(domain)`` compares IDNA-normalised, case-insensitively, without a
    trailing dot, so ``Hôpital.FR.`` matches ``xn--hpital-sua.fr``. An empty list (none loaded yet)
    trusts nobody. ``loaded_at`` is when the list in force was fetched. Safe to call from any thread.
    """

    def __init__(self, domains: frozenset[str] = frozenset(), loaded_at: datetime | None = None) -> None:
        self._domains = domains
        self.loaded_at = loaded_at

    def is_trusted(self, domain: str) -> bool:
        """Whether ``domain`` (Unicode or A-labels, any case) is on the list."""
        try:
            return normalise_domain(domain) in self._domains
        except TrustListError:
            return False

    @property
    def domains(self) -> frozenset[str]:
        return self._domains

    def replace(self, domains: frozenset[str], loaded_at: datetime | None) -> None:
        """Put another list in force (one assignment: readers see the old or the new set, never a mix)."""
        self._domains, self.loaded_at = domains, loaded_at


@dataclass(frozen=True, slots=True)
class TrustListChange:
    """What an update did to the list in force."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    total: int
    rejected: tuple[str, ...]


def saved_path(settings: Settings) -> Path:
    return settings.gateway.state_dir / TRUST_FILE


def load_saved(path: Path) -> TrustList:
    """The last good copy (an empty list when there is none yet); a damaged copy raises TrustListError."""
    try:
        data = path.read_bytes()
        loaded_at = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except FileNotFoundError:
        return TrustList()
    return TrustList(parse_trust_list(data).domains, loaded_at)


def fetch(source: str, settings: Settings) -> bytes:
    """The list's bytes from a file or an ``https://`` URL (verified against the configured CA bundle)."""
    if source.startswith("http://"):
        raise InputError(
            "--from", "the trust list is only fetched over https:// (it decides whom mail goes to)"
        )
    if not source.startswith("https://"):
        try:
            return Path(source).read_bytes()
        except OSError as error:
            raise InputError("--from", f"cannot read {source}: {error.strerror}") from error
    ca_bundle = settings.trust.ca_bundle or settings.tls.ca_bundle
    context = ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        with urllib.request.urlopen(source, context=context, timeout=settings.trust.fetch_timeout) as answer:  # noqa: S310 (https only, checked above)
            data: bytes = answer.read(_MAX_SIZE + 1)
    except OSError as error:
        raise InputError("--from", f"cannot fetch {source}: {getattr(error, 'reason', error)}") from error
    if len(data) > _MAX_SIZE:
        raise InputError("--from", f"{source} is larger than {_MAX_SIZE // 1024 // 1024} MB: refused")
    return data


def update(path: Path, data: bytes, now: datetime) -> TrustListChange:
    """Make ``data`` the last good copy if it parses and lists domains; raises TrustListError otherwise."""
    parsed: ParsedTrustList = parse_trust_list(data)
    try:
        previous = load_saved(path).domains
    except TrustListError:
        previous = frozenset()
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write beside, then rename: a reader (or a crash) sees the old copy or the new one, never half.
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".trustlist-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.utime(temporary, (now.timestamp(), now.timestamp()))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return TrustListChange(
        added=tuple(sorted(parsed.domains - previous)),
        removed=tuple(sorted(previous - parsed.domains)),
        total=len(parsed.domains),
        rejected=parsed.rejected,
    )


class TrustListService:
    """Loads the last good copy at start and on reload, and refreshes from ``trust.url`` on schedule.

    With ``follows`` (the relay process of ``gateway.relay_process``) it fetches nothing: its parent does,
    and it puts in force each copy the parent saved, within ``FOLLOW_INTERVAL``.
    """

    def __init__(
        self, settings: Settings, trust_list: TrustList, scheduler: Scheduler, follows: bool = False
    ) -> None:
        self.settings = settings
        self.trust_list = trust_list
        self.scheduler = scheduler
        self.follows = follows
        self._followed: datetime | None = None
        """The saved copy's time when ``follow`` last read it."""
        metrics.SOURCES.trust_list_loaded = lambda: trust_list.loaded_at

    async def start(self) -> None:
        self._put_in_force(await asyncio.to_thread(self._read, self.settings))
        self._followed = self.trust_list.loaded_at
        self._schedule(self.settings)

    async def stop(self, grace: float) -> None:
        self.scheduler.cancel("trust-list-refresh")
        self.scheduler.cancel("trust-list-follow")

    def prepare_reload(self, settings: Settings) -> Callable[[], None]:
        fresh = self._read(settings)

        def apply() -> None:
            self.settings = settings
            self._put_in_force(fresh)
            self._schedule(settings)

        return apply

    def _read(self, settings: Settings) -> TrustList:
        path = saved_path(settings)
        try:
            return load_saved(path)
        except TrustListError as error:
            # The copy was damaged on disk: keep what is in force rather than trust nobody.
            log_event(log, "trust-list-unreadable", logging.ERROR, path=str(path), reason=str(error))
            return self.trust_list

    def _put_in_force(self, fresh: TrustList) -> None:
        if fresh is not self.trust_list:
            self.trust_list.replace(fresh.domains, fresh.loaded_at)
        if self.trust_list.domains:
            loaded = self.trust_list.loaded_at
            log_event(
                log,
                "trust-list-in-force",
                domains=len(self.trust_list.domains),
                fetched=loaded.isoformat(timespec="seconds") if loaded else None,
            )
        else:
            # Operator mode sends nothing without it; client mode only checks recipients early with it.
            operator = self.settings.gateway.mode == "operator"
            log_event(
                log,
                "trust-list-missing",
                logging.WARNING if operator else logging.INFO,
                path=str(saved_path(self.settings)),
                hint="run mssgw trust update --from FILE_OR_URL, or set trust.url",
            )

    def _schedule(self, settings: Settings) -> None:
        if self.follows:
            self.scheduler.every("trust-list-follow", FOLLOW_INTERVAL, self.follow)
            return
        if not settings.trust.url:
            self.scheduler.cancel("trust-list-refresh")
            return
        loaded = self.trust_list.loaded_at
        stale = loaded is None or (datetime.now(UTC) - loaded).total_seconds() >= settings.trust.refresh
        self.scheduler.every("trust-list-refresh", settings.trust.refresh, self.refresh, now=stale)

    async def follow(self) -> None:
        """Put in force the copy saved since the one in force was read (its time is the file's)."""
        try:
            saved = datetime.fromtimestamp(saved_path(self.settings).stat().st_mtime, UTC)
        except FileNotFoundError:
            return
        if saved != self._followed:
            self._followed = saved  # a damaged copy is reported once, not at every look
            self._put_in_force(await asyncio.to_thread(self._read, self.settings))

    async def refresh(self) -> None:
        """Fetch ``trust.url``; a list that cannot be fetched or used leaves the one in force."""
        settings = self.settings
        try:
            data = await asyncio.to_thread(fetch, settings.trust.url, settings)
            change = await asyncio.to_thread(update, saved_path(settings), data, datetime.now(UTC))
        except (InputError, TrustListError, OSError) as error:
            log_event(
                log, "trust-list-refresh-failed", logging.ERROR, url=settings.trust.url, reason=str(error)
            )
            return
        self._put_in_force(await asyncio.to_thread(self._read, settings))
        log_event(
            log,
            "trust-list-updated",
            url=settings.trust.url,
            total=change.total,
            added=len(change.added),
            removed=len(change.removed),
            rejected=len(change.rejected),
        )
