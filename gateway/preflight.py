"""Checks of the TLS and DKIM material the settings point at, run by ``check-config`` and at start-up.

The settings loader checks that files exist with safe permissions; this loads them, so a certificate that
does not match its key, or a DKIM key of the wrong type, is reported before the daemon starts. Expiry dates
are reported (``gateway.certs``) but never block a start. Keys without a safe default are required here
too, by the commands that send (the loader leaves them out so that tests can build partial settings).
"""

from __future__ import annotations

import ssl
from datetime import UTC, datetime

from gateway.certs import Finding, check_certificates
from gateway.inbound.listener import listener_problems
from gateway.inbound.mllp_server import mllp_config
from gateway.outbound.signing import DkimKeyError, load_dkim_key
from gateway.settings import Settings
from gateway.tls import client_context


def required_problems(settings: Settings) -> list[str]:
    """The keys every message the gateway builds needs, and that no default can stand for."""
    if settings.gateway.nil_reference.strip():
        return []
    return [
        "gateway.nil_reference: required: the product reference the ANS gave when the product was "
        'declared, sent as X-MSS-NIL (ECO.2.4.3), e.g. "DEV935997" while in development'
    ]


def material_problems(settings: Settings) -> list[str]:
    """One sentence per unusable file or missing required key, naming its key."""
    blocking = [f.sentence for f in certificate_findings(settings) if f.blocking]
    problems = required_problems(settings) + blocking
    if not blocking:
        try:
            client_context(settings.tls)
        except (ssl.SSLError, OSError) as error:
            problems.append(f"tls.client_certificate: cannot use the certificate, key or CA bundle ({error})")
    for index, account in enumerate(settings.imap.accounts):
        try:
            client_context(account.tls_settings(settings.tls))
        except (ssl.SSLError, OSError) as error:
            problems.append(f"imap.accounts[{index}].ca_bundle: cannot use the TLS material ({error})")
    dkim = settings.dkim
    if dkim.private_key_file is not None:
        try:
            load_dkim_key(dkim.private_key_file, dkim.algorithm)
        except DkimKeyError as error:
            problems.append(f"dkim.private_key_file: {error}")
    # A listener certificate that is not its key's is already said precisely: not again in general terms.
    named = {problem.partition(":")[0] for problem in blocking}
    problems.extend(p for p in listener_problems(settings) if p.partition(":")[0] not in named)
    if settings.hl7.listen and "hl7.certificate" not in named:
        try:
            mllp_config(settings)
        except (ssl.SSLError, OSError) as error:
            problems.append(f"hl7.certificate: cannot use the certificate, key or client CA ({error})")
    return problems


def certificate_findings(settings: Settings) -> list[Finding]:
    """Every configured certificate's expiry and key match, as of now."""
    return check_certificates(settings, datetime.now(UTC))
