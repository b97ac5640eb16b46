"""The room kept aside beside an SQLite store: only for SQLite files, held once, given back once."""

from __future__ import annotations

from pathlib import Path

from gateway.store.reserve import SpaceReserve
from gateway.store_health import StoreHealth


def test_only_an_sqlite_file_has_a_reserve(tmp_path: Path) -> None:
    reserve = SpaceReserve.for_store(f"sqlite:///{tmp_path / 'store.db'}")
    assert reserve is not None and reserve.path == tmp_path / "store.db-reserve"
    assert SpaceReserve.for_store("sqlite:///:memory:") is None
    assert SpaceReserve.for_store("postgresql+psycopg://postgres@127.0.0.1/test") is None


def test_the_reserve_is_private_and_given_back_on_a_full_disk(tmp_path: Path) -> None:
    reserve = SpaceReserve(tmp_path / "store.db-reserve", size=65536)
    health = StoreHealth(reserve=reserve)
    assert health.room_for_intake() and health.room_set_aside
    assert reserve.path.stat().st_size == 65536
    assert reserve.path.stat().st_mode & 0o777 == 0o600
    health.failed("claim-due", OSError(28, "No space left on device"))
    assert not reserve.path.exists() and not health.room_set_aside
    assert health.room_for_intake() and reserve.path.exists()


def test_a_store_error_that_is_not_a_full_disk_keeps_the_reserve(tmp_path: Path) -> None:
    reserve = SpaceReserve(tmp_path / "store.db-reserve", size=4096)
    health = StoreHealth(reserve=reserve)
    assert health.room_for_intake()
    health.failed("claim-due", ConnectionError("server closed the connection"))
    assert reserve.path.exists() and health.room_set_aside
