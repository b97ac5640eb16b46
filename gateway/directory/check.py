"""The recipient check against the national directory: a mistyped MSSanté address stopped before it leaves.

A recipient rule (``gateway.inbound.policy.RecipientRule``) composed into intake, so every path (both SMTP
listeners, ``mssgw send``) is checked in one place. It only looks at mail leaving for an MSSanté domain (on
the trust list, not ``patient.mssante.fr`` — patients are checked by INS — not one of our own domains). An
address absent from the directory is logged and counted (``warn``) or refused with the closest addresses of
its domain (``refuse``). An address delivered to before always passes: a mailbox on the "liste rouge" is
valid and unpublished. Without a directory in force nothing is checked (one warning per process).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from gateway import metrics
from gateway.inbound import replies
from gateway.inbound.arrival import Arrival, Verdict
from gateway.inbound.policy import Policy, domain_of, refuse
from gateway.logsetup import log_event
from gateway.settings import Settings
from gateway.store.directory import DirectoryStore
from mappers import ins
from mappers.directory import closest
from mappers.records import MessageRecord

log = logging.getLogger(__name__)

SMTP_SOURCES = ("submission", "operator")
"""Sources asked at RCPT time (no record yet) and again after DATA: they are judged and told at RCPT."""


class DirectoryCheck:
    """``rule`` is the recipient rule; settings and policy are read through callables, so reloads reach it."""

    def __init__(
        self,
        settings: Callable[[], Settings],
        policy: Callable[[], Policy],
        directory: DirectoryStore,
        delivered_to: Callable[[str], bool],
        trusted: Callable[[str], bool],
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.directory = directory
        self.delivered_to = delivered_to
        self.trusted = trusted
        self._warned_missing = False

    async def rule(self, arrival: Arrival, recipient: str, record: MessageRecord | None) -> Verdict | None:
        mode = self.settings().directory.check
        if mode == "off" or not self._is_mssante_recipient(arrival.source, recipient):
            return None
        # SMTP asks twice (RCPT, then after DATA): the first time decides, logs and counts.
        first_look = record is None or arrival.source not in SMTP_SOURCES
        if not first_look:
            return None
        known = await asyncio.to_thread(self.directory.knows, recipient)
        if known is None:
            if not self._warned_missing:
                self._warned_missing = True
                log_event(
                    log,
                    "directory-missing",
                    logging.WARNING,
                    check=mode,
                    hint="no directory loaded: recipients are not checked; run mssgw directory update",
                )
            return None
        if known or await asyncio.to_thread(self.delivered_to, recipient):
            return None
        metrics.directory_unknown(mode)
        if mode == "warn":
            log_event(
                log, "directory-unknown-recipient", source=arrival.source, recipient=recipient, check=mode
            )
            return None
        suggestions = closest(recipient, await asyncio.to_thread(self.directory.neighbours, recipient))
        log_event(
            log,
            "directory-unknown-recipient",
            source=arrival.source,
            recipient=recipient,
            check=mode,
            suggested=len(suggestions),
        )
        hint = f"; did you mean {', '.join(suggestions)}?" if suggestions else ""
        return refuse(recipient, replies.NOT_IN_DIRECTORY.format(recipient, hint))

    def _is_mssante_recipient(self, source: str, recipient: str) -> bool:
        policy = self.policy()
        return (
            policy.leaves(source, recipient)
            and not ins.is_citizen_address(recipient)
            and self.trusted(domain_of(recipient))
        )
