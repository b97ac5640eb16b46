"""The redaction filter: whatever a module (or a library) logs, no matricule, patient address local part,
body, subject, attachment name or credential reaches the log stream."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from gateway import logsetup
from gateway.logsetup import audit, log_event, redact
from gateway.settings import LoggingSettings

MATRICULE = "279035121518989"
MASKED = "2************89"


@pytest.fixture(params=["logfmt", "json"])
def stream(request: pytest.FixtureRequest) -> Iterator[io.StringIO]:
    """The daemon's logging set up on a string instead of stderr."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    logsetup.configure(LoggingSettings(format=request.param, level="info"))
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    captured = io.StringIO()
    handler.setStream(captured)
    yield captured
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)
    logging.getLogger("gateway").setLevel(logging.NOTSET)


@pytest.mark.parametrize(
    "text",
    [
        MATRICULE,
        "2 79 03 51 215 189 89",
        "2790351215189",  # the 13 characters without the key
        "1 85 12 2A 004 123",
    ],
)
def test_matricules_are_masked_however_they_are_written(text: str) -> None:
    masked = redact(f"patient {text} seen")
    assert text not in masked and "*" in masked


def test_patient_address_local_parts_are_masked_and_other_addresses_kept() -> None:
    text = redact(
        f"to <{MATRICULE}@patient.mssante.fr>, <Jean.Dupont@Patient.MSSante.fr> and dr@ch.mssante.fr"
    )
    assert f"<{MASKED}@patient.mssante.fr>" in text
    assert "Jean.Dupont" not in text
    assert "dr@ch.mssante.fr" in text


def test_numbers_that_are_not_matricules_stay_readable() -> None:
    assert redact("queue_id=123456789012345 ts=1700000000000 code=550") == (
        "queue_id=123456789012345 ts=1700000000000 code=550"
    )


def test_every_field_and_message_is_redacted_on_the_way_out(stream: io.StringIO) -> None:
    log = logging.getLogger("gateway.test")
    log_event(
        log,
        "refused",
        recipient=f"{MATRICULE}@patient.mssante.fr",
        reply=f"550 5.1.1 <{MATRICULE}@patient.mssante.fr> unknown",
        subject=f"XDM/1.0/DDM+CR DUPONT Jean {MATRICULE}",
        body="Bonjour, le compte rendu de Mme DUPONT",
        attachment_name="CR_DUPONT.pdf",
        password="s3cret-pass",
        queue_id=12,
    )
    audit("delivered", queue_id=12, delivery=34, filename="IHE_XDM.zip")
    logging.getLogger("aiosmtpd.mail.log").warning("AUTH PLAIN from %s", f"{MATRICULE}@patient.mssante.fr")
    try:
        raise ValueError(f"cannot parse {MATRICULE}")
    except ValueError:
        log.exception("event=crashed")
    written = stream.getvalue()
    for secret in (MATRICULE, "DUPONT", "Bonjour", "CR_DUPONT.pdf", "s3cret-pass", "IHE_XDM.zip"):
        assert secret not in written
    assert MASKED in written
    assert "queue_id=12" in written or '"queue_id": 12' in written
    assert "gateway.audit" in written and "delivered" in written
    assert "ValueError" in written  # the traceback is kept, masked


def test_json_lines_stay_valid_json_after_redaction(stream: io.StringIO) -> None:
    log_event(logging.getLogger("gateway.test"), "x", reply=f'say "{MATRICULE}"')
    line = stream.getvalue().strip()
    if line.startswith("{"):
        assert json.loads(line)["reply"] == f'say "{MASKED}"'
