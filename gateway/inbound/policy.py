"""Pure inbound policy: verdicts on the envelope and the message, before anything is stored.

Who may send (submission clients bound to their sender addresses, operator peers on the trust list), which
recipients are ours (known mailbox, else 550 5.1.1), what may leave (only from authenticated internal
senders: never an open relay) and the size limit. No I/O here. Extra rules (issue 6's citizen-channel gate)
are ``RecipientRule``/``SenderRule`` callables the daemon appends; intake runs them after the built-in ones.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Protocol

from gateway.inbound import replies
from gateway.inbound.arrival import Arrival, Decision, Verdict
from gateway.inbound.trust import DomainTrust, OfficialTrust, StaticTrustList
from gateway.settings import InboundSettings, MailboxSettings, SubmissionClientSettings
from mappers import ins
from mappers.addresses import check_address
from mappers.errors import MappingError
from mappers.mime import Authors
from mappers.records import MessageRecord

INTERNAL_SOURCES = frozenset({"submission", "cli", "hl7"})
"""Sources whose senders are ours: the only ones whose mail may leave for outside domains (``hl7``: a
configured producer over MLLP, named in ``authenticated_as``)."""
AUTHORS_CHECKED = frozenset({"submission"})
"""Sources whose message authors ``Policy.author`` checks against the client's senders."""


class RecipientRule(Protocol):
    """An extra check on one recipient; ``record`` is None at RCPT time (before the data).

    Return a refusal, or None to let the next rule decide. May be async (a rule can look at the store).
    Refuse at RCPT time when the envelope is enough: after DATA, SMTP has one reply for all recipients, so
    a recipient refused only then while others are accepted is logged (``refused-after-data``), not told.
    """

    def __call__(
        self, arrival: Arrival, recipient: str, record: MessageRecord | None
    ) -> Verdict | None | Awaitable[Verdict | None]: ...


class SenderRule(Protocol):
    """An extra check on the sender; a refusal applies to every recipient. ``record`` as above."""

    def __call__(
        self, arrival: Arrival, record: MessageRecord | None
    ) -> Verdict | None | Awaitable[Verdict | None]: ...


def refuse(recipient: str, reply: str) -> Verdict:
    """A verdict from a reply line such as ``replies.NO_SUCH_MAILBOX.format(x)``."""
    code, _, text = reply.partition(" ")
    decision = Decision.TEMPORARY if code.startswith("4") else Decision.PERMANENT
    return Verdict(recipient, decision, int(code), text)


def accept(recipient: str) -> Verdict:
    code, _, text = replies.RECIPIENT_OK.partition(" ")
    return Verdict(recipient, Decision.ACCEPTED, int(code), text)


def path_refusal(address: str, invalid: str, routed: str) -> str | None:
    """``invalid`` or ``routed`` (templates taking the address) when ``address`` is no plain
    local-part@domain: the "percent hack" and a quoted "@" ask the next hop to relay once more, never
    done on a mail gateway; control characters (CR, NUL) could not be written to the next hop."""
    if any(c in address.rpartition("@")[0] for c in "%@"):
        return routed.format(address)
    try:
        check_address(address)
    except MappingError:
        return invalid.format(address)
    return None


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower().rstrip(".")


class Policy:
    """The built-in rules over the inbound settings, plus the extra rules composed by the daemon."""

    def __init__(
        self,
        inbound: InboundSettings,
        clients: Sequence[SubmissionClientSettings] = (),
        trust: DomainTrust | None = None,
        recipient_rules: Sequence[RecipientRule] = (),
        sender_rules: Sequence[SenderRule] = (),
        official: OfficialTrust | None = None,
    ) -> None:
        self.inbound = inbound
        self.trust: DomainTrust = trust if trust is not None else StaticTrustList(())
        self.official = official
        self.recipient_rules = tuple(recipient_rules)
        self.sender_rules = tuple(sender_rules)
        self._mailboxes = {m.address.lower(): m for m in inbound.mailboxes}
        self._domains = frozenset(
            {d.lower().rstrip(".") for d in inbound.domains} | {domain_of(a) for a in self._mailboxes}
        )
        self.clients = tuple(clients)
        self._clients = {c.name: c for c in clients}

    def mailbox(self, address: str) -> MailboxSettings | None:
        """Our mailbox at ``address`` (local part and domain compared without case)."""
        return self._mailboxes.get(address.lower())

    def is_ours(self, address: str) -> bool:
        """Whether ``address`` is in one of our own domains."""
        return domain_of(address) in self._domains

    def leaves(self, source: str, address: str) -> bool:
        """Whether mail from ``source`` to an accepted ``address`` goes out through the relay."""
        return source in INTERNAL_SOURCES and not self.is_ours(address)

    def too_big(self, size: int) -> str | None:
        """The refusal for a message of ``size`` bytes, if over the limit."""
        limit = self.inbound.max_message_size
        return replies.TOO_BIG.format(limit) if limit and size > limit else None

    def sender(self, source: str, identity: str | None, address: str) -> str | None:
        """The refusal of the envelope sender ``address`` (MAIL FROM), if any.

        Checked like a recipient: a DSN goes back to it, so a routed or malformed sender would have the
        gateway relay for whoever wrote it. Not for IMAP: the operator already took that mail for us.
        """
        if address and source != "imap":
            refusal = path_refusal(address, replies.BAD_SENDER, replies.ROUTED_SENDER)
            if refusal is not None:
                return refusal
        if source == "submission":
            return self._assigned(identity, address, replies.SENDER_NOT_YOURS)
        if source == "operator":
            domain = domain_of(address)
            if address and not self.trusted(domain):
                return replies.SENDER_NOT_TRUSTED.format(domain)
        return None

    def trusted(self, domain: str) -> bool:
        """On the official MSSanté list (when the daemon gave it) or on the local list."""
        return self.trust.is_trusted(domain) or (
            self.official is not None and self.official.is_trusted(domain)
        )

    def _outside_mssante(self, address: str) -> bool:
        """Known not to be MSSante: off both trust lists, once the official one is loaded (the operator
        would refuse it later; said now, the client hears it in its own session)."""
        if self.official is None or not self.official.domains or ins.is_citizen_address(address):
            return False
        return not self.trusted(domain_of(address))

    def author(self, arrival: Arrival, authors: Authors | None) -> str | None:
        """The refusal of the message's authors (``mappers.mime.read_authors``, needed for the sources
        of ``AUTHORS_CHECKED``), if any: a submission client writes only as itself, in every address of
        its From field (one field: RFC 5322 § 3.6) and of Sender."""
        if arrival.source not in AUTHORS_CHECKED:
            return None
        if authors is None:
            raise ValueError(f"the authors of a {arrival.source} message are checked: read them")
        if authors.from_fields > 1:
            return replies.TWO_FROM_FIELDS.format(authors.from_fields)
        checked = [(a, replies.FROM_NOT_YOURS) for a in authors.from_addresses]
        checked += [(a, replies.SENDER_FIELD_NOT_YOURS) for a in authors.sender_addresses]
        for address, template in checked:
            refusal = self._assigned(arrival.authenticated_as, address, template)
            if refusal is not None:
                return refusal
        return None

    def _assigned(self, identity: str | None, address: str, template: str) -> str | None:
        client = self._clients.get(identity or "")
        if client is None:
            return replies.AUTH_REQUIRED
        wanted = address.lower()
        for allowed in client.senders:
            allowed = allowed.lower()
            if wanted == allowed or (allowed.startswith("@") and domain_of(wanted) == allowed[1:]):
                return None
        return template.format(address, client.name)

    def recipient(self, source: str, identity: str | None, address: str) -> Verdict:
        """Whether ``address`` may be a recipient of mail from ``source``: ours, or out from inside."""
        refusal = path_refusal(address, replies.BAD_ADDRESS, replies.ROUTED_ADDRESS)
        if refusal is not None:
            return refuse(address, refusal)
        if source == "imap":
            # Read from one of our own mailboxes at the operator: it is ours, wherever it is addressed.
            return accept(address)
        if self.is_ours(address):
            if self.mailbox(address) is not None:
                return accept(address)
            return refuse(address, replies.NO_SUCH_MAILBOX.format(address))
        if source in INTERNAL_SOURCES and (identity is not None or source == "cli"):
            if self._outside_mssante(address):
                return refuse(address, replies.NOT_MSSANTE.format(domain_of(address)))
            return accept(address)
        return refuse(address, replies.RELAY_DENIED.format(address))
