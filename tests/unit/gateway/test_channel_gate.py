"""Who is a patient for the channel gate: citizen addresses with a matricule, not the service's own."""

from __future__ import annotations

import pytest

from gateway.channels.gate import patient_matricule


@pytest.mark.parametrize(
    ("senders", "expected"),
    [
        (("279035121518989@patient.mssante.fr",), "279035121518989"),
        (("<279035121518989@PATIENT.mssante.fr>",), "279035121518989"),
        (("", "279035121518988@patient.mssante.fr"), "279035121518988"),  # bad key: still a patient
        (("MAILER-DAEMON@patient.mssante.fr",), None),
        (("dr.martin@cabinet.mssante.fr", None), None),
        (("", None), None),
    ],
)
def test_patient_senders_are_recognised(senders: tuple[str | None, ...], expected: str | None) -> None:
    assert patient_matricule(*senders) == expected
