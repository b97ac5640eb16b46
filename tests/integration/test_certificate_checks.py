"""Certificate checks: ``mssgw check-config`` names every configured certificate with its path and expiry
date, warns 30 days ahead, reports an expired one, and refuses a certificate that is not its key's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import trustme

from gateway.certs import CertificateFile, check_file
from tests.support.gateway import Gateway, gateway_for
from tests.support.pki import CertKey, Pki, write_private


def client_certificate(directory: Path, not_after: datetime) -> CertKey:
    """A BAL applicative certificate from a fresh CA, valid until ``not_after`` (maybe in the past)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    leaf = ca.issue_cert(
        "gw-app@hopital.test.mssante.fr",
        common_name="gw-app@hopital.test.mssante.fr",
        not_before=not_after - timedelta(days=365),
        not_after=not_after,
    )
    cert = directory / "client.crt"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    return CertKey(cert, write_private(directory / "client.key", leaf.private_key_pem.bytes()))


def with_client(gateway: Gateway, cert: CertKey) -> Gateway:
    gateway.sections["tls"]["client_certificate"] = str(cert.cert)
    gateway.sections["tls"]["client_key"] = str(cert.key)
    gateway.write()
    return gateway


def test_an_expired_certificate_is_reported_with_its_path_and_date(tmp_path: Path, pki: Pki) -> None:
    expired_on = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
    cert = client_certificate(tmp_path / "old", expired_on)
    gateway = with_client(gateway_for(tmp_path / "gw", pki, None), cert)
    result = gateway.command("check-config")
    line = next(line for line in result.stdout.splitlines() if "tls.client_certificate" in line)
    assert line.split()[0] == "error"
    assert str(cert.cert) in line and "expired on 2024-03-01 12:00 UTC" in line
    assert f"{pki.ca}" in result.stdout and "valid until" in result.stdout


def test_a_certificate_expiring_within_30_days_is_a_warning_and_within_7_an_error(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    warn, error = timedelta(days=30), timedelta(days=7)
    soon = client_certificate(tmp_path / "soon", now + timedelta(days=20))
    very_soon = client_certificate(tmp_path / "very-soon", now + timedelta(days=3))
    (finding,) = check_file(CertificateFile("tls.client_certificate", soon.cert, soon.key), now, warn, error)
    assert finding.severity == "warning" and "in 20 days" in finding.sentence
    (finding,) = check_file(CertificateFile("tls.client_certificate", very_soon.cert), now, warn, error)
    assert finding.severity == "error" and "renew it now" in finding.sentence
    assert finding.days_left is not None and 2.9 < finding.days_left < 3.1


def test_a_certificate_that_is_not_its_keys_stops_the_start(tmp_path: Path, pki: Pki) -> None:
    gateway = gateway_for(tmp_path / "gw", pki, None)
    gateway.sections["tls"]["client_key"] = str(pki.untrusted.client.key)
    gateway.write()
    result = gateway.command("check-config", check=False)
    assert result.returncode == 78
    assert (
        f"tls.client_certificate: {pki.client.cert}: the certificate does not match the private key"
        in result.stderr
    )


def test_the_daemon_warns_at_start_about_a_certificate_expiring_soon(tmp_path: Path, pki: Pki) -> None:
    cert = client_certificate(tmp_path / "soon", datetime.now(UTC) + timedelta(days=20))
    gateway = with_client(gateway_for(tmp_path / "gw", pki, None), cert)
    gateway.start()
    try:
        output = gateway.wait_for_output("event=certificate-warning")
    finally:
        assert gateway.stop() == 0
    line = next(line for line in output.splitlines() if "event=certificate-warning" in line)
    assert "key=tls.client_certificate" in line and f"path={cert.cert}" in line and "in 20 days" in line


def test_the_listener_certificates_are_checked_too(tmp_path: Path, pki: Pki) -> None:
    soon = client_certificate(tmp_path / "soon", datetime.now(UTC) + timedelta(days=20))
    gateway = gateway_for(tmp_path / "gw", pki, None)
    gateway.sections["submission"] = {
        "listen": ["127.0.0.1:0"],
        "certificate": str(soon.cert),
        "key": str(soon.key),
        "client_ca": str(pki.ca),
    }
    gateway.write()
    lines = gateway.command("check-config").stdout.splitlines()
    [listener] = [line for line in lines if "submission.certificate" in line]
    assert listener.split()[0] == "warning" and str(soon.cert) in listener and "in 20 days" in listener
    assert any("submission.client_ca" in line and str(pki.ca) in line for line in lines)
