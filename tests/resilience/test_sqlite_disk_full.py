"""SQLite on a full disk: intake refuses with ``452 4.3.1`` and keeps nothing, the daemon stays up, mail
already queued is still delivered, a start on the full disk still starts, and mail is taken again as soon
as there is room — without a restart.

The disk is a real small filesystem (tmpfs, 8 MB) mounted by the test, filled with a file; where mounting
is refused (not root), the test skips. What lets queued mail leave is the room the daemon keeps aside beside
the database (``store.db-reserve``) and gives back at the first "disk full".
"""

from __future__ import annotations

import errno
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fake_operator import FakeOperator, FakeOperatorFactory
from tests.support.gateway import SENDER, Gateway, gateway_for
from tests.support.mail import message
from tests.support.pki import Pki
from tests.support.submission import add_submission, submission_client

RECIPIENT = "dr.martin@cabinet.test.mssante.fr"
BIG = "x" * 76 + "\n"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {result.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until the filesystem has no room left.

    Unbuffered: a buffered file would keep the octets of the last partial write and fail again with
    ENOSPC when it is closed, depending on how much room there was."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as out:
        try:
            while True:
                out.write(b"\0" * 65536)
        except OSError as error:
            assert error.errno == errno.ENOSPC
    return filler


def submit(gateway: Gateway, pki: Pki, number: int, lines: int = 1) -> tuple[int, str]:
    """One message; the DATA reply (code, text)."""
    raw = message(
        sender=SENDER, to=RECIPIENT, body=BIG * lines, Message_ID=f"<full-{number}@hopital.test.mssante.fr>"
    )
    with submission_client(gateway, pki) as client:
        assert client.mail(SENDER)[0] == 250
        assert client.rcpt(RECIPIENT)[0] == 250
        code, text = client.data(raw)
    return code, text.decode("ascii")


def delivered(operator: FakeOperator) -> Counter[str]:
    return Counter(str(m.message["Message-ID"]) for m in operator.messages)


def test_a_full_disk_refuses_with_452_and_keeps_delivering(
    tmp_path: Path, pki: Pki, fake_operator: FakeOperatorFactory, gateways: list[Gateway], small_disk: Path
) -> None:
    """One transaction at a time: when the disk fills, two messages are queued and not yet claimed, and
    claiming them needs a write — the reserve is what makes room for it."""
    operator = fake_operator()
    store_url = f"sqlite:///{small_disk / 'store.db'}"
    gateway = gateway_for(tmp_path / "gw", pki, operator, store_url=store_url, relay={"concurrency": 1})
    add_submission(gateway, pki, tmp_path)
    gateways.append(gateway)
    gateway.start()
    reserve = small_disk / "store.db-reserve"
    assert reserve.stat().st_size == 2 * 1024 * 1024
    operator.hold()
    assert [submit(gateway, pki, n)[0] for n in (1, 2, 3)] == [250, 250, 250]
    operator.wait_for_held(1)

    filler = fill(small_disk)
    code, text = submit(gateway, pki, 4, lines=20_000)
    assert (code, text[:5]) == (452, "4.3.1"), text
    assert not reserve.exists()
    # While the reserve is given back, even a small message is refused without being tried.
    assert submit(gateway, pki, 8)[0] == 452
    # Mail queued before the disk filled up still leaves.
    operator.release()
    operator.wait_until(lambda: len(delivered(operator)) == 3, timeout=30, what="the 3 queued messages")
    assert gateway.process is not None and gateway.process.poll() is None, gateway.output()

    filler.unlink()
    assert submit(gateway, pki, 5)[0] == 250
    assert reserve.exists()
    operator.wait_until(
        lambda: len(delivered(operator)) == 4, timeout=30, what="the message after the room came"
    )
    assert gateway.stop() == 0

    filler = fill(small_disk)
    gateway.start()
    assert submit(gateway, pki, 6, lines=20_000)[0] == 452
    filler.unlink()
    assert submit(gateway, pki, 7)[0] == 250
    operator.wait_until(
        lambda: len(delivered(operator)) == 5, timeout=30, what="the message after the restart"
    )
    assert gateway.stop() == 0
    counts = delivered(operator)
    assert sorted(counts) == [f"<full-{n}@hopital.test.mssante.fr>" for n in (1, 2, 3, 5, 7)]
    assert set(counts.values()) == {1}
    assert gateway.json("queue", "list") == []
    output = gateway.output()
    assert "event=store-unavailable" in output and "error=disk-full" in output
    assert "event=store-reserve-released" in output and "event=store-reserve-held" in output


def test_a_large_message_on_a_full_disk_gets_452_from_the_spool_and_nothing_accepted_is_lost(
    tmp_path: Path, pki: Pki, fake_operator: FakeOperatorFactory, gateways: list[Gateway], small_disk: Path
) -> None:
    """The state directory is on the full disk too: a message past the spool threshold (2 MiB) is refused
    while it arrives, before intake or the store see it, and the reply is still ``452 4.3.1`` over the
    real socket; the session goes on, and what was accepted before still leaves, once."""
    operator = fake_operator()
    store_url = f"sqlite:///{small_disk / 'store.db'}"
    gateway = gateway_for(small_disk / "gw", pki, operator, store_url=store_url, relay={"concurrency": 1})
    add_submission(gateway, pki, tmp_path)
    gateways.append(gateway)
    gateway.start()
    operator.hold()
    assert [submit(gateway, pki, n)[0] for n in (1, 2, 3)] == [250, 250, 250]
    operator.wait_for_held(1)

    filler = fill(small_disk)
    code, text = submit(gateway, pki, 4, lines=30_000)  # 2.2 MB: spooled
    assert (code, text[:5]) == (452, "4.3.1"), text
    output = gateway.output()
    assert "event=data-refused" in output and "reason=spool" in output and "error=ENOSPC" in output
    operator.release()
    operator.wait_until(lambda: len(delivered(operator)) == 3, timeout=30, what="the 3 queued messages")
    assert gateway.process is not None and gateway.process.poll() is None, gateway.output()

    filler.unlink()
    assert submit(gateway, pki, 5, lines=30_000)[0] == 250
    operator.wait_until(
        lambda: len(delivered(operator)) == 4, timeout=30, what="the large message after the room came"
    )
    assert gateway.stop() == 0
    counts = delivered(operator)
    assert sorted(counts) == [f"<full-{n}@hopital.test.mssante.fr>" for n in (1, 2, 3, 5)]
    assert set(counts.values()) == {1}
    assert gateway.json("queue", "list") == []
