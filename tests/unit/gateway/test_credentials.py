"""Submission credentials: scrypt hashes that verify, refuse, and never hold the password."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.inbound.credentials import hash_password, load_credentials, verify_password


def test_a_hash_verifies_its_password_only() -> None:
    encoded = hash_password("s3cret", log2_n=10)
    assert encoded.startswith("scrypt$10$8$1$") and "s3cret" not in encoded
    assert verify_password("s3cret", encoded)
    assert not verify_password("s3cret ", encoded)
    assert hash_password("s3cret", log2_n=10) != encoded  # salted


@pytest.mark.parametrize(
    "encoded", ["", "scrypt$10$8$1$!!$!!", "scrypt$40$8$1$AAAA$AAAA", "pbkdf2$1$2$3$AA$AA", "plain"]
)
def test_a_malformed_hash_never_matches(encoded: str) -> None:
    assert not verify_password("anything", encoded)


def test_the_file_names_its_bad_lines_without_quoting_them(tmp_path: Path) -> None:
    path = tmp_path / "credentials"
    path.write_text(f"# comment\ndpi:{hash_password('x', log2_n=10)}\nlab:clear-text-password\n")
    with pytest.raises(ConfigError) as error:
        load_credentials(path)
    assert "line 3" in str(error.value) and "clear-text-password" not in str(error.value)
    path.write_text(f"dpi:{hash_password('x', log2_n=10)}\n")
    assert list(load_credentials(path)) == ["dpi"]


def test_mssgw_hash_password_prints_a_line_for_the_file() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "hash-password", "dpi"],
        input="correct horse\n",
        capture_output=True,
        text=True,
        check=True,
    )
    name, _, encoded = result.stdout.strip().partition(":")
    assert name == "dpi" and verify_password("correct horse", encoded)
    assert "correct horse" not in result.stdout
