"""The pure inbound policy and the submission-header stripping, without sockets or a store."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.inbound.dkim_check import claims_authserv_id
from gateway.inbound.instructions import strip_submission_headers
from gateway.inbound.parameters import mail_parameters, rcpt_parameters
from gateway.inbound.policy import Policy
from gateway.inbound.trust import StaticTrustList
from gateway.settings import SubmissionClientSettings
from tests.support.mail import APP, CLIENTS, MAILBOX, OUR_DOMAIN, OUTSIDE, PEER_DOMAIN, inbound_settings

POLICY = Policy(inbound_settings(), CLIENTS, StaticTrustList([PEER_DOMAIN, ".hopitaux.test"]))


def test_who_may_send_to_whom() -> None:
    cases = {
        ("submission", "dpi", OUTSIDE): 250,
        ("submission", None, OUTSIDE): 554,
        ("operator", "peer", OUTSIDE): 554,
        ("imap", None, OUTSIDE): 250,
        ("operator", None, MAILBOX): 250,
        ("operator", None, f"other@{OUR_DOMAIN}"): 550,
        ("imap", None, f"other@{OUR_DOMAIN}"): 250,
        ("cli", None, OUTSIDE): 250,
        ("submission", "dpi", "not an address"): 553,
    }
    assert {case: POLICY.recipient(*case).code for case in cases} == cases
    assert POLICY.leaves("submission", OUTSIDE) and POLICY.leaves("cli", OUTSIDE)
    assert not POLICY.leaves("imap", OUTSIDE) and not POLICY.leaves("submission", MAILBOX)


def test_senders_are_bound_to_their_client_and_operators_to_the_trust_list() -> None:
    wide = Policy(inbound_settings(), [SubmissionClientSettings("app", senders=(f"@{OUR_DOMAIN}",))])
    assert POLICY.sender("submission", "dpi", APP.upper()) is None
    assert (POLICY.sender("submission", "dpi", MAILBOX) or "").startswith("553 5.7.1")
    assert (POLICY.sender("submission", None, APP) or "").startswith("530 5.7.0")
    assert wide.sender("submission", "app", MAILBOX) is None
    assert POLICY.sender("operator", None, f"x@{PEER_DOMAIN}") is None
    assert POLICY.sender("operator", None, "x@ward.hopitaux.test") is None
    assert (POLICY.sender("operator", None, "x@hopitaux.test.evil") or "").startswith("550 5.7.1")
    assert POLICY.sender("operator", None, "") is None  # bounces from operators are accepted


def test_the_size_limit() -> None:
    small = Policy(inbound_settings(max_message_size=10))
    assert small.too_big(10) is None
    assert (small.too_big(11) or "").startswith("552 5.3.4")


_names = st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,15}", fullmatch=True)
_values = st.from_regex(r"[ -~]{0,30}", fullmatch=True)


@given(
    st.lists(st.tuples(st.booleans(), _names, _values, st.booleans()), max_size=12),
    st.one_of(st.binary(max_size=200), st.just(b"X-MSSGW-Body: 1\r\n\r\nrest")),
)
def test_stripping_removes_every_submission_field_and_nothing_else(
    fields: list[tuple[bool, str, str, bool]], body: bytes
) -> None:
    kept, lines = [], []
    for ours, name, value, folded in fields:
        field = f"{'X-MSSGW-' if ours else ''}{name}: {value}\r\n" + (" more\r\n" if folded else "")
        lines.append(field)
        if not (ours or name.lower().startswith("x-mssgw-")):
            kept.append(field)
    raw = "".join(lines).encode() + b"\r\n" + body
    assert strip_submission_headers(raw) == "".join(kept).encode() + b"\r\n" + body


@given(st.text(max_size=80))
def test_rcpt_parameters_never_raise_and_keep_orcpt_case(params: str) -> None:
    recipient, refusal = rcpt_parameters("a@b.test", params)
    assert recipient.address == "a@b.test"
    if refusal is None and recipient.orcpt is not None:
        assert recipient.orcpt in params


def test_rcpt_parameters_of_rfc_3461() -> None:
    recipient, refusal = rcpt_parameters("b@y.test", "NOTIFY=success,FAILURE ORCPT=rfc822;B@y.test")
    assert refusal is None and (recipient.notify, recipient.orcpt) == ("SUCCESS,FAILURE", "rfc822;B@y.test")
    for bad in (
        "NOTIFY=NEVER,SUCCESS",
        "NOTIFY=SOMETIMES",
        "ORCPT=b@y",
        "FOO=1",
        "NOTIFY=SUCCESS NOTIFY=DELAY",
    ):
        assert (rcpt_parameters("b@y.test", bad)[1] or "").startswith("555 5.5.4"), bad


def test_mail_parameters_of_rfc_3461_keep_the_envid_as_sent() -> None:
    parameters, refusal = mail_parameters("RET=hdrs ENVID=Abc+2Bx SIZE=100 BODY=8BITMIME", 1000)
    assert refusal is None and (parameters.envid, parameters.ret, parameters.size) == ("Abc+2Bx", "HDRS", 100)
    assert (mail_parameters("SIZE=1001", 1000)[1] or "").startswith("552 5.3.4")
    for bad in ("RET=ALL", "ENVID=a=b", "ENVID=x ENVID=y", "SMTPUTF8", "AUTH=<>", "SIZE=big"):
        assert (mail_parameters(bad, 1000)[1] or "").startswith("555 5.5.4"), bad


@given(st.text(max_size=80), st.integers(min_value=0, max_value=10**9))
def test_mail_parameters_never_raise(params: str, limit: int) -> None:
    parameters, refusal = mail_parameters(params, limit)
    assert refusal is not None or parameters.envid is None or parameters.envid in params


def test_the_envelope_sender_is_checked_like_a_recipient_but_with_5_1_7() -> None:
    local, _, domain = APP.partition("@")
    hostile = (f"{local}\r@{domain}", f"{local}\0@{domain}", f'"{OUTSIDE}"@{domain}', f"a%b.test@{domain}")
    for address in hostile:
        for source in ("submission", "operator", "cli"):
            refusal = POLICY.sender(source, "dpi", address)
            assert refusal is not None and refusal.startswith("553 5.1.7 Sender <"), (source, address)
    assert POLICY.sender("submission", "dpi", APP) is None
    assert POLICY.sender("operator", None, "") is None  # the null sender of a bounce
    assert POLICY.sender("imap", None, f"a%b.test@{domain}") is None  # taken by the operator already


def test_only_authentication_results_under_our_name_are_ours() -> None:
    host = "mssgw.hopital.test"
    assert claims_authserv_id(b"Authentication-Results: MSSGW.hopital.test; dkim=pass\r\n", host)
    assert claims_authserv_id(b"authentication-results:\r\n mssgw.hopital.test 1;\r\n spf=pass\r\n", host)
    assert not claims_authserv_id(b"Authentication-Results: mx.other.test; dkim=pass\r\n", host)
    assert not claims_authserv_id(b"X-Authentication-Results: mssgw.hopital.test; dkim=pass\r\n", host)
