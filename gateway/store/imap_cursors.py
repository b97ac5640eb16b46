"""How far the IMAP bridge has read each (account, folder): UIDVALIDITY, last UID, last sync, last error.

The cursor only moves after the messages up to it are committed and acknowledged on the server, so a crash
makes the bridge fetch again what the intake de-duplicates. A row may exist before the first sync (to
keep an error for ``mssgw imap status``); its UIDVALIDITY is then 0, which no IMAP server gives
(RFC 3501 §2.3.1.1). Synchronous, run in worker threads.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gateway.store.tables import ImapCursor

_NO_CURSOR = 0


@dataclass(frozen=True, slots=True)
class FolderStatus:
    """One (account, folder) as ``mssgw imap status`` shows it."""

    account: str
    folder: str
    uidvalidity: int | None
    last_uid: int | None
    last_sync_at: datetime | None
    last_error: str | None


class ImapCursors:
    """Cursor rows of the ``imap_cursors`` table."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def load(self, account: str, folder: str) -> tuple[int, int] | None:
        """(UIDVALIDITY, last UID) once a first sync has set them, else None."""
        with self.sessions() as session:
            row = session.get(ImapCursor, (account, folder))
            if row is None or row.uidvalidity == _NO_CURSOR:
                return None
            return row.uidvalidity, row.last_uid

    def save(self, account: str, folder: str, uidvalidity: int, last_uid: int, at: datetime) -> None:
        """Move the cursor; a successful sync also clears the last error."""
        with self.sessions.begin() as session:
            row = self._row(session, account, folder)
            row.uidvalidity, row.last_uid = uidvalidity, last_uid
            row.last_sync_at, row.last_error = at, None

    def record_error(self, account: str, folder: str, error: str) -> None:
        """Keep the latest failure for the status command."""
        with self.sessions.begin() as session:
            self._row(session, account, folder).last_error = error[:1000]

    def statuses(self) -> list[FolderStatus]:
        """Every known (account, folder), sorted."""
        with self.sessions() as session:
            rows = session.execute(select(ImapCursor).order_by(ImapCursor.account, ImapCursor.folder))
            return [
                FolderStatus(
                    row.account,
                    row.folder,
                    row.uidvalidity or None,
                    row.last_uid if row.uidvalidity else None,
                    row.last_sync_at,
                    row.last_error,
                )
                for row in rows.scalars()
            ]

    @staticmethod
    def _row(session: Session, account: str, folder: str) -> ImapCursor:
        row = session.get(ImapCursor, (account, folder), with_for_update=True)
        if row is None:
            row = ImapCursor(account=account, folder=folder, uidvalidity=_NO_CURSOR, last_uid=0)
            session.add(row)
        return row
