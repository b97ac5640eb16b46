"""Checks of the configured certificates: days to expiry, and whether each certificate matches its key.

Run by ``mssgw check-config``, at start and then every ``certificates.check_interval`` (a scheduler job),
so a sysadmin hears of an expiring IGC-Santé certificate weeks before mail stops. It reads files only; it
never refuses to start on an expiry (the queue keeps taking mail while a certificate is renewed).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_private_key

from gateway import metrics
from gateway.logsetup import log_event
from gateway.scheduler import Scheduler
from gateway.settings import Settings

log = logging.getLogger(__name__)

Severity = Literal["ok", "warning", "error"]


@dataclass(frozen=True, slots=True)
class CertificateFile:
    """A certificate (or bundle) the settings name, with its private key when we hold one."""

    key: str
    path: Path
    private_key: Path | None = None


@dataclass(frozen=True, slots=True)
class Finding:
    """What one certificate's check found; ``sentence`` is ready to print or log."""

    severity: Severity
    key: str
    path: Path
    subject: str
    not_after: datetime | None
    sentence: str
    days_left: float | None = None
    blocking: bool = False
    """The file cannot be used at all (unreadable, or not the key's certificate): no start."""


def configured_certificates(settings: Settings) -> list[CertificateFile]:
    """Every certificate file the settings name: the peers' CAs, our client certificate and the
    certificates our listeners present (a listener whose certificate expires loses its clients too)."""
    tls, trust, submission = settings.tls, settings.trust, settings.submission
    files = []
    if tls.ca_bundle is not None:
        files.append(CertificateFile("tls.ca_bundle", tls.ca_bundle))
    if tls.client_certificate is not None:
        files.append(CertificateFile("tls.client_certificate", tls.client_certificate, tls.client_key))
    if trust.ca_bundle is not None:
        files.append(CertificateFile("trust.ca_bundle", trust.ca_bundle))
    for name, listener in (("submission", submission), ("operator_listener", settings.operator_listener)):
        if listener.listen and listener.certificate is not None:
            files.append(CertificateFile(f"{name}.certificate", listener.certificate, listener.key))
    if submission.listen and submission.client_ca is not None:
        files.append(CertificateFile("submission.client_ca", submission.client_ca))
    return files


def check_file(item: CertificateFile, now: datetime, warn: timedelta, error: timedelta) -> list[Finding]:
    """One finding per certificate in the file (a bundle holds several); the leaf is checked against
    the private key when there is one."""
    where = f"{item.key}: {item.path}"
    try:
        certificates = x509.load_pem_x509_certificates(item.path.read_bytes())
    except (OSError, ValueError) as problem:
        return [
            Finding("error", item.key, item.path, "", None, f"{where}: cannot read a certificate ({problem})")
        ]
    findings = [_expiry(item, cert, now, warn, error) for cert in certificates]
    if item.private_key is not None:
        mismatch = _key_mismatch(item.private_key, certificates[0])
        if mismatch:
            subject = certificates[0].subject.rfc4514_string()
            findings.append(
                Finding("error", item.key, item.path, subject, None, f"{where}: {mismatch}", blocking=True)
            )
    return findings


def _expiry(
    item: CertificateFile, cert: x509.Certificate, now: datetime, warn: timedelta, error: timedelta
) -> Finding:
    subject = cert.subject.rfc4514_string()
    not_after = cert.not_valid_after_utc
    left = not_after - now
    days = left.total_seconds() / 86400
    date = not_after.strftime("%Y-%m-%d %H:%M UTC")
    where = f"{item.key}: {item.path} ({subject})"
    severity: Severity = "ok"
    if left <= timedelta(0):
        severity, sentence = "error", f"{where} expired on {date}"
    elif left <= error:
        severity, sentence = "error", f"{where} expires on {date}, in {days:.0f} days: renew it now"
    elif left <= warn:
        severity, sentence = "warning", f"{where} expires on {date}, in {days:.0f} days"
    else:
        sentence = f"{where} valid until {date}"
    if now < cert.not_valid_before_utc:
        severity = "error"
        sentence = f"{where} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M UTC}"
    return Finding(severity, item.key, item.path, subject, not_after, sentence, days)


def _key_mismatch(key_path: Path, leaf: x509.Certificate) -> str | None:
    try:
        private_key = load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as problem:
        return f"cannot read the private key {key_path} ({problem})"
    ours = private_key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    theirs = leaf.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    if ours != theirs:
        return f"the certificate does not match the private key {key_path}"
    return None


def check_certificates(settings: Settings, now: datetime) -> list[Finding]:
    """Check every configured certificate."""
    thresholds = settings.certificates
    warn, error = timedelta(seconds=thresholds.warn_before), timedelta(seconds=thresholds.error_before)
    return [
        finding
        for item in configured_certificates(settings)
        for finding in check_file(item, now, warn, error)
    ]


def report(findings: list[Finding]) -> None:
    """Log what needs attention and update the days-to-expiry gauges (the scheduler job's body)."""
    # A certificate no longer configured (after a reload) must not stay on the dashboard.
    metrics.CERTIFICATE_DAYS.clear()
    for finding in findings:
        if finding.days_left is not None:
            metrics.certificate_expiry(finding.key, str(finding.path), finding.days_left)
        if finding.severity != "ok":
            log_event(
                log,
                "certificate-" + finding.severity,
                logging.ERROR if finding.severity == "error" else logging.WARNING,
                key=finding.key,
                path=str(finding.path),
                not_after=finding.not_after.isoformat() if finding.not_after else None,
                problem=finding.sentence,
            )


class CertificateWatch:
    """Daemon service: checks the certificates at start, after a reload and every ``check_interval``."""

    def __init__(self, settings: Settings, scheduler: Scheduler) -> None:
        self.settings = settings
        self.scheduler = scheduler

    async def start(self) -> None:
        self.scheduler.every(_JOB, self.settings.certificates.check_interval, self.check, now=True)

    async def stop(self, grace: float) -> None:
        self.scheduler.cancel(_JOB)

    def prepare_reload(self, settings: Settings) -> Callable[[], None]:
        def apply() -> None:
            self.settings = settings
            self.scheduler.every(_JOB, settings.certificates.check_interval, self.check, now=True)

        return apply

    async def check(self) -> None:
        report(await asyncio.to_thread(check_certificates, self.settings, datetime.now(UTC)))


_JOB = "certificate-check"
