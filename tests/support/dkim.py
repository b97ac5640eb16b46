"""DKIM test keys: a private key file for the gateway's config and a fake DNS that publishes its public half.

The end-to-end tests give ``private_key`` to the gateway (outbound signing) and check what the fake
operator received with :meth:`DkimKey.verify`, which runs dkimpy against an in-memory TXT record. Nothing
here queries real DNS.

Key file format the gateway must read (``dkim.private_key`` in the config): an unencrypted PEM private key,
LF line endings, mode 0600:

- RSA (rsa-sha256): PKCS#8 ``BEGIN PRIVATE KEY`` (``openssl genpkey``) or PKCS#1 ``BEGIN RSA PRIVATE
  KEY`` (``openssl genrsa``, opendkim-genkey). dkimpy 1.1.8 ``dkim.sign(privkey=...)`` takes either PEM
  as is (``dkim.crypto.parse_pem_private_key``); it cannot read an encrypted key or CRLF line endings.
- Ed25519 (ed25519-sha256, RFC 8463): PKCS#8 ``BEGIN PRIVATE KEY`` (``openssl genpkey -algorithm
  ed25519``). dkimpy does NOT take that PEM: it wants the base64 of the raw 32-byte seed
  (``nacl.signing.SigningKey(privkey, encoder=Base64Encoder)``), so the gateway loads the PEM with
  ``cryptography`` and passes ``base64(key.private_bytes(Raw, Raw, NoEncryption()))``, exactly as
  :func:`dkimpy_private_key` does. Ed25519 signing and verifying need PyNaCl (``dkimpy[ed25519]``).
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from tests.support.pki import write_private

KeyKind = Literal["rsa", "ed25519"]
RsaFormat = Literal["pkcs8", "pkcs1"]

SELECTOR = "mssgw"
DOMAIN = "hopital.test.mssante.fr"


@dataclass(frozen=True, slots=True)
class DkimKey:
    """A DKIM key: its PEM file, and the ``<selector>._domainkey.<domain>`` TXT record it publishes."""

    kind: KeyKind
    selector: str
    domain: str
    private_key: Path
    txt_record: bytes

    @property
    def algorithm(self) -> bytes:
        """The ``a=`` tag value dkimpy signs with."""
        return b"rsa-sha256" if self.kind == "rsa" else b"ed25519-sha256"

    @property
    def dns_name(self) -> bytes:
        return f"{self.selector}._domainkey.{self.domain}.".encode("ascii")

    def dnsfunc(self, name: bytes | str, timeout: float = 5) -> bytes | None:
        """dkimpy's DNS seam: the TXT record for this key's name, ``None`` (no record) for any other."""
        wanted = name.encode("ascii") if isinstance(name, str) else name
        if wanted.rstrip(b".").lower() == self.dns_name.rstrip(b".").lower():
            return self.txt_record
        return None

    def sign(self, raw: bytes) -> bytes:
        """Return ``raw`` with a DKIM-Signature prepended: a reference signer for comparing with ours."""
        _require_nacl(self.kind)
        header = dkim.sign(
            raw,
            self.selector.encode("ascii"),
            self.domain.encode("ascii"),
            dkimpy_private_key(self.private_key.read_bytes()),
            signature_algorithm=self.algorithm,
        )
        assert isinstance(header, bytes)
        return header + raw

    def verify(self, raw: bytes) -> bool:
        """True if the topmost DKIM-Signature of ``raw`` is valid under this key (and only this key)."""
        return self.failure(raw) is None

    def failure(self, raw: bytes) -> str | None:
        """Why :meth:`verify` is false (dkimpy's own words), or ``None``: for assertion messages."""
        _require_nacl(self.kind)
        messages: list[str] = []
        logger = logging.getLogger("tests.support.dkim.verify")
        handler = _ListHandler(messages)
        logger.addHandler(handler)
        logger.propagate = False
        try:
            ok = dkim.verify(raw, logger=logger, dnsfunc=self.dnsfunc)
        finally:
            logger.removeHandler(handler)
        if ok:
            return None
        if b"dkim-signature:" not in raw.lower():
            return "no DKIM-Signature header"
        return "; ".join(messages) or "signature did not verify"


class _ListHandler(logging.Handler):
    def __init__(self, sink: list[str]) -> None:
        super().__init__(logging.ERROR)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append(record.getMessage())


def _require_nacl(kind: KeyKind) -> None:
    if kind == "ed25519":
        try:
            import nacl.signing  # noqa: F401  (dkimpy imports it lazily and fails obscurely)
        except ImportError as error:
            raise RuntimeError("ed25519 DKIM needs PyNaCl (dkimpy[ed25519])") from error


def make_dkim_key(
    directory: Path,
    kind: KeyKind = "rsa",
    *,
    selector: str = SELECTOR,
    domain: str = DOMAIN,
    rsa_format: RsaFormat = "pkcs8",
) -> DkimKey:
    """Generate a key (RSA 2048 or Ed25519), write ``dkim-<kind>.key`` (0600) and build its TXT record."""
    directory.mkdir(parents=True, exist_ok=True)
    if kind == "rsa":
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = rsa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8
            if rsa_format == "pkcs8"
            else serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        # RFC 6376 § 3.6.1: p= is the base64 DER SubjectPublicKeyInfo for k=rsa.
        public = rsa_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    else:
        ed_key = ed25519.Ed25519PrivateKey.generate()
        pem = ed_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        # RFC 8463 § 4: p= is the base64 of the raw 32-byte public key for k=ed25519.
        public = ed_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    record = f"v=DKIM1; k={kind}; p={base64.b64encode(public).decode('ascii')}".encode("ascii")
    return DkimKey(
        kind=kind,
        selector=selector,
        domain=domain,
        private_key=write_private(directory / f"dkim-{kind}.key", pem),
        txt_record=record,
    )


def dkimpy_private_key(pem: bytes) -> bytes:
    """Turn a key file's PEM into what ``dkim.sign(privkey=...)`` accepts (see the module docstring)."""
    key = serialization.load_pem_private_key(pem, password=None)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        seed = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return base64.b64encode(seed)
    if isinstance(key, rsa.RSAPrivateKey):
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    raise ValueError(f"DKIM keys are RSA or Ed25519, not {type(key).__name__}")


def combined_dnsfunc(*keys: DkimKey) -> Callable[[bytes | str, float], bytes | None]:
    """One dkimpy ``dnsfunc`` publishing several keys (a message signed twice, rsa and ed25519)."""

    def lookup(name: bytes | str, timeout: float = 5) -> bytes | None:
        for key in keys:
            record = key.dnsfunc(name, timeout)
            if record is not None:
                return record
        return None

    return lookup
