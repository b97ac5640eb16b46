"""HL7 over MLLP end to end: a producer sends ORU^R01 / MDM^T02 to ``mssgw run`` on a real socket, the mail
reaches the fake operator, and the technical ACK says what became of the message (AA only once committed).
"""

from __future__ import annotations

import asyncio
import dataclasses
import email
import email.policy
import io
import re
import sqlite3
import ssl
import zipfile
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import hl7
import hl7.mllp
import pytest

from mappers import xds
from mappers.documents import Code, DocumentAction
from mappers.metadata import parse_metadata
from mappers.metadata_read import document_actions
from tests.support.fake_operator import FakeOperator
from tests.support.gateway import Gateway, gateway_for
from tests.support.hl7 import (
    FIRST_VERSION_ID,
    PID_PATIENT,
    PROS_AND_PATIENT,
    PROS_ONLY,
    body_obx,
    message,
    patient_cda,
    replacement_cda,
    structured_cda,
)
from tests.support.mllp import MllpClient, send
from tests.support.pki import Pki
from tests.system.test_metrics import scrape, value

PRODUCER_BOX = "comptes-rendus@hopital.test.mssante.fr"
DOCTOR = "dr.martin@hopital.mssante.fr"
PATIENT_BOX = "279035121518989@patient.mssante.fr"
_LISTENING = re.compile(r"event=listening listener=hl7 address=127\.0\.0\.1:(\d+)")


def hl7_section(**options: object) -> dict[str, object]:
    """An ``[hl7]`` listener on an ephemeral loopback port with one producer, the DPI of CHU_X."""
    producer = {
        "name": "dpi",
        "application": "DPI",
        "facility": "CHU_X",
        "from_address": PRODUCER_BOX,
        "display_name": "CHU X - comptes rendus",
    }
    return {"listen": ["127.0.0.1:0"], **options, "producers": [producer]}


def hl7_port(gateway: Gateway) -> int:
    found = _LISTENING.search(gateway.wait_for_output("listener=hl7"))
    assert found, gateway.output()
    return int(found.group(1))


@pytest.fixture
def gateway(tmp_path: Path, pki: Pki, operator: FakeOperator) -> Iterator[Gateway]:
    gateway = gateway_for(tmp_path / "gw", pki, operator)
    # The test messages carry the ANS test INS (OID …4.10): mail to its patient address needs test mode.
    gateway.sections["gateway"]["test_mode"] = True
    gateway.sections["hl7"] = hl7_section()
    gateway.write()
    gateway.start()
    yield gateway
    gateway.cleanup()


def parsed(content: bytes) -> EmailMessage:
    return email.message_from_bytes(content, policy=email.policy.default)  # type: ignore[return-value]


def package(mail: EmailMessage) -> zipfile.ZipFile:
    [part] = [p for p in mail.iter_attachments() if p.get_filename() == "IHE_XDM.zip"]
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return zipfile.ZipFile(io.BytesIO(payload))


def package_names(mail: EmailMessage) -> list[str]:
    return sorted(package(mail).namelist())


def package_file(mail: EmailMessage, suffix: str) -> bytes:
    """The one file of the mail's IHE_XDM.zip whose name ends with ``suffix``."""
    zipped = package(mail)
    [name] = [n for n in zipped.namelist() if n.upper().endswith(suffix)]
    return zipped.read(name)


def test_an_oru_to_professionals_and_patient_is_acknowledged_aa_and_mailed(
    gateway: Gateway, operator: FakeOperator
) -> None:
    ack = send(hl7_port(gateway), message(cdas=(patient_cda(),)))
    assert (ack.code, ack.control_id, ack.version) == ("AA", "MSG-42", "2.5"), (ack, gateway.output())
    received = operator.wait_for_messages(1)
    assert gateway.stop() == 0
    [mail] = received
    assert mail.mail_from == PRODUCER_BOX
    assert sorted(mail.rcpt_tos) == sorted([DOCTOR, PATIENT_BOX])
    headers = parsed(mail.content)
    assert "CHU X - comptes rendus" in str(headers["From"]) and PRODUCER_BOX in str(headers["From"])
    assert "secretariat@hopital.mssante.fr" in str(headers["Reply-To"])
    assert any(name.endswith("METADATA.XML") for name in package_names(headers))


def test_a_mail_to_professionals_and_patient_carries_both_corpsmail_texts(
    gateway: Gateway, operator: FakeOperator
) -> None:
    bodies = (
        body_obx("CORPSMAIL_PS", "Cher confrère, le compte rendu de votre patiente."),
        body_obx("CORPSMAIL_PATIENT", "Madame, votre compte rendu d’imagerie est joint."),
    )
    ack = send(hl7_port(gateway), message(cdas=(patient_cda(),), extra=bodies))
    assert ack.code == "AA", (ack, gateway.output())
    [mail] = operator.wait_for_messages(1)
    assert sorted(mail.rcpt_tos) == sorted([DOCTOR, PATIENT_BOX])
    text = parsed(mail.content).get_body(("plain",))
    assert text is not None
    content = text.get_content()
    assert "Cher confrère, le compte rendu de votre patiente." in content
    assert "Madame, votre compte rendu d’imagerie est joint." in content


def test_an_oru_with_its_n1_and_n3_carries_both_in_the_package(
    gateway: Gateway, operator: FakeOperator
) -> None:
    er7 = message(cdas=(patient_cda(), structured_cda()), flags=PROS_ONLY)
    ack = send(hl7_port(gateway), er7)
    assert ack.code == "AA", (ack, gateway.output())
    [mail] = operator.wait_for_messages(1)
    assert mail.rcpt_tos == (DOCTOR,)
    names = package_names(parsed(mail.content))
    assert len([n for n in names if n.endswith(".XML") and "DOC" in n.upper()]) == 2, names


def test_the_xds_only_codes_of_an_hl7_mail_come_from_the_document_settings(
    tmp_path: Path, pki: Pki, operator: FakeOperator, gateways: list[Gateway]
) -> None:
    """classCode and the SubmissionSet contentTypeCode from ``[documents]``; the N3's formatCode from
    ``documents.format_code``, the N1's the XDS-SD PDF its body says."""
    gateway = gateway_for(tmp_path / "gw", pki, operator)
    gateway.sections["gateway"]["test_mode"] = True
    gateway.sections["hl7"] = hl7_section()
    gateway.sections["documents"] = {
        "class_code": "11^Résultats d'examens",
        "content_type_code": "04^Hospitalisation de jour",
        "format_code": "urn:mssgw:test:cr^Format de test^1.2.250.1.999.9.1",
    }
    gateway.write()
    gateway.start()
    gateways.append(gateway)
    ack = send(hl7_port(gateway), message(cdas=(patient_cda(), structured_cda()), flags=PROS_ONLY))
    assert ack.code == "AA", (ack, gateway.output())
    [mail] = operator.wait_for_messages(1)
    metadata = parse_metadata(package_file(parsed(mail.content), "METADATA.XML"))
    assert metadata.submission is not None
    assert metadata.submission.content_type == Code("04", "Hospitalisation de jour", xds.CONTENT_TYPE_OID)
    classes = Code("11", "Résultats d'examens", xds.CLASS_CODE_OID)
    assert [(e.document.class_code, e.document.format_code) for e in metadata.entries] == [
        (classes, xds.PDF_FORMAT),
        (classes, Code("urn:mssgw:test:cr", "Format de test", "1.2.250.1.999.9.1")),
    ]


def test_an_mdm_t02_is_acknowledged_in_version_2_6(gateway: Gateway, operator: FakeOperator) -> None:
    er7 = message(kind="MDM^T02^MDM_T02", version="2.6", flags=PROS_ONLY, cdas=(patient_cda(),))
    ack = send(hl7_port(gateway), er7)
    assert (ack.code, ack.version) == ("AA", "2.6"), (ack, gateway.output())
    [mail] = operator.wait_for_messages(1)
    assert mail.rcpt_tos == (DOCTOR,)


def test_an_mdm_t10_after_a_t02_leaves_as_a_replacement_of_the_first_mail(
    gateway: Gateway, operator: FakeOperator
) -> None:
    port = hl7_port(gateway)
    first = message(kind="MDM^T02^MDM_T02", version="2.6", flags=PROS_ONLY, cdas=(patient_cda(),))
    second = message(
        kind="MDM^T10^MDM_T02", version="2.6", flags=PROS_ONLY, cdas=(replacement_cda(),), status="C"
    ).replace("|MSG-42|", "|MSG-43|")
    assert send(port, first).code == "AA", gateway.output()
    ack = send(port, second)
    assert (ack.code, ack.control_id, ack.version) == ("AA", "MSG-43", "2.6"), (ack, gateway.output())
    mails = [parsed(m.content) for m in operator.wait_for_messages(2)]
    actions = [document_actions(package_file(m, "METADATA.XML")) for m in mails]
    assert sorted(actions, key=str) == sorted(
        [{FIRST_VERSION_ID: DocumentAction.ORIGINAL}, {"1.2.250.1.999.4": DocumentAction.REPLACEMENT}],
        key=str,
    )
    [replacing] = [m for m, a in zip(mails, actions, strict=True) if DocumentAction.REPLACEMENT in a.values()]
    # The CDA carried links to the version it replaces (relatedDocument RPLC), as the producer wrote it.
    assert b'typeCode="RPLC"' in package_file(replacing, "DOC0001.XML")
    assert FIRST_VERSION_ID.encode() in package_file(replacing, "DOC0001.XML")
    assert all(m["To"] == DOCTOR for m in mails)


def test_an_mdm_t04_leaves_as_a_deletion_request(gateway: Gateway, operator: FakeOperator) -> None:
    er7 = message(kind="MDM^T04^MDM_T02", version="2.6", flags=PROS_ONLY, cdas=(patient_cda(),), status="D")
    ack = send(hl7_port(gateway), er7)
    assert (ack.code, ack.version) == ("AA", "2.6"), (ack, gateway.output())
    [mail] = operator.wait_for_messages(1)
    assert mail.rcpt_tos == (DOCTOR,)
    metadata = package_file(parsed(mail.content), "METADATA.XML")
    assert document_actions(metadata) == {FIRST_VERSION_ID: DocumentAction.DELETION}


@pytest.mark.parametrize(
    ("cda", "status", "said"),
    [
        (patient_cda(), "C", "must name the document it replaces"),
        (replacement_cda(), "F", "OBX-11 must be C"),
    ],
)
def test_a_t10_that_does_not_say_what_it_replaces_is_ae_207_and_nothing_is_sent(
    gateway: Gateway, cda: bytes, status: str, said: str
) -> None:
    er7 = message(kind="MDM^T10^MDM_T02", version="2.6", flags=PROS_ONLY, cdas=(cda,), status=status)
    ack = send(hl7_port(gateway), er7)
    assert (ack.code, ack.error) == ("AE", 207), (ack, gateway.output())
    assert said in ack.text
    assert gateway.json("queue", "list", "--all") == []


def test_a_forbidden_flag_combination_is_ae_207_and_nothing_is_sent(
    gateway: Gateway, operator: FakeOperator
) -> None:
    # To professionals and the patient, but masked from professionals: not one of the three routes.
    flags = PROS_AND_PATIENT | {"MASQUE_PS": True}
    ack = send(hl7_port(gateway), message(flags=flags, cdas=(patient_cda(),)))
    assert (ack.code, ack.error, ack.severity) == ("AE", 207, "E")
    assert "MASQUE_PS=Y" in ack.text
    assert gateway.json("queue", "list", "--all") == []


def test_a_cda_of_another_patient_than_pid_is_ae(gateway: Gateway) -> None:
    other = dataclasses.replace(PID_PATIENT, birth_name="AUTRE")
    ack = send(hl7_port(gateway), message(cdas=(patient_cda(other),)))
    assert (ack.code, ack.error) == ("AE", 207)
    assert "patient" in ack.text.lower()
    assert gateway.json("queue", "list", "--all") == []


def test_an_unknown_producer_is_ar_with_the_reason(gateway: Gateway) -> None:
    ack = send(hl7_port(gateway), message(application="LABO", cdas=(patient_cda(),)))
    assert (ack.code, ack.error) == ("AR", 103)
    assert "LABO" in ack.text and "hl7.producers" in ack.text


@pytest.mark.parametrize(
    ("change", "code", "error"),
    [
        (lambda er7: er7.replace("Y^^expandedYes-NoIndicator", "OUI^^expandedYes-NoIndicator", 1), "AE", 103),
        (lambda er7: er7.replace("^^X.400^dr.martin", "^^SMTP^dr.martin"), "AE", 102),
        (lambda er7: "\r".join(s for s in er7.split("\r") if not s.startswith("PID")), "AE", 100),
        (lambda er7: er7.replace("|MSG-42|", "||"), "AE", 101),
        (lambda er7: er7.replace("ORU^R01^ORU_R01", "ORU^R30^ORU_R30"), "AR", 201),
        (lambda er7: er7.replace("|P|2.5|", "|P|2.3|"), "AR", 203),
        (lambda er7: er7.replace("^Base64^", "^Base64^!!"), "AE", 102),
    ],
    ids=["flag-not-y-or-n", "prt-not-x400", "no-pid", "no-control-id", "event", "version", "base64"],
)
def test_a_malformed_message_gets_the_table_0357_code(gateway: Gateway, change, code, error) -> None:  # type: ignore[no-untyped-def]
    ack = send(hl7_port(gateway), change(message(cdas=(patient_cda(),))))
    assert (ack.code, ack.error) == (code, error), ack
    assert ack.text


def test_framing_errors_close_the_connection_and_a_big_frame_is_answered(
    tmp_path: Path, pki: Pki, operator: FakeOperator, gateways: list[Gateway]
) -> None:
    gateway = gateway_for(tmp_path / "gw", pki, operator)
    gateway.sections["hl7"] = hl7_section(max_message_size=4096, timeout="1s")
    gateway.write()
    gateway.start()
    gateways.append(gateway)
    port = hl7_port(gateway)
    with MllpClient(port) as client:
        # Over the limit: read to its end, answered AR, and the connection goes on.
        big = message(cdas=(patient_cda() * 10,))
        assert client.send(big).code == "AR"
        client.send_bytes(b"not a frame\x1c\r")
        assert client.closed()
    with MllpClient(port) as client:
        client.send_bytes(b"\x0bMSH|^~\\&|DPI")
    gateway.wait_for_output("reason=cut-inside-frame")
    with MllpClient(port) as client:
        assert client.closed()  # idle for longer than hl7.timeout
    output = gateway.output()
    assert "reason=no-start-block" in output and "reason=idle-timeout" in output
    assert "reason=too-large" in output


def test_a_connection_over_the_limit_is_closed_and_a_freed_slot_is_taken_again(
    tmp_path: Path, pki: Pki, operator: FakeOperator, gateways: list[Gateway]
) -> None:
    gateway = gateway_for(tmp_path / "gw", pki, operator)
    gateway.sections["gateway"]["test_mode"] = True
    gateway.sections["hl7"] = hl7_section(max_connections=2)
    gateway.write()
    gateway.start()
    gateways.append(gateway)
    port = hl7_port(gateway)
    er7 = message(cdas=(patient_cda(),))
    with MllpClient(port) as first, MllpClient(port) as second:
        assert first.send(er7).code == "AA"
        with MllpClient(port) as third:
            assert third.closed()
        assert second.send(er7.replace("|MSG-42|", "|MSG-2|")).code == "AA"
    assert "reason=max-connections" in gateway.wait_for_output("reason=max-connections")
    # The two connections are gone: a new one is served.
    assert send(port, er7.replace("|MSG-42|", "|MSG-3|")).code == "AA"
    assert len(operator.wait_for_messages(3, timeout=30)) >= 3


def test_a_connection_from_outside_the_allowed_networks_is_closed(
    tmp_path: Path, pki: Pki, operator: FakeOperator, gateways: list[Gateway]
) -> None:
    gateway = gateway_for(tmp_path / "gw", pki, operator)
    gateway.sections["hl7"] = hl7_section(networks=["10.0.0.0/8"])
    gateway.write()
    gateway.start()
    gateways.append(gateway)
    with MllpClient(hl7_port(gateway)) as client:
        assert client.closed()
    assert "reason=network" in gateway.output()


def test_a_retransmitted_msh10_gets_aa_again_and_no_second_mail(
    gateway: Gateway, operator: FakeOperator
) -> None:
    port = hl7_port(gateway)
    er7 = message(flags=PROS_ONLY, cdas=(patient_cda(),))
    first = send(port, er7)
    again = send(port, er7)  # the producer lost the first ACK and sends the same MSH-10 again
    assert (first.code, again.code) == ("AA", "AA"), gateway.output()
    assert again.control_id == "MSG-42"
    operator.wait_for_messages(1)
    assert len(gateway.json("queue", "list", "--all")) == 1
    assert "retransmission of queued message" in gateway.output()
    assert gateway.stop() == 0
    assert len(operator.messages) == 1


def test_a_kill_before_the_commit_gives_no_aa_and_the_retransmission_goes_once(
    gateway: Gateway, operator: FakeOperator
) -> None:
    port = hl7_port(gateway)
    er7 = message(flags=PROS_ONLY, cdas=(patient_cda(),))
    # Another writer holds the store: the daemon has the message but cannot commit it.
    lock = sqlite3.connect(gateway.state_dir / "mssgw.db", isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    client = MllpClient(port, timeout=2.0)
    client.send_bytes(b"\x0b" + er7.encode() + b"\x1c\r")
    with pytest.raises(TimeoutError):
        client.read_ack()  # no ACK while nothing is committed
    assert gateway.kill() == -9
    client.sock.close()
    lock.execute("ROLLBACK")
    lock.close()
    assert gateway.json("queue", "list", "--all") == []  # nothing half stored
    gateway.start()
    port = hl7_port(gateway)
    assert send(port, er7).code == "AA"  # the producer's retransmission
    assert send(port, er7).code == "AA"
    operator.wait_for_messages(1)
    assert gateway.stop() == 0
    assert len(operator.messages) == 1


def test_the_hl7_library_client_is_a_producer_like_any_other(
    gateway: Gateway, operator: FakeOperator
) -> None:
    """Interop: python-hl7's own MLLP client (``hl7.mllp.open_hl7_connection``), not our code, as the DPI."""

    async def produce() -> str:
        reader, writer = await hl7.mllp.open_hl7_connection("127.0.0.1", hl7_port(gateway), encoding="utf-8")
        writer.writemessage(hl7.parse(message(flags=PROS_ONLY, cdas=(patient_cda(),))))
        await writer.drain()
        ack = await asyncio.wait_for(reader.readmessage(), 30)
        writer.close()
        return str(ack.segment("MSA")[1])

    assert asyncio.run(produce()) == "AA"
    [mail] = operator.wait_for_messages(1)
    assert mail.rcpt_tos == (DOCTOR,)


def test_over_tls_a_producer_needs_a_certificate_from_the_client_ca(
    tmp_path: Path, pki: Pki, operator: FakeOperator, gateways: list[Gateway]
) -> None:
    gateway = gateway_for(tmp_path / "gw", pki, operator)
    tls = {"certificate": str(pki.server.cert), "key": str(pki.server.key), "client_ca": str(pki.ca)}
    gateway.sections["hl7"] = hl7_section(**tls)
    gateway.write()
    gateway.start()
    gateways.append(gateway)
    port = hl7_port(gateway)
    context = ssl.create_default_context(cafile=str(pki.ca))
    # Without a client certificate: the handshake succeeds (the CA is optional to TLS) but the listener
    # closes the connection before reading anything.
    with MllpClient(port, context) as client:
        assert client.closed()
    assert "reason=no-client-certificate" in gateway.output()
    context.load_cert_chain(str(pki.client.cert), str(pki.client.key))
    ack = send(port, message(flags=PROS_ONLY, cdas=(patient_cda(),)), context)
    assert ack.code == "AA", gateway.output()
    [mail] = operator.wait_for_messages(1)
    assert mail.rcpt_tos == (DOCTOR,)


def test_a_producer_bound_to_a_network_or_certificate_is_ar_from_any_other_connection(
    tmp_path: Path, pki: Pki, operator: FakeOperator, gateways: list[Gateway]
) -> None:
    gateway = gateway_for(tmp_path / "gw", pki, operator)
    tls = {"certificate": str(pki.server.cert), "key": str(pki.server.key), "client_ca": str(pki.ca)}
    section = hl7_section(**tls)
    [dpi] = section["producers"]  # type: ignore[misc]
    bound = [
        dpi | {"networks": ["127.0.0.0/8"], "certificate_cn": pki.client_address},
        dpi | {"name": "ris", "application": "RIS", "certificate_cn": "ris.hopital.local"},
        dpi | {"name": "labo", "application": "LABO", "networks": ["10.0.0.0/8"]},
    ]
    gateway.sections["hl7"] = section | {"producers": bound}
    gateway.write()
    gateway.start()
    gateways.append(gateway)
    context = ssl.create_default_context(cafile=str(pki.ca))
    context.load_cert_chain(str(pki.client.cert), str(pki.client.key))
    port = hl7_port(gateway)

    # MSH names RIS, but the connection shows the DPI's certificate.
    ack = send(port, message(application="RIS", flags=PROS_ONLY, cdas=(patient_cda(),)), context)
    assert (ack.code, ack.error) == ("AR", 103)
    assert "'ris'" in ack.text and f"certificate CN {pki.client_address!r}" in ack.text
    assert "certificate_cn" in ack.text
    # MSH names LABO, bound to 10/8; the connection comes from loopback.
    ack = send(port, message(application="LABO", flags=PROS_ONLY, cdas=(patient_cda(),)), context)
    assert (ack.code, ack.error) == ("AR", 103)
    assert "'labo'" in ack.text and "127.0.0.1" in ack.text and "networks" in ack.text
    assert gateway.json("queue", "list", "--all") == []
    # The DPI from its network with its certificate: taken.
    ack = send(port, message(flags=PROS_ONLY, cdas=(patient_cda(),)), context)
    assert ack.code == "AA", gateway.output()
    [mail] = operator.wait_for_messages(1)
    assert mail.rcpt_tos == (DOCTOR,)
    output = gateway.output()
    assert "reason=producer-certificate" in output and "reason=producer-network" in output


def test_destdmp_is_accepted_with_a_warning_that_the_dmp_is_not_fed(gateway: Gateway) -> None:
    ack = send(hl7_port(gateway), message(flags=PROS_ONLY | {"DESTDMP": True}, cdas=(patient_cda(),)))
    assert (ack.code, ack.severity) == ("AA", "W")
    assert "DMP" in ack.text


def test_a_patient_only_message_goes_to_the_patient_address_with_the_patient_body(
    gateway: Gateway, operator: FakeOperator
) -> None:
    flags = {name: False for name in PROS_ONLY} | {"DESTMSSANTEPAT": True}
    body = (
        "OBX|30|TX|CORPSMAIL_PATIENT^CORPSMAIL_PATIENT^MetaDMPMSS||Votre compte rendu est disponible.||||||F"
    )
    ack = send(hl7_port(gateway), message(flags=flags, recipients=(), cdas=(patient_cda(),), extra=(body,)))
    assert ack.code == "AA", (ack, gateway.output())
    [mail] = operator.wait_for_messages(1)
    assert mail.rcpt_tos == (PATIENT_BOX,)
    text = parsed(mail.content).get_body(("plain",))
    assert text is not None and "Votre compte rendu est disponible." in text.get_content()


def test_metrics_count_answers_per_producer_and_outcome(
    tmp_path: Path, pki: Pki, operator: FakeOperator, gateways: list[Gateway]
) -> None:
    gateway = gateway_for(tmp_path / "gw", pki, operator)
    gateway.sections["hl7"] = hl7_section()
    gateway.sections["metrics"] = {"listen": "127.0.0.1:0"}
    gateway.write()
    gateway.start()
    gateways.append(gateway)
    port = hl7_port(gateway)
    assert send(port, message(flags=PROS_ONLY, cdas=(patient_cda(),))).code == "AA"
    assert send(port, message(application="LABO")).code == "AR"
    found = re.search(r"event=metrics-listening address=(\S+)", gateway.output())
    assert found, gateway.output()
    samples = scrape(found.group(1))
    assert value(samples, "mssgw_hl7_messages_total", producer="dpi", ack="AA", code="0") == 1
    assert value(samples, "mssgw_hl7_messages_total", producer="unknown", ack="AR", code="103") == 1
    assert value(samples, "mssgw_messages_accepted_total", listener="hl7") == 1


def test_receipt_flags_fin_and_a_latin_1_frame_reach_the_operator_as_asked(
    gateway: Gateway, operator: FakeOperator
) -> None:
    # ACK_RECEPTION → DSN asked (NOTIFY), ACK_LECTURE_MSS → MDN asked, NTE-4 FIN → X-MSS-MES: FIN;
    # the frame is in ISO 8859-1 as its MSH-18 says, and the accented body must come out as written.
    flags = PROS_AND_PATIENT | {"ACK_RECEPTION": True, "ACK_LECTURE_MSS": True}
    body = "OBX|30|TX|CORPSMAIL_PS^CORPSMAIL_PS^MetaDMPMSS||Résultat validé, à très bientôt.||||||F"
    er7 = message(flags=flags, cdas=(patient_cda(),), extra=(body,), nte_fin=True)
    latin = er7.replace("|UNICODE UTF-8|", "|8859/1|").encode("iso-8859-1")
    ack = send(hl7_port(gateway), latin)
    assert ack.code == "AA", (ack, gateway.output())
    [mail] = operator.wait_for_messages(1)
    assert all(mail.rcpt_params(to)["NOTIFY"] == "SUCCESS,FAILURE" for to in (DOCTOR, PATIENT_BOX))
    headers = parsed(mail.content)
    assert PRODUCER_BOX in str(headers["Disposition-Notification-To"])
    assert headers["X-MSS-MES"] == "FIN"
    text = parsed(mail.content).get_body(("plain",))
    assert text is not None and "Résultat validé, à très bientôt." in text.get_content()


def test_the_logs_name_no_patient(gateway: Gateway, operator: FakeOperator) -> None:
    # An accepted ORU to the patient's own box and a refused one (another patient's CDA): the daemon's logs
    # carry neither INS nor the patient's traits, the patient address included.
    assert send(hl7_port(gateway), message(cdas=(patient_cda(),))).code == "AA"
    operator.wait_for_messages(1)
    other = dataclasses.replace(PID_PATIENT, birth_name="AUTRE")
    assert send(hl7_port(gateway), message(cdas=(patient_cda(other),))).code == "AE"
    assert gateway.stop() == 0
    output = gateway.output()
    assert "event=hl7-message" in output
    for secret in ("279035121518989", "ANNE", "19790321", "AUTRE"):
        assert secret not in output, secret
