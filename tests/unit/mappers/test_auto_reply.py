"""mappers.auto_reply: absence and redirection replies are recognised in every common form, tied to the
message they answer, and anything else is left as ordinary mail."""

from __future__ import annotations

from email.message import EmailMessage
from email.parser import BytesParser

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from mappers.auto_reply import MAX_TEXT, AutoReply, read_auto_reply
from mappers.folding import READ_POLICY
from tests.support.mail import message

ORIGINAL = "<m1@hopital.test.mssante.fr>"
ABSENT = "Je suis absent jusqu'au 2 janvier. Pour toute urgence : secretariat@cabinet.test.mssante.fr"
FORMS = [
    {"Auto_Submitted": "auto-replied"},
    {"Auto_Submitted": "auto-replied; owner-email=dr.b@x.fr"},
    {"X_Autoreply": "yes"},
    {"X_Autorespond": "Absence"},
    {"Precedence": "auto_reply"},
]


def parsed(raw: bytes) -> EmailMessage:
    mail = BytesParser(policy=READ_POLICY).parsebytes(raw)
    assert isinstance(mail, EmailMessage)
    return mail


def reply(body: str = ABSENT, **headers: str) -> EmailMessage:
    return parsed(
        message(sender="Dr B <dr.b@cabinet.test.mssante.fr>", subject="Absent", body=body, **headers)
    )


@pytest.mark.parametrize("form", FORMS, ids=lambda form: "+".join(form))
def test_each_form_is_an_auto_reply_to_the_message_it_answers(form: dict[str, str]) -> None:
    assert read_auto_reply(reply(In_Reply_To=ORIGINAL, **form)) == AutoReply(
        "dr.b@cabinet.test.mssante.fr", ORIGINAL, ABSENT
    )


def test_without_in_reply_to_the_last_reference_is_the_message_answered() -> None:
    found = read_auto_reply(reply(References=f"<first@x> {ORIGINAL}", Auto_Submitted="auto-replied"))
    assert found is not None and found.original_message_id == ORIGINAL


@pytest.mark.parametrize(
    "headers",
    [
        {"In_Reply_To": ORIGINAL},  # a person's answer
        {"In_Reply_To": ORIGINAL, "Auto_Submitted": "no"},
        {"In_Reply_To": ORIGINAL, "Auto_Submitted": "auto-generated"},  # a notice, not an answer
        {"In_Reply_To": ORIGINAL, "Precedence": "bulk"},
        {"Auto_Submitted": "auto-replied"},  # answers nothing we could find
    ],
    ids=["person", "no", "auto-generated", "bulk", "no-original"],
)
def test_anything_else_is_ordinary_mail(headers: dict[str, str]) -> None:
    assert read_auto_reply(reply(**headers)) is None


def test_a_long_text_is_cut_for_queue_show() -> None:
    found = read_auto_reply(reply("absent " * 200, In_Reply_To=ORIGINAL, X_Autoreply="yes"))
    assert found is not None and len(found.text) == MAX_TEXT and found.text.endswith("…")


NAMES = ["Auto-Submitted", "X-Autoreply", "Precedence", "From", "In-Reply-To"]


@given(st.dictionaries(st.sampled_from(NAMES), st.text(max_size=60)))
@example({"X-Autoreply": "", "From": "<"})  # a From the email package's header objects cannot parse
def test_any_header_values_give_a_reply_or_none(headers: dict[str, str]) -> None:
    raw = "".join(f"{name}: {' '.join(value.split())}\r\n" for name, value in headers.items())
    found = read_auto_reply(parsed((raw + "\r\nbody\r\n").encode("utf-8", "surrogatepass")))
    assert found is None or ("@" in found.responder and found.original_message_id.startswith("<"))
