"""One MLLP frame from a producer → the mail it asks for, through intake → the technical ACK to send back.

The listener (``mllp_server``) only frames bytes; this decides. The producer is found by MSH-3/MSH-4 in
``[[hl7.producers]]`` (unknown: ``AR``); the ER7 is read by ``mappers.hl7_transmission`` and turned into a
``MessageRecord`` (``mappers.hl7_mail``) and a MIME message (``build_message``, as ``mssgw send`` does), then
handed to the same intake as every other door (source ``hl7``). ``AA`` only once intake committed the
message and its deliveries; every refusal is ``AE``/``AR`` with its table 0357 code and a readable ERR-8.
A store that cannot commit gives ``AE`` saying "send again later" — the HL7 twin of SMTP's 451.

A producer that lost its ACK sends the same MSH-10 again: the (producer, MSH-10) pair is committed with
the mail and checked inside the same commit (``Repository.add_messages``), so the second copy is a duplicate
of the first: ``AA`` again and no second mail.

A producer configured with ``networks`` / ``certificate_cn`` is also bound to its connection: a message
naming it from another network, or without that client certificate, is ``AR`` 103 with the reason (MSH-3
is whatever the sender writes; the connection is what the gateway sees).

    door = Hl7Door(settings, intake, clock)
    ack_er7 = await door.answer(frame, Origin("10.0.0.5:40222", ip_address("10.0.0.5"), "dpi.hopital"))
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from gateway import metrics
from gateway.inbound.arrival import Arrival, Decision, IntakeResult, Recipient
from gateway.logsetup import log_event
from gateway.settings import Hl7ProducerSettings, Settings
from mappers.errors import MappingError
from mappers.hl7_ack import AckCode, RequestHeader, build_ack
from mappers.hl7_mail import transmission_record
from mappers.hl7_transmission import Hl7Refusal, Transmission, decode_er7, read_header, read_transmission
from mappers.hl7_zam import requested_events
from mappers.mime import build_message
from mappers.patient_match import PatientMismatchError
from mappers.pdf_copies import pdf_copy
from mappers.records import Mailbox

log = logging.getLogger(__name__)

SOURCE = "hl7"
"""The intake source of every message that came in over MLLP."""

#: Codes that reject the message as a whole (its header), not its content: answered AR.
_REJECTING = frozenset({200, 201, 202, 203})
_NO_HEADER = RequestHeader("", "", "", "", "", "P", "2.5", "")
_DMP_WARNING = (
    0,
    "DESTDMP=Y: this gateway does not feed the DMP; the document was sent by MSSante only",
)


@dataclass(frozen=True, slots=True)
class Origin:
    """The connection a frame came over: ``peer`` for the logs, the address and the client certificate's
    CN (None without TLS or without a certificate) for producers bound to them."""

    peer: str
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    certificate_cn: str | None


class IntakePort(Protocol):
    """What the door needs of intake (``gateway.inbound.intake.Intake``)."""

    async def receive(self, arrival: Arrival) -> IntakeResult: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    """The answer to one frame: the ACK code, the ERR (table 0357 code, ERR-8) and the reason logged."""

    code: AckCode
    error: tuple[int, str] | None
    reason: str
    counted: bool = False  # intake already counted its own refusals


@dataclass(frozen=True, slots=True)
class Prepared:
    """A frame read and its mail built (``result`` an ``Arrival``), or why not (an ``Outcome``)."""

    header: RequestHeader
    producer: Hl7ProducerSettings | None
    transmission: Transmission | None
    result: Arrival | Outcome


class Hl7Reader:
    """Frames into mails, without the store: what ``mssgw hl7 show`` uses and the door builds on."""

    def __init__(self, settings: Settings, clock: Callable[[], datetime]) -> None:
        self.settings = settings
        self.clock = clock

    def prepare_reload(self, settings: Settings) -> Callable[[], None]:
        def apply() -> None:
            self.settings = settings

        return apply

    def producer(self, header: RequestHeader) -> Hl7ProducerSettings | None:
        """The configured producer of MSH-3 (and MSH-4 when the producer names a facility)."""
        for producer in self.settings.hl7.producers:
            if producer.application == header.sending_application and producer.facility in (
                "",
                header.sending_facility,
            ):
                return producer
        return None

    async def prepare(self, frame: bytes, origin: Origin | None = None) -> Prepared:
        """Everything before the store: the producer, the message read, the mail built, or the refusal.

        ``mssgw hl7 show`` stops here (and has no ``origin`` to check); the listener goes on with ``answer``.
        """
        header = read_header(frame.decode("latin-1")) or _NO_HEADER
        producer = self.producer(header)
        if producer is not None and origin is not None:
            elsewhere = _foreign_origin(producer, origin)
            if elsewhere is not None:
                return Prepared(header, producer, None, elsewhere)
        read = await self._read(frame, header, producer)
        if isinstance(read, Outcome):
            return Prepared(header, producer, None, read)
        assert producer is not None  # an unknown producer is an Outcome
        return Prepared(header, producer, read, await self._build(read, producer))

    async def _read(
        self, frame: bytes, header: RequestHeader, producer: Hl7ProducerSettings | None
    ) -> Transmission | Outcome:
        try:
            er7 = decode_er7(frame)
            if header is _NO_HEADER:
                raise Hl7Refusal(100, "the frame does not start with an MSH segment")
            if producer is None:
                return Outcome(
                    AckCode.REJECTED,
                    (
                        103,
                        f"producer MSH-3 {header.sending_application!r} / MSH-4 "
                        f"{header.sending_facility!r} is not configured on this gateway ([[hl7.producers]])",
                    ),
                    "unknown-producer",
                )
            # Base64 of CDAs up to megabytes, and their headers: off the event loop.
            return await asyncio.to_thread(read_transmission, er7)
        except Hl7Refusal as refusal:
            code = AckCode.REJECTED if refusal.code in _REJECTING else AckCode.ERROR
            return Outcome(code, (refusal.code, refusal.text), refusal.text)

    @staticmethod
    def _accepted(transmission: Transmission, reason: str) -> Outcome:
        """AA, with a warning when the producer also asked for the DMP (which this gateway never feeds)."""
        warning = _DMP_WARNING if transmission.flags.get("DESTDMP") else None
        return Outcome(AckCode.ACCEPTED, warning, reason)

    @staticmethod
    def _zam_events(transmission: Transmission, producer: Hl7ProducerSettings) -> str | None:
        """The ZAM owed for this mail: those the producer asked for, when it has a ZAM endpoint."""
        if not producer.zam_host:
            return None
        flags = transmission.flags
        return requested_events(flags.get("ACK_RECEPTION", False), flags.get("ACK_LECTURE_MSS", False))

    async def _build(self, transmission: Transmission, producer: Hl7ProducerSettings) -> Arrival | Outcome:
        """The mail, as intake takes it from this producer (built as ``mssgw send`` builds one)."""
        now = self.clock()
        gateway = self.settings.gateway
        defaults = self.settings.documents.header_defaults()
        try:
            record = await asyncio.to_thread(
                transmission_record,
                transmission,
                Mailbox(producer.from_address, producer.display_name),
                now,
                defaults,
            )
            message = await asyncio.to_thread(
                build_message,
                record,
                nil_reference=gateway.nil_reference,
                hostname=gateway.hostname,
                now=now,
                # The CDAs of one transmission are one document (an N1 and its N3): the N1's PDF is the
                # rendering ECO.2.1.1 asks for; a message without any PDF is still refused.
                require_pdf_copies=not any(pdf_copy(d) for d in record.documents),
                content_type=defaults.content_type,
            )
        except PatientMismatchError as error:
            return Outcome(AckCode.ERROR, (207, str(error)), "patient-mismatch")
        except MappingError as error:
            first = str(error).splitlines()[0]
            return Outcome(AckCode.ERROR, (207, first), f"unusable-document: {first}")
        notify = "SUCCESS,FAILURE" if transmission.flags.get("ACK_RECEPTION") else None
        return Arrival(
            raw=message.as_bytes(),
            envelope_from=producer.from_address,
            recipients=tuple(Recipient(m.address, notify) for m in record.to),
            source=SOURCE,
            authenticated_as=producer.name,
            patient=record.patient,
            hl7_control=(producer.name, transmission.control_id),
            zam_events=self._zam_events(transmission, producer),
        )


def _foreign_origin(producer: Hl7ProducerSettings, origin: Origin) -> Outcome | None:
    """AR when the connection is not one the producer is bound to (``networks``, ``certificate_cn``)."""
    if producer.networks:
        networks = [ipaddress.ip_network(n, strict=False) for n in producer.networks]
        if origin.address is None or not any(origin.address in network for network in networks):
            text = (
                f"producer {producer.name!r} (MSH-3 {producer.application!r}) may not send from "
                f"{origin.address or 'this connection'} (hl7.producers networks)"
            )
            return Outcome(AckCode.REJECTED, (103, text), "producer-network")
    if producer.certificate_cn and origin.certificate_cn != producer.certificate_cn:
        shown = (
            f"certificate CN {origin.certificate_cn!r}" if origin.certificate_cn else "no client certificate"
        )
        text = (
            f"producer {producer.name!r} (MSH-3 {producer.application!r}) may not send with {shown} "
            "(hl7.producers certificate_cn)"
        )
        return Outcome(AckCode.REJECTED, (103, text), "producer-certificate")
    return None


class Hl7Door(Hl7Reader):
    """Turns frames into committed messages and ACKs; one per daemon, shared by the listener's connections."""

    def __init__(
        self,
        settings: Settings,
        intake: IntakePort,
        clock: Callable[[], datetime],
    ) -> None:
        super().__init__(settings, clock)
        self.intake = intake

    async def answer(self, frame: bytes, origin: Origin) -> str:
        """The ACK (ER7, segments ended by CR) for one MLLP frame's content."""
        prepared = await self.prepare(frame, origin)
        outcome = await self._outcome(prepared)
        return self._ack(prepared.header, outcome, origin.peer, prepared.producer)

    async def _outcome(self, prepared: Prepared) -> Outcome:
        transmission, result = prepared.transmission, prepared.result
        if isinstance(result, Outcome):
            return result
        assert transmission is not None
        return await self._commit(transmission, result)

    def too_large(self, head: bytes, size: int, peer: str) -> str:
        """The ACK for a frame over ``hl7.max_message_size`` (read and dropped; ``head`` is its start)."""
        header = read_header(head.decode("latin-1")) or _NO_HEADER
        limit = self.settings.hl7.max_message_size
        outcome = Outcome(
            AckCode.REJECTED,
            (207, f"message of {size} octets is over this gateway's limit of {limit} (hl7.max_message_size)"),
            "too-large",
        )
        return self._ack(header, outcome, peer, self.producer(header))

    async def _commit(self, transmission: Transmission, arrival: Arrival) -> Outcome:
        """Hand the mail to intake: AA only for a committed message."""
        result = await self.intake.receive(arrival)
        refused = [v for v in result.verdicts if v.decision is not Decision.ACCEPTED]
        if result.message_pk is None or refused:
            text = refused[0].reply if refused else "the message was not stored"
            if any(v.decision is Decision.TEMPORARY for v in refused):
                later = f"temporary: nothing was kept, send the message again later ({text})"
                return Outcome(AckCode.ERROR, (207, later), f"temporary: {text}", counted=True)
            return Outcome(AckCode.ERROR, (207, text), text, counted=True)
        if result.duplicate:
            return self._accepted(transmission, f"retransmission of queued message {result.message_pk}")
        return self._accepted(transmission, f"queued as {result.message_pk}")

    def _ack(
        self, header: RequestHeader, outcome: Outcome, peer: str, producer: Hl7ProducerSettings | None
    ) -> str:
        name = producer.name if producer is not None else "unknown"
        number = outcome.error[0] if outcome.error is not None else 0
        if outcome.code is not AckCode.ACCEPTED and not outcome.counted:
            metrics.message_refused(SOURCE, f"hl7-{number}")
        metrics.hl7_answered(name, outcome.code.value, number)
        log_event(
            log,
            "hl7-message",
            logging.INFO if outcome.code is AckCode.ACCEPTED else logging.WARNING,
            producer=name,
            peer=peer,
            control_id=header.control_id[:40],
            ack=outcome.code.value,
            code=number,
            reason=outcome.reason[:300],
        )
        return build_ack(header, outcome.code, outcome.error, self.clock(), uuid.uuid4().hex[:20])
