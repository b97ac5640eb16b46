"""A crash storm: several hospital applications submit at once while ``mssgw run`` is SIGKILLed at random
moments — each kill lands while mail is being taken in and relayed — and restarted each time. At the end
the fake operator has every message that got a ``250`` at least once, copies beyond the first number at
most ``relay.concurrency`` per kill (only transactions in flight may go twice), nothing is ``held`` (no
delivery was in flight at three kills), every kill found the daemon running (-9) and the last stop exits 0.

The kill moments come from a seeded generator; the seed is printed (set ``MSSGW_CRASH_SEED`` to replay
one). The normal suite runs a small storm on each store; ``MSSGW_RESILIENCE_FULL=1`` runs the full one of
issue 11 (2,000 messages, 5 kills, on SQLite and PostgreSQL). Each run prints one ``crash-storm`` line
with its figures, peak RSS of the daemon included (``-s`` shows it; docs/reliability.md quotes them).
"""

from __future__ import annotations

import os
import random
import smtplib
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.fake_operator import FakeOperator, FakeOperatorFactory
from tests.support.gateway import SENDER, Gateway, closed_port, gateway_for
from tests.support.mail import message
from tests.support.pki import Pki
from tests.support.submission import add_submission, submission_client

FULL = os.environ.get("MSSGW_RESILIENCE_FULL") == "1"
MESSAGES = 2000 if FULL else 300
KILLS = 5 if FULL else 3
SENDERS = 4
CONCURRENCY = 8
RECIPIENT = "dr.martin@cabinet.test.mssante.fr"


@dataclass
class Senders:
    """``SENDERS`` applications submitting one message after another; each reconnects after a kill and
    goes on with a new message (one that got no reply may or may not have been kept: it is not counted)."""

    gateway: Gateway
    pki: Pki
    port: int
    accepted: list[str] = field(default_factory=list)
    codes: Counter[int] = field(default_factory=Counter)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, number: int) -> None:
        sequence = 0
        while not self.stop.is_set():
            try:
                with submission_client(self.gateway, self.pki, port=self.port) as client:
                    while not self.stop.is_set():
                        sequence += 1
                        message_id = f"<storm-{number}-{sequence}@hopital.test.mssante.fr>"
                        raw = message(sender=SENDER, to=RECIPIENT, Message_ID=message_id)
                        client.mail(SENDER)
                        client.rcpt(RECIPIENT)
                        code, _ = client.data(raw)
                        with self.lock:
                            self.codes[code] += 1
                            if code == 250:
                                self.accepted.append(message_id)
                        if code != 250:
                            client.rset()
            except (smtplib.SMTPException, OSError):
                # The daemon died under the session (or is not listening yet): try again shortly.
                time.sleep(0.05)

    def count(self) -> int:
        with self.lock:
            return len(self.accepted)


def wait(condition: Callable[[], bool], timeout: float, what: str, gateway: Gateway) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert gateway.process is not None and gateway.process.poll() is None, gateway.output()[-4000:]
        assert time.monotonic() < deadline, f"{what} not seen within {timeout}s:\n{gateway.output()[-4000:]}"
        time.sleep(0.01)


def delivered(operator: FakeOperator) -> Counter[str]:
    return Counter(str(m.message["Message-ID"]) for m in operator.messages)


def test_random_sigkills_during_intake_and_relay_lose_nothing(
    tmp_path: Path,
    pki: Pki,
    fake_operator: FakeOperatorFactory,
    store_url: str,
    gateways: list[Gateway],
) -> None:
    seed = int(os.environ.get("MSSGW_CRASH_SEED") or random.randrange(2**32))
    store = "postgresql" if store_url else "sqlite"
    print(f"crash-storm seed={seed} store={store} messages={MESSAGES} kills={KILLS}")
    shuffle = random.Random(seed)
    operator = fake_operator()
    relay = {"concurrency": CONCURRENCY, "connections_per_destination": 4}
    gateway = gateway_for(tmp_path / "gw", pki, operator, store_url=store_url, relay=relay)
    port = closed_port()
    add_submission(gateway, pki, tmp_path, port=port)
    gateways.append(gateway)
    # Kill after these many 250s, spread over the intake.
    moments = sorted(shuffle.sample(range(MESSAGES // 10, MESSAGES * 9 // 10), KILLS))
    senders = Senders(gateway, pki, port)
    threads = [threading.Thread(target=senders.run, args=(n,), daemon=True) for n in range(SENDERS)]
    codes: list[int] = []
    peak = 0
    gateway.start()
    for thread in threads:
        thread.start()
    try:
        for moment in moments:
            relayed = len(operator.messages)
            # Both at work: mail coming in, and this run of the daemon relaying it.
            wait(lambda m=moment: senders.count() >= m, 300, f"{moment} messages accepted", gateway)
            wait(lambda r=relayed: len(operator.messages) > r, 60, "a delivery of this run", gateway)
            time.sleep(shuffle.uniform(0.0, 0.3))
            peak = max(peak, gateway.peak_rss())
            codes.append(gateway.kill())
            gateway.start()
        wait(lambda: senders.count() >= MESSAGES, 600, f"{MESSAGES} messages accepted", gateway)
    finally:
        senders.stop.set()
        for thread in threads:
            thread.join(30)
    accepted = set(senders.accepted)
    wait(lambda: set(delivered(operator)) >= accepted, 600, "every accepted message delivered", gateway)
    wait(lambda: gateway.json("queue", "list") == [], 120, "an empty queue", gateway)
    peak = max(peak, gateway.peak_rss())
    codes.append(gateway.stop())
    counts = delivered(operator)
    lost = len(accepted - set(counts))
    duplicated = sum(n - 1 for n in counts.values())
    held = len(gateway.json("queue", "list", "--state", "held"))
    print(
        f"crash-storm seed={seed} store={store} accepted={len(accepted)} kills={KILLS} lost={lost} "
        f"duplicated={duplicated} held={held} exit_codes={codes} replies={dict(senders.codes)} "
        f"peak_rss_mib={peak / 2**20:.0f}"
    )
    assert lost == 0, f"seed {seed}"
    assert duplicated <= KILLS * CONCURRENCY, f"seed {seed}"
    assert held == 0, f"seed {seed}"
    assert codes == [-9] * KILLS + [0], f"seed {seed}"
    assert set(senders.codes) <= {250, 451}, f"seed {seed}: {senders.codes}"
