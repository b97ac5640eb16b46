"""DKIM signing: any standard PEM key, RSA or Ed25519, and a key of the wrong type is named clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.outbound.signing import DkimKeyError, DkimSigner, load_dkim_key
from gateway.settings import DkimSettings
from tests.support.dkim import make_dkim_key

MESSAGE = (
    b"From: app@hopital.test.mssante.fr\r\nTo: dr@cabinet.test\r\nSubject: t\r\n"
    b"Message-ID: <1@x>\r\nX-MSS-NIL: DEV935997\r\n\r\nbonjour\r\n"
)


@pytest.mark.parametrize(("kind", "rsa_format"), [("rsa", "pkcs8"), ("rsa", "pkcs1"), ("ed25519", "pkcs8")])
def test_signed_messages_verify_against_the_published_key(tmp_path: Path, kind: str, rsa_format: str) -> None:
    key = make_dkim_key(tmp_path, kind, rsa_format=rsa_format)  # type: ignore[arg-type]
    signer = DkimSigner(
        DkimSettings(
            domain=key.domain,
            selector=key.selector,
            private_key_file=key.private_key,
            algorithm=key.algorithm.decode(),  # type: ignore[arg-type]
        )
    )
    signed = signer.signature(MESSAGE) + MESSAGE
    assert signed.startswith(b"DKIM-Signature:") and signed.endswith(MESSAGE)
    assert b"x-mss-nil" in signed.split(b"\r\n\r\n")[0].lower()
    assert key.verify(signed), key.failure(signed)


def test_a_key_that_does_not_match_the_algorithm_is_refused(tmp_path: Path) -> None:
    key = make_dkim_key(tmp_path, "ed25519")
    with pytest.raises(DkimKeyError, match="dkim.algorithm is rsa-sha256 but the key is not RSA"):
        load_dkim_key(key.private_key, "rsa-sha256")
    garbage = tmp_path / "garbage.key"
    garbage.write_text("not a key", encoding="utf-8")
    with pytest.raises(DkimKeyError, match="not a readable unencrypted PEM private key"):
        load_dkim_key(garbage, "rsa-sha256")
