"""Counts the operators watch, read from the store at scrape time: queue depth, oldest wait, channels.

Read-only, one short transaction; called from the metrics endpoint's thread (never the event loop) and
by the daemon's status line through ``asyncio.to_thread``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from gateway.errors import StoreError
from gateway.store.repository import Repository
from gateway.store.states import WAITING
from gateway.store.tables import Channel, Delivery


@dataclass(frozen=True, slots=True)
class StoreGauges:
    """Deliveries still to do by state, the oldest waiting one's creation time, channels by state."""

    queue_depth: dict[str, int]
    oldest_waiting: datetime | None
    channels: dict[str, int]


class StoreStats:
    """Reads the gauges of one store."""

    def __init__(self, sessions: sessionmaker[Session], repository: Repository) -> None:
        self.sessions = sessions
        self.repository = repository

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
        except SQLAlchemyError as error:
            raise StoreError(f"cannot read the queue gauges: {error}") from error
        return StoreGauges(depth, oldest, {state: count for state, count in channels})
