"""The [hl7] section: the MLLP listener and its producers; every problem names its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway import settings
from gateway.errors import ConfigError
from tests.support.pki import Pki


def base(tmp_path: Path) -> dict[str, dict[str, object]]:
    return {
        "gateway": {"state_dir": str(tmp_path / "state"), "mode": "client", "nil_reference": "DEV935997"},
        "smarthost": {"host": "smtp.operateur.test"},
        "tls": {"ca_bundle": str(tmp_path / "ca.pem")},
    }


def test_listener_and_producers_load(tmp_path: Path, pki: Pki) -> None:
    (tmp_path / "ca.pem").write_text("x", encoding="utf-8")
    raw = base(tmp_path)
    raw["hl7"] = {
        "listen": ["127.0.0.1:2575"],
        "certificate": str(pki.server.cert),
        "key": str(pki.server.key),
        "client_ca": str(pki.ca),
        "networks": ["10.1.0.0/16"],
        "timeout": "30s",
        "producers": [
            {
                "name": "dpi",
                "application": "DPI",
                "facility": "CHU_X",
                "from_address": "cr@hopital.mssante.fr",
                "display_name": "CHU X",
                "zam_host": "dpi.local",
                "zam_port": 6662,
                "networks": ["10.1.2.0/24"],
                "certificate_cn": "dpi.hopital.local",
            }
        ],
    }
    hl7 = settings.from_mapping(raw).hl7
    assert hl7.listen == ("127.0.0.1:2575",) and hl7.timeout == 30.0 and hl7.max_connections == 50
    producer = hl7.producers[0]
    assert (producer.application, producer.facility, producer.zam_port, producer.zam_tls) == (
        "DPI",
        "CHU_X",
        6662,
        False,
    )
    assert (producer.networks, producer.certificate_cn) == (("10.1.2.0/24",), "dpi.hopital.local")


def test_every_problem_is_named(tmp_path: Path, pki: Pki) -> None:
    (tmp_path / "ca.pem").write_text("x", encoding="utf-8")
    raw = base(tmp_path)
    raw["hl7"] = {
        "listen": ["nowhere"],
        "certificate": str(pki.server.cert),
        "networks": ["10.0.0.0/33"],
        "max_connections": 0,
        "producers": [
            {
                "name": "a",
                "application": "DPI",
                "from_address": "cr@hopital.mssante.fr",
                "zam_host": "x",
                "networks": ["10.1.2.0/24", "dpi.local"],
                "certificate_cn": "dpi.local",
            },
            {
                "name": "b",
                "application": "DPI",
                "from_address": "",
                "zam_ack_timeout": 0,
                "zam_retry_schedule": [],
            },
        ],
    }
    with pytest.raises(ConfigError) as error:
        settings.from_mapping(raw)
    assert list(error.value.problems) == [
        "hl7.listen[0]: 'nowhere' is not host:port (e.g. 127.0.0.1:587)",
        "hl7.networks[0]: '10.0.0.0/33' is not a network",
        "hl7.key: certificate and key go together (TLS on the MLLP listener)",
        "hl7.max_connections: must be at least 1",
        "hl7.producers[0].networks[1]: 'dpi.local' is not a network",
        "hl7.producers[0].certificate_cn: needs hl7.client_ca (client certificates are not asked for)",
        "hl7.producers[0].zam_port: zam_host and zam_port (1-65535) go together",
        "hl7.producers[1].application: another producer has the same MSH-3/MSH-4",
        "hl7.producers[1].from_address: required (the BAL applicative its mail is sent from)",
        "hl7.producers[1].zam_ack_timeout: must be more than 0",
        "hl7.producers[1].zam_retry_schedule: needs at least one delay, each more than 0",
    ]


def consumer(**changes: object) -> dict[str, object]:
    values: dict[str, object] = {
        "name": "dpi",
        "mailboxes": ["dpi@chu-y.mssante.fr"],
        "host": "dpi.local",
        "port": 6661,
        "application": "DPI",
        "facility": "CHU_Y",
    }
    values.update(changes)
    return values


def test_consumers_load_with_their_defaults(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("x", encoding="utf-8")
    raw = base(tmp_path)
    raw["hl7"] = {
        "facility": "CHU_Y",
        "consumers": [consumer(tls=True, charset="8859/15", ack_timeout="30s", retry_schedule=["10s", "1m"])],
    }
    hl7 = settings.from_mapping(raw).hl7
    assert (hl7.application, hl7.facility) == ("MSSGW", "CHU_Y")
    dpi = hl7.consumers[0]
    assert (dpi.mailboxes, dpi.host, dpi.port, dpi.tls, dpi.processing_id, dpi.charset) == (
        ("dpi@chu-y.mssante.fr",),
        "dpi.local",
        6661,
        True,
        "P",
        "8859/15",
    )
    assert dpi.ack_timeout == 30.0 and dpi.retry_schedule == (10.0, 60.0)


def test_every_consumer_problem_is_named(tmp_path: Path) -> None:
    raw = base(tmp_path)
    del raw["tls"]
    raw["smarthost"] = {"host": ""}
    raw["routes"] = [{"domain": "*", "transport": "folder", "path": str(tmp_path)}]  # type: ignore[assignment]
    raw["hl7"] = {
        "application": "",
        "consumers": [
            consumer(),
            consumer(mailboxes=["DPI@chu-y.mssante.fr", "nobody"], port=0, application="", tls=True),
            consumer(name="ris", mailboxes=[], ack_timeout="0s", retry_schedule=[]),
        ],
    }
    with pytest.raises(ConfigError) as caught:
        settings.from_mapping(raw)
    text = str(caught.value)
    for expected in (
        "hl7.application: required with consumers",
        "hl7.consumers[1].name: 'dpi' is used by another consumer",
        "hl7.consumers[1].mailboxes[0]: 'DPI@chu-y.mssante.fr' is already served by 'dpi'",
        "hl7.consumers[1].mailboxes[1]: 'nobody' is not a mail address",
        "hl7.consumers[1].port: host and port",
        "hl7.consumers[1].application: required (MSH-5",
        "hl7.consumers[1].ca_bundle: required with tls",
        "hl7.consumers[2].mailboxes: needs at least one mailbox",
        "hl7.consumers[2].ack_timeout: must be more than 0",
        "hl7.consumers[2].retry_schedule: needs at least one delay",
    ):
        assert expected in text
