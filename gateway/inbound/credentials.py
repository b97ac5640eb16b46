"""Submission passwords: scrypt hashes in a ``name:hash`` file, never the passwords themselves.

Hash format (``mssgw hash-password`` writes it): ``scrypt$<log2 N>$<r>$<p>$<salt b64>$<key b64>``, RFC 7914
scrypt from the standard library with a 16-byte random salt and a 32-byte key. Checking runs in a worker
thread (it costs tens of milliseconds on purpose) and compares in constant time. Never logs a password.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from pathlib import Path

from gateway.errors import ConfigError

SCHEME = "scrypt"
LOG2_N, R, P = 15, 8, 1
_KEY_LENGTH = 32
_MAX_MEMORY = 64 * 1024 * 1024


def hash_password(password: str, *, log2_n: int = LOG2_N) -> str:
    """A new salted hash of ``password`` in the credentials-file format."""
    salt = secrets.token_bytes(16)
    key = _derive(password, salt, log2_n, R, P)
    return "$".join((SCHEME, str(log2_n), str(R), str(P), _b64(salt), _b64(key)))


def verify_password(password: str, encoded: str) -> bool:
    """Whether ``password`` matches ``encoded``; a malformed hash never matches."""
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != SCHEME or not all(p.isdigit() for p in parts[1:4]):
        return False
    log2_n, r, p = (int(x) for x in parts[1:4])
    if not (10 <= log2_n <= 20 and 1 <= r <= 32 and 1 <= p <= 16):
        return False
    try:
        salt, expected = base64.b64decode(parts[4], validate=True), base64.b64decode(parts[5], validate=True)
    except ValueError:
        return False
    return hmac.compare_digest(_derive(password, salt, log2_n, r, p), expected)


def load_credentials(path: Path) -> dict[str, str]:
    """``name → hash`` from the file; raises ConfigError naming each bad line (without its content)."""
    credentials: dict[str, str] = {}
    problems: list[str] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, encoded = line.partition(":")
        if not name or not encoded.startswith(SCHEME + "$"):
            problems.append(
                f"submission.credentials_file: line {number} is not name:{SCHEME}$… (mssgw hash-password)"
            )
            continue
        credentials[name] = encoded
    if problems:
        raise ConfigError(str(path), problems)
    return credentials


def _derive(password: str, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=1 << log2_n, r=r, p=p, maxmem=_MAX_MEMORY, dklen=_KEY_LENGTH
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
