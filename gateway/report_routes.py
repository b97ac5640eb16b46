"""Where a sender's delivery reports go: back the way the sender reached the gateway.

A report (a DSN the relay or the intake writes, or a DSN/MDN received for one of our messages) goes to the
original envelope sender's own mailbox when the sender is one of ours that delivers (drop folder, forward
host); else to the internal MTA its submission client names (``return_host``); mail that came from another
operator on port 25 gets it through the relay like any outgoing mail; anything else (``mssgw send``, the
store API, IMAP) keeps it in the store only. Pure: the relay, the intake and ``mssgw queue show`` ask here.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.settings import InboundSettings, MailboxSettings, SubmissionClientSettings

MAILBOX = "mailbox"
CLIENT_PREFIX = "client:"
RELAYED = "relay"
"""The ``via`` of a report that leaves like any outgoing mail (routed by its recipient's domain)."""

NO_NOTIFY = "NEVER"
"""The NOTIFY a report's own delivery carries: a report about a report is never written (RFC 3461 § 4.1,
RFC 5321 § 4.5.5), whatever its envelope sender."""


@dataclass(frozen=True, slots=True)
class ReportRoute:
    """The way back for one sender's reports; ``via`` is None when they stay in the store only."""

    via: str | None
    description: str

    @property
    def delivery_via(self) -> str | None:
        """The ``via`` of the report's queue row (``RELAYED`` reports are routed by recipient)."""
        return None if self.via == RELAYED else self.via


class ReportRoutes:
    """Decides report routes over the mailboxes and submission clients of one configuration."""

    def __init__(self, inbound: InboundSettings, clients: tuple[SubmissionClientSettings, ...]) -> None:
        self._mailboxes = {m.address.lower(): m for m in inbound.mailboxes if m.delivered}
        self._clients = {c.name: c for c in clients}

    def route(self, sender: str, source: str, client: str | None) -> ReportRoute:
        """The way back to ``sender`` for a message that came from ``source`` (and submission ``client``)."""
        if not sender:
            return ReportRoute(None, "none (null sender: a report is never answered with a report)")
        mailbox = self._mailboxes.get(sender.lower())
        if mailbox is not None:
            return ReportRoute(MAILBOX, f"sent to {_mailbox_target(mailbox)} (mailbox {mailbox.address})")
        known = self._clients.get(client or "") if source == "submission" else None
        if known is not None and known.return_host:
            target = f"{known.return_host}:{known.return_port} (submission client {known.name})"
            return ReportRoute(CLIENT_PREFIX + known.name, f"sent to {target}")
        if source == "operator":
            return ReportRoute(RELAYED, "sent back through the relay (the message came from an operator)")
        if source == "submission":
            return ReportRoute(
                None, f"kept in the store (submission client {client or '?'} has no return_host)"
            )
        if source == "imap":
            return ReportRoute(None, "kept in the store (the message was read from the operator by IMAP)")
        return ReportRoute(None, "kept in the store (message created by mssgw send / store API)")

    def client(self, name: str) -> SubmissionClientSettings | None:
        """The submission client a ``client:<name>`` route names, while it still has a return host."""
        known = self._clients.get(name)
        return known if known is not None and known.return_host else None


def wants(notify: str | None, event: str) -> bool:
    """Whether a recipient's RFC 3461 NOTIFY asks for a report on ``event`` (``SUCCESS``, ``FAILURE``).

    Without NOTIFY, only failures are reported (RFC 3461 § 4.1); ``NEVER`` asks for nothing.
    """
    if notify is None:
        return event == "FAILURE"
    return event in {word.strip().upper() for word in notify.split(",")}


def _mailbox_target(mailbox: MailboxSettings) -> str:
    targets = []
    if mailbox.drop_folder is not None:
        targets.append(f"the drop folder {mailbox.drop_folder}")
    if mailbox.forward_host:
        targets.append(f"{mailbox.forward_host}:{mailbox.forward_port}")
    return " and ".join(targets)
