"""The inbound replies: ASCII, a 3-digit code, an RFC 3463 enhanced code of the same class."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.channels.gate import decide
from gateway.channels.rules import check_patient_mail
from gateway.inbound import replies
from gateway.inbound.instructions import apply_instructions
from gateway.inbound.policy import Policy
from gateway.store.channels import ChannelView
from gateway.store.states import ChannelState
from mappers import ins, xds
from mappers.errors import MappingError
from mappers.pdf_copies import PDF_MIME_TYPE
from mappers.records import Attachment, Mailbox, MessageRecord
from tests.support.mail import APP, CLIENTS, OUR_DOMAIN, inbound_settings
from tests.unit.mappers import samples

NAMED = {k: v for k, v in vars(replies).items() if k.isupper() and isinstance(v, str)}
REPLY = re.compile(r"([245])\d\d ([245])\.\d{1,3}\.\d{1,3} \S")


@pytest.mark.parametrize("name", sorted(NAMED))
def test_every_reply_is_ascii_with_a_matching_enhanced_code(name: str) -> None:
    text = NAMED[name]
    text.encode("ascii")
    match = REPLY.match(text)
    assert match is not None and match.group(1) == match.group(2), text


def test_rewritten_aiosmtpd_replies_map_to_named_replies() -> None:
    assert set(replies.REWRITTEN.values()) <= set(NAMED.values())


# Every sentence the listeners can send, with arguments as foreign as a client can make them: the named
# replies, the policy's verdicts, the citizen-channel gate, the patient rules and the submission
# instructions. Each must leave the reply layer as one ASCII line that keeps its codes.
ODD = "hôpital…«x»\r\n@exemple.fr"
T = datetime(2026, 5, 1, tzinfo=UTC)
PATIENT_ADDRESS = "279035121518989@patient.mssante.fr"


def _named() -> list[str]:
    return [text.replace("{}", ODD) for text in NAMED.values()]


def _policy() -> list[str]:
    policy = Policy(inbound_settings(), CLIENTS)
    verdicts = [policy.recipient("operator", None, a) for a in ("x@outside.test", "nobody@" + OUR_DOMAIN)]
    return [v.reply for v in verdicts] + [
        r for r in (policy.sender("operator", None, "a@hôpital.test"), policy.too_big(10**12)) if r
    ]


def _channels() -> list[str]:
    def view(state: str, closed_by: str | None) -> ChannelView:
        return ChannelView(1, "x@h", "279035121518989", state, T, None, T, T, closed_by, None)

    closed = ChannelState.CLOSED
    views = [None, view(ChannelState.EXPIRED, None), view(closed, "admin:é"), view(closed, None)]
    return [refusal.smtp_reply for v in views if (refusal := decide(v)) is not None]


def _patient_rules() -> list[str]:
    qualified = samples.patient(oid=ins.NIR_OID)
    hidden = dataclasses.replace(
        samples.pdf_document(), title="Compte rendu opératoire", confidentiality=(xds.INVISIBLE_PATIENT,)
    )
    cases = [
        (samples.patient(oid=ins.NIR_OID, given_name=""), PATIENT_ADDRESS, 10, ()),
        (qualified, "279035121518988@patient.mssante.fr", 10, ()),
        (samples.patient(oid="1.2.3"), PATIENT_ADDRESS, 10, ()),
        (samples.patient(oid=ins.TEST_OID), PATIENT_ADDRESS, 10, ()),
        (qualified, PATIENT_ADDRESS, 10, (hidden,)),
        (qualified, PATIENT_ADDRESS, 27 * 1024 * 1024, ()),
    ]
    refusals = [
        check_patient_mail(
            MessageRecord(Mailbox(APP), (), "Ordonnance", patient=patient, documents=documents),
            [to],
            size,
            test_mode=False,
            max_size=25 * 1024 * 1024,
        )
        for patient, to, size, documents in cases
    ]
    assert all(refusals)
    return [r.smtp_reply for r in refusals if r is not None]


def _instructions() -> list[str]:
    pdf = Attachment("cr.pdf", PDF_MIME_TYPE, b"%PDF-1.4\n")
    record = MessageRecord(Mailbox(APP), (), "CR", attachments=(pdf,))
    fields = [
        "X-MSSGW-Patient: matricule=279035121518989; birth-name=DUPONT; given-name=Hélène",
        "X-MSSGW-Patient: birth-name=Éloïse",
        "X-MSSGW-Patient: matricule=279035121518989; birth-name=A; given-name=B; birth-date=5 mars",
        "X-MSSGW-Patient: matricule=279035121518989; birth-name=A; given-name=B; oid=1.2.3",
        "X-MSSGW-Patient: «Hélène»",
        "X-MSSGW-Patient: matricule=279035121518989; birth-name=A; given-name=B\r\n"
        'X-MSSGW-Document-Type: 11490-0; label=""',
    ]
    texts = []
    for field in fields:
        raw = f"From: {APP}\r\n{field}\r\n\r\nx\r\n".encode()
        with pytest.raises(MappingError) as error:
            apply_instructions(raw, record, nil_reference="DEV", hostname="h", now=T)
        texts.append(replies.BAD_INSTRUCTION.format(str(error.value)))
    return texts


PRODUCED = [*_named(), *_policy(), *_channels(), *_patient_rules(), *_instructions()]


@pytest.mark.parametrize("text", PRODUCED)
def test_every_reply_the_gateway_can_produce_leaves_as_one_ascii_line(text: str) -> None:
    sent = replies.ascii_line(text)
    assert sent.isascii() and sent.isprintable(), sent
    assert sent[:9] == text[:9] and REPLY.match(sent), sent
    assert any(not t.isascii() for t in PRODUCED)  # the enumeration does reach the unsafe texts


def test_accents_are_transliterated_and_the_rest_dropped() -> None:
    assert replies.ascii_line("552 5.3.4 (Mon Espace Santé limit) «Hélène»…") == (
        "552 5.3.4 (Mon Espace Sante limit) Helene..."
    )


@given(st.text())
def test_any_text_becomes_printable_ascii_and_ascii_text_is_kept(text: str) -> None:
    sent = replies.ascii_line(text)
    assert sent.isascii() and sent.isprintable()
    if text.isascii() and text.isprintable():
        assert sent == text
