"""TLS contexts built from the settings: TLS 1.2 at least, peers verified against the configured CA bundle
(IGC-Santé in production, never the system store), and the BAL applicative's certificate presented.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.settings import TlsSettings


def client_context(settings: TlsSettings) -> ssl.SSLContext:
    """The context for every outgoing connection to an MSSanté peer."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = (
        ssl.TLSVersion.TLSv1_3 if settings.min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    )
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    if settings.ca_bundle is not None:
        context.load_verify_locations(cafile=str(settings.ca_bundle))
    if settings.client_certificate is not None and settings.client_key is not None:
        context.load_cert_chain(str(settings.client_certificate), str(settings.client_key))
    return context


def server_context(
    settings: TlsSettings, certificate: Path, key: Path, client_ca: Path | None = None
) -> ssl.SSLContext:
    """The context of an inbound listener; with ``client_ca``, a client certificate is asked for and must
    chain to it (a peer may still send none: the listener decides what that means)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = (
        ssl.TLSVersion.TLSv1_3 if settings.min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    )
    context.load_cert_chain(str(certificate), str(key))
    if client_ca is not None:
        context.verify_mode = ssl.CERT_OPTIONAL
        context.load_verify_locations(cafile=str(client_ca))
    return context


def common_name(certificate: Mapping[str, Any]) -> str | None:
    """The subject CN of a verified peer certificate (``getpeercert()``): how a client names itself."""
    for rdn in certificate.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None
