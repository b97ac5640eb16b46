"""TLS contexts built from the settings: TLS 1.2 at least, peers verified against the configured CA bundle
(IGC-Santé in production, never the system store), and the BAL applicative's certificate presented.
"""

from __future__ import annotations

import ssl

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
