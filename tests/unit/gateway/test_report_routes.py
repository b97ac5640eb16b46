"""Where delivery reports go, and which NOTIFY asks for which report (RFC 3461 § 4.1): pure rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.report_routes import ReportRoutes, wants
from gateway.settings import InboundSettings, MailboxSettings, SubmissionClientSettings

ROUTES = ReportRoutes(
    InboundSettings(mailboxes=(MailboxSettings("box@h.test", drop_folder=Path("/drop")),)),
    (
        SubmissionClientSettings("dpi", return_host="mta.h.local", return_port=2525),
        SubmissionClientSettings("lab"),
    ),
)


@pytest.mark.parametrize(
    ("notify", "success", "failure"),
    [(None, False, True), ("NEVER", False, False), ("SUCCESS", True, False), ("success,FAILURE", True, True)],
)
def test_notify_asks_for_reports(notify: str | None, success: bool, failure: bool) -> None:
    assert (wants(notify, "SUCCESS"), wants(notify, "FAILURE")) == (success, failure)


@pytest.mark.parametrize(
    ("sender", "source", "client", "via", "said"),
    [
        ("", "submission", "dpi", None, "none (null sender"),
        ("BOX@h.test", "cli", None, "mailbox", "sent to the drop folder /drop (mailbox box@h.test)"),
        ("a@h.test", "submission", "dpi", "client:dpi", "sent to mta.h.local:2525 (submission client dpi)"),
        (
            "a@h.test",
            "submission",
            "lab",
            None,
            "kept in the store (submission client lab has no return_host)",
        ),
        ("a@h.test", "cli", None, None, "kept in the store (message created by mssgw send / store API)"),
        ("x@peer.test", "operator", None, "relay", "sent back through the relay"),
    ],
)
def test_reports_go_back_the_way_the_sender_came(
    sender: str, source: str, client: str | None, via: str | None, said: str
) -> None:
    route = ROUTES.route(sender, source, client)
    assert route.via == via and route.description.startswith(said)
