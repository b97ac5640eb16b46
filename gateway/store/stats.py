"""Counts the operators watch, read from the store at scrape time: queue depth, oldest wait, channels, the
ZAM still owed to HL7 producers, the MDMs HL7 consumers have not acknowledged.

Read-only, one short transaction; called from the metrics endpoint's thread (never the event loop) and
by the daemon's status line through ``asyncio.to_thread``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from gateway.errors import StoreError
from gateway.store.mdms import MdmQueue
from gateway.store.repository import Repository
from gateway.store.states import WAITING
from gateway.store.tables import Channel, Delivery, Hl7Zam
from gateway.store.zams import PENDING


@dataclass(frozen=True, slots=True)
class StoreGauges:
    """Deliveries still to do by state, the oldest waiting one's creation time, channels by state, ZAM not
    yet acknowledged by their producer by event (Z02, Z03), and per HL7 consumer the MDMs pending with the
    oldest one's creation time."""

    queue_depth: dict[str, int]
    oldest_waiting: datetime | None
    channels: dict[str, int]
    zams_pending: dict[str, int] = field(default_factory=dict)
    mdm_pending: dict[str, tuple[int, datetime | None]] = field(default_factory=dict)


class StoreStats:
    """Reads the gauges of one store."""

    def __init__(self, sessions: sessionmaker[Session], repository: Repository, mdms: MdmQueue) -> None:
        self.sessions = sessions
        self.repository = repository
        self.mdms = mdms

    def gauges(self) -> StoreGauges:
        """The gauges now; raises StoreError when the database cannot answer."""
        try:
            depth = self.repository.queue_depth()
            with self.sessions() as session:
                oldest = session.execute(
                    select(func.min(Delivery.created_at)).where(
                        Delivery.state.in_([s.value for s in WAITING])
                    )
                ).scalar()
                channels = session.execute(select(Channel.state, func.count()).group_by(Channel.state)).all()
                zams = session.execute(
                    select(Hl7Zam.event, func.count()).where(Hl7Zam.state == PENDING).group_by(Hl7Zam.event)
                ).all()
            mdm_pending = self.mdms.pending()
        except SQLAlchemyError as error:
            raise StoreError(f"cannot read the queue gauges: {error}") from error
        return StoreGauges(
            depth,
            oldest,
            {state: count for state, count in channels},
            {event: count for event, count in zams},
            mdm_pending,
        )
