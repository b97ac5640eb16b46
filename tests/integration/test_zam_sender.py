"""The ZAM sender against a real MLLP endpoint playing the producer: AA marks a ZAM done; no endpoint, no
answer or another code keep it, with the error and a later attempt, until an AA comes."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import hl7

from gateway import metrics
from gateway import settings as settings_module
from gateway.outbound.zam_sender import ZamSender
from gateway.scheduler import Scheduler
from gateway.store.db import Store
from gateway.store.receipts import RecipientStatus
from gateway.tls import server_context
from tests.integration.test_hl7_zam_store import DOCTOR, T0, hl7_mail, receipt, zams
from tests.support.mllp import ZamEndpoint
from tests.support.pki import Pki


def settings_for(
    port: int, tls: dict[str, str] | None = None, **producer: object
) -> settings_module.Settings:
    return settings_module.from_mapping(
        {
            "gateway": {"hostname": "mssgw.test.mssante.fr", "nil_reference": "DEV935997"},
            "tls": tls or {},
            "routes": [{"domain": "*", "transport": "folder", "path": "/x"}],
            "hl7": {
                "application": "PFI",
                "facility": "CHU_X",
                "producers": [
                    {
                        "name": "dpi",
                        "application": "DPI",
                        "facility": "CHU_X",
                        "from_address": "cr@hopital.test.mssante.fr",
                        "zam_host": "127.0.0.1",
                        "zam_port": port,
                        **producer,
                    }
                ],
            },
        }
    )


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def owe_a_z03(store: Store) -> None:
    store.repository.add_messages([hl7_mail("Z03")], T0)
    store.repository.add_messages([receipt("mdn", "MSG-42", RecipientStatus(DOCTOR, "displayed"))], T0)


async def test_an_aa_marks_the_zam_done(store: Store) -> None:
    owe_a_z03(store)
    with ZamEndpoint() as endpoint:
        sender = ZamSender(settings_for(endpoint.port), store.zams, Scheduler(), Clock())
        await sender.run()
        (frame,) = endpoint.received()
    zam = hl7.parse(frame)
    assert str(zam.segment("MSH")[9]) == "ZAM^Z03^ZAM_Z01"
    assert (str(zam.segment("MSH")[3]), str(zam.segment("MSH")[5])) == ("PFI", "DPI")
    assert zam.extract_field("OBX", 1, 4, 1, 1) == "MSG-42"
    assert zam.extract_field("OBX", 2, 5, 1, 4) == DOCTOR
    assert zams(store) == [("Z03", "MSG-42", DOCTOR, None, "acked")]


async def test_no_endpoint_then_an_ae_are_retried_until_an_aa(store: Store) -> None:
    owe_a_z03(store)
    clock = Clock()
    with ZamEndpoint() as probe:
        port = probe.port  # a port nobody listens on once closed
    sender = ZamSender(settings_for(port), store.zams, Scheduler(), clock)
    await sender.run()
    (owed,) = store.queue.show(1).zams
    assert (owed.state, owed.attempts, owed.next_attempt_at) == ("pending", 1, T0 + timedelta(seconds=5))
    assert owed.last_error is not None and owed.last_error.startswith("no ACK")
    await sender.run()  # not due yet: nothing sent
    assert store.queue.show(1).zams[0].attempts == 1
    with ZamEndpoint(port, answer="AE") as endpoint:
        clock.now = T0 + timedelta(seconds=5)
        await sender.run()
        assert len(endpoint.received()) == 1
    assert store.queue.show(1).zams[0].last_error == "ACK AE"
    with ZamEndpoint(port) as endpoint:
        clock.now = T0 + timedelta(seconds=40)
        await sender.run()
        assert len(endpoint.received()) == 1
    (done,) = store.queue.show(1).zams
    assert (done.state, done.attempts, done.acked_at) == ("acked", 3, clock.now)


def zams_counted(kind: str, outcome: str) -> float:
    value = metrics.REGISTRY.get_sample_value("mssgw_hl7_zams_total", {"kind": kind, "outcome": outcome})
    return value or 0.0


async def test_the_producers_retry_schedule_and_ack_timeout_are_used_and_counted(store: Store) -> None:
    owe_a_z03(store)
    clock = Clock()
    before = (zams_counted("Z03", "deferred"), zams_counted("Z03", "acked"))
    # An endpoint that never answers: the producer's own ACK timeout ends the wait.
    with ZamEndpoint(answer=None) as silent:
        settings = settings_for(silent.port, zam_ack_timeout=0.2, zam_retry_schedule=[7, 11])
        sender = ZamSender(settings, store.zams, Scheduler(), clock)
        await sender.run()
        clock.now = T0 + timedelta(seconds=7)
        await sender.run()
    schedule = [owed.next_attempt_at for owed in store.queue.show(1).zams]
    assert schedule == [T0 + timedelta(seconds=7 + 11)]
    assert store.queue.show(1).zams[0].attempts == 2
    with ZamEndpoint(silent.port) as endpoint:
        clock.now = T0 + timedelta(seconds=18)
        await sender.run()
        assert len(endpoint.received()) == 1
    assert (zams_counted("Z03", "deferred"), zams_counted("Z03", "acked")) == (before[0] + 2, before[1] + 1)


async def test_with_zam_tls_the_zam_goes_over_tls_to_an_endpoint_the_ca_bundle_trusts(
    store: Store, pki: Pki
) -> None:
    owe_a_z03(store)
    clock = Clock()
    context = server_context(settings_module.TlsSettings(), pki.server.cert, pki.server.key)
    with ZamEndpoint(context=context) as endpoint:
        # Without the producer's CA in tls.ca_bundle the endpoint is not trusted: nothing leaves, kept.
        untrusted = settings_for(endpoint.port, zam_tls=True)
        await ZamSender(untrusted, store.zams, Scheduler(), clock).run()
        (owed,) = store.queue.show(1).zams
        assert (owed.state, owed.attempts, endpoint.received()) == ("pending", 1, [])
        trusted = settings_for(endpoint.port, tls={"ca_bundle": str(pki.ca)}, zam_tls=True)
        clock.now = T0 + timedelta(seconds=5)
        await ZamSender(trusted, store.zams, Scheduler(), clock).run()
        assert len(endpoint.received()) == 1
    assert zams(store) == [("Z03", "MSG-42", DOCTOR, None, "acked")]


def test_instances_claiming_at_the_same_moment_get_each_zam_once(store: Store) -> None:
    # Several daemons on one store claim together: the lease moves next_attempt_at only if nobody moved it.
    owe_a_z03(store)
    barrier = threading.Barrier(8)

    def claim() -> int:
        barrier.wait()
        return len(store.zams.claim_due(T0, timedelta(minutes=5), 10))

    with ThreadPoolExecutor(8) as pool:
        claimed = [future.result() for future in [pool.submit(claim) for _ in range(8)]]
    assert sum(claimed) == 1, claimed


async def test_instances_sharing_the_store_send_each_zam_once(store: Store) -> None:
    # The same through the senders: one ZAM, one frame at the producer, one AA recorded.
    owe_a_z03(store)
    with ZamEndpoint() as endpoint:
        senders = [ZamSender(settings_for(endpoint.port), store.zams, Scheduler(), Clock()) for _ in range(4)]
        await asyncio.gather(*(sender.run() for sender in senders))
        assert len(endpoint.received()) == 1
    assert zams(store) == [("Z03", "MSG-42", DOCTOR, None, "acked")]
