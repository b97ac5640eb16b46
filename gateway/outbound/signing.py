"""DKIM signing of outgoing mail with dkimpy (rsa-sha256 or ed25519-sha256).

The key is read once, in any standard PEM form (PKCS#1 or PKCS#8), and handed to dkimpy in the form it
wants (PKCS#1 PEM for RSA, the raw base64 seed for Ed25519). Signing is CPU work: callers run it off the
event loop.
"""

from __future__ import annotations

import base64
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from gateway.settings import DkimSettings, Settings


class DkimKeyError(Exception):
    """The configured DKIM key cannot be used with the configured algorithm."""


def load_dkim_key(path: Path, algorithm: str) -> bytes:
    """Read a PEM private key and convert it to what dkimpy signs with."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError, OSError) as error:
        raise DkimKeyError(f"{path}: not a readable unencrypted PEM private key ({error})") from error
    if algorithm == "rsa-sha256":
        if not isinstance(key, rsa.RSAPrivateKey):
            raise DkimKeyError(f"{path}: dkim.algorithm is rsa-sha256 but the key is not RSA")
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise DkimKeyError(f"{path}: dkim.algorithm is ed25519-sha256 but the key is not Ed25519")
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return base64.b64encode(raw)


class DkimSigner:
    """Adds a DKIM-Signature header for the configured domain and selector."""

    def __init__(self, settings: DkimSettings) -> None:
        assert settings.private_key_file is not None
        self.key = load_dkim_key(settings.private_key_file, settings.algorithm)
        self.domain = settings.domain.encode("ascii")
        self.selector = settings.selector.encode("ascii")
        self.algorithm = settings.algorithm.encode("ascii")
        self.headers = [h.encode("ascii") for h in settings.headers]

    def signature(self, content: bytes) -> bytes:
        """The DKIM-Signature field to write in front of ``content``; the field alone, so that the caller
        joins it and the message once (each copy of a large message costs, issue 16)."""
        field: bytes = dkim.sign(
            content,
            self.selector,
            self.domain,
            self.key,
            signature_algorithm=self.algorithm,
            include_headers=self.headers,
            canonicalize=(b"relaxed", b"relaxed"),
        )
        return field


def build_signer(settings: Settings) -> DkimSigner | None:
    """The DKIM signer, when a key is configured."""
    return DkimSigner(settings.dkim) if settings.dkim.enabled else None
