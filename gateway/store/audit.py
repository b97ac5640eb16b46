"""The audit trail: one row per thing that happened to a message, a delivery or a citizen channel.

Written inside the caller's transaction, so an event exists exactly when the change it records does.
Details are ids and codes, never message content or a full INS.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import cast

from sqlalchemy import Connection, Table, insert
from sqlalchemy.orm import Session

from gateway.store.tables import AuditEvent

AUDIT_EVENTS = cast(Table, AuditEvent.__table__)
"""Named as a table: a Core insert skips the ORM's bulk-insert planning on every event."""


def write_audit(
    session: Session | Connection,
    at: datetime,
    kind: str,
    message_pk: int | None,
    delivery_pk: int | None = None,
    detail: dict[str, object] | None = None,
    channel_pk: int | None = None,
) -> None:
    """Add one event to the audit trail, inside the caller's transaction."""
    session.execute(
        insert(AUDIT_EVENTS).values(
            at=at,
            kind=kind,
            message_pk=message_pk,
            delivery_pk=delivery_pk,
            channel_pk=channel_pk,
            detail=audit_detail(detail),
        )
    )


def audit_detail(detail: dict[str, object] | None) -> str | None:
    """An event's detail as the trail stores it (for callers writing many events in one statement)."""
    return json.dumps(detail, sort_keys=True) if detail else None
