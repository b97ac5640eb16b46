"""A throw-away PKI for tests: a trusted CA with a server and a client certificate, and an unrelated CA.

It stands in for IGC-Santé: the fake operator presents the server certificate and checks the gateway's
"BAL applicative" client certificate against the trusted CA; the untrusted CA's certificates are for the
"certificate not trusted" paths. Files only, written under a directory the caller owns (tmp_path); it never
touches the system trust store.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

CLIENT_ADDRESS = "gw-app@hopital.test.mssante.fr"
SERVER_IDENTITIES = ("localhost", "127.0.0.1")
UNTRUSTED_CLIENT_ADDRESS = "intruder@untrusted.test"
MISNAMED_HOST = "other-operator.test.mssante.fr"


@dataclass(frozen=True, slots=True)
class CertKey:
    """A certificate chain (leaf first, PEM) and its private key (PEM, mode 0600)."""

    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class Authority:
    """One CA and the leaves it issued: ``ca`` is the PEM bundle a peer loads to trust it.

    ``expired_server`` (valid for localhost/127.0.0.1, expired yesterday) and ``misnamed_server`` (valid,
    but for another host name) are the two ways a certificate from a trusted CA must still be refused.
    """

    ca: Path
    server: CertKey
    client: CertKey
    client_address: str
    expired_server: CertKey
    misnamed_server: CertKey


@dataclass(frozen=True, slots=True)
class Pki:
    """Paths of a test PKI; ``ca``/``server``/``client`` are shortcuts for the trusted authority."""

    directory: Path
    trusted: Authority
    untrusted: Authority

    @property
    def ca(self) -> Path:
        return self.trusted.ca

    @property
    def server(self) -> CertKey:
        return self.trusted.server

    @property
    def client(self) -> CertKey:
        return self.trusted.client

    @property
    def client_address(self) -> str:
        return self.trusted.client_address


def _write(path: Path, data: bytes, mode: int) -> Path:
    # Create with the final mode so a private key is never readable by others, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode)
    return path


def write_private(path: Path, data: bytes) -> Path:
    """Write a private key readable by its owner only (the gateway refuses any wider mode)."""
    return _write(path, data, 0o600)


def _write_leaf(directory: Path, name: str, leaf: trustme.LeafCert) -> CertKey:
    chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
    return CertKey(
        cert=_write(directory / f"{name}.crt", chain, 0o644),
        key=write_private(directory / f"{name}.key", leaf.private_key_pem.bytes()),
    )


def _authority(
    directory: Path, organization: str, client_address: str, key_type: trustme.KeyType
) -> Authority:
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name=organization, key_type=key_type)
    server = ca.issue_cert(
        *SERVER_IDENTITIES,
        common_name="localhost",
        organization_name=organization,
        key_type=key_type,
    )
    # The BAL applicative's certificate names the mailbox both as CN and as an rfc822Name SAN, as
    # IGC-Santé "personne morale" certificates for application mailboxes do.
    client = ca.issue_cert(
        client_address,
        common_name=client_address,
        organization_name=organization,
        key_type=key_type,
    )
    now = datetime.now(UTC)
    expired = ca.issue_cert(
        *SERVER_IDENTITIES,
        common_name="localhost",
        not_before=now - timedelta(days=30),
        not_after=now - timedelta(days=1),
        key_type=key_type,
    )
    misnamed = ca.issue_cert(MISNAMED_HOST, common_name=MISNAMED_HOST, key_type=key_type)
    return Authority(
        ca=_write(directory / "ca.pem", ca.cert_pem.bytes(), 0o644),
        server=_write_leaf(directory, "server", server),
        client=_write_leaf(directory, "client", client),
        client_address=client_address,
        expired_server=_write_leaf(directory, "server-expired", expired),
        misnamed_server=_write_leaf(directory, "server-misnamed", misnamed),
    )


def make_pki(directory: Path, *, key_type: trustme.KeyType = trustme.KeyType.ECDSA) -> Pki:
    """Write a trusted and an untrusted authority under ``directory``.

    ECDSA by default because it is generated in microseconds; pass ``KeyType.RSA`` to mimic IGC-Santé.
    """
    pki = Pki(
        directory=directory,
        trusted=_authority(directory / "trusted", "Hopital Test CA", CLIENT_ADDRESS, key_type),
        untrusted=_authority(
            directory / "untrusted", "Untrusted Test CA", UNTRUSTED_CLIENT_ADDRESS, key_type
        ),
    )
    for authority in (pki.trusted, pki.untrusted):
        _check_client_usage(authority.client.cert)
    return pki


def _check_client_usage(cert_file: Path) -> None:
    # A TLS server rejects a client certificate without clientAuth in its EKU; fail here, loudly,
    # rather than in a handshake deep inside an end-to-end test.
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    if ExtendedKeyUsageOID.CLIENT_AUTH not in usage:
        raise RuntimeError(f"{cert_file} lacks the clientAuth extended key usage")
