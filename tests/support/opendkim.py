"""Debian's OpenDKIM as an independent DKIM verifier: what we sign must pass a verifier we did not write.

``opendkim -x CONF -t FILE`` runs the milter's test mode on one message and exits; no socket, no daemon,
no system service (/etc/opendkim.conf is never read). The private config has ``Mode v`` and
``TestPublicKeys``, a file mapping ``<selector>._domainkey.<domain>`` to the key's TXT record, so nothing
queries DNS.

How test mode reports (OpenDKIM 2.11): the exit code is 0 whether the signature is good or bad (non-zero
only when the run itself failed, e.g. 69 for an unreadable file); stderr says ``FILE: verification (s=…,
d=…) succeeded`` / ``… failed: REASON`` / ``FILE: message not signed``; with ``-vv`` stdout also shows the
``Authentication-Results`` header the milter would add, one ``dkim=RESULT … header.d=… header.s=…`` per
signature. :func:`opendkim_verify` reads that header, the verifier's own words for each signature.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.support.dkim import DkimKey

BINARY = shutil.which("opendkim") or ("/usr/sbin/opendkim" if Path("/usr/sbin/opendkim").exists() else None)
_RESULT = re.compile(r"\bdkim=(\w+)(?P<rest>[^;]*)")


@dataclass(frozen=True)
class OpenDkimVerdict:
    """What ``opendkim -t`` said about one message."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def results(self) -> list[tuple[str, str, str]]:
        """``(result, header.d, header.s)`` of each signature in its Authentication-Results."""
        found = []
        for match in _RESULT.finditer(self.stdout):
            rest = match.group("rest")
            domain = re.search(r"header\.d=(\S+)", rest)
            selector = re.search(r"header\.s=(\S+)", rest)
            found.append(
                (match.group(1), domain.group(1) if domain else "", selector.group(1) if selector else "")
            )
        return found

    def passed(self, key: DkimKey) -> bool:
        """Whether the run worked and the signature of ``key``'s domain and selector is ``dkim=pass``."""
        return self.returncode == 0 and (("pass", key.domain, key.selector) in self.results)

    def __str__(self) -> str:
        return f"opendkim exited {self.returncode}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"


def opendkim_verify(key: DkimKey, raw: bytes, directory: Path) -> OpenDkimVerdict:
    """Verify ``raw`` (as received, CRLF) with OpenDKIM knowing only ``key``; files go in ``directory``."""
    assert BINARY is not None
    directory.mkdir(parents=True, exist_ok=True)
    keys = directory / "test-public-keys"
    keys.write_bytes(key.dns_name.rstrip(b".") + b" " + key.txt_record + b"\n")
    config = directory / "opendkim.conf"
    config.write_text(f"Mode v\nSyslog no\nTestPublicKeys {keys}\n", encoding="ascii")
    message = directory / "message.eml"
    message.write_bytes(raw)
    result = subprocess.run(
        [BINARY, "-x", str(config), "-t", str(message), "-vv"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return OpenDkimVerdict(result.returncode, result.stdout, result.stderr)
