"""Build the business acknowledgements (``ZAM_Z01``) a producer asks for with ACK_RECEPTION/ACK_LECTURE_MSS.

Z02 tells the producer that one recipient's mail server took the mail (or refused it), Z03 that one
recipient read (or failed to process) it. The guide ties a ZAM to its ORU/MDM through OBX-4 of the first
OBX (the original MSH-10), not through an MSA: a ZAM is a new message, acknowledged in turn by the
producer's ``ACK^Z0x^ACK``. The guide fixes MSH-12 to 2.6 and MSH-21 to the CI-SIS volet profile, whatever
version the ORU/MDM came in.

Public API (stable):
    ZamEvent                     # Z02 delivery receipt, Z03 read receipt
    ZamFailure(code, text, severity)
    ZamReceipt(event, original_control_id, address, failure)
    ZamHeader(sending_application, sending_facility, receiving_application, receiving_facility, processing_id)
    build_zam(header: ZamHeader, receipt: ZamReceipt, now: datetime, control_id: str) -> str
    requested_events(ack_reception: bool, ack_lecture: bool) -> str | None   # "Z02,Z03", stored with the mail
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final

from mappers.er7 import escape, segment, timestamp

__all__ = ["ZamEvent", "ZamFailure", "ZamHeader", "ZamReceipt", "build_zam", "requested_events"]

ZAM_VERSION: Final = "2.6"
VOLET_PROFILE: Final = "2.1^CISIS_CDA_HL7_V2"
CODING_SYSTEM: Final = "AckMetierZAM"


class ZamEvent(StrEnum):
    """MSH-9.2: which receipt the ZAM carries."""

    DELIVERY = "Z02"
    READ = "Z03"


# (status code, status text, party code, party text) per event, from the AckMetierZAM table.
_OBSERVATIONS: Final = {
    ZamEvent.DELIVERY: (
        "ACK_RECEPTION_MSS",
        "Accusé de réception MSSanté",
        "DESTINATAIRE_MSS",
        "Destinataire MSSanté",
    ),
    ZamEvent.READ: ("ACK_LECTURE_MSS", "Accusé de lecture", "LECTEUR_MSS", "Lecteur du courriel MSSanté"),
}

# ERR-5 coding system: the SMTP reply code for a delivery failure, HL7 table 0533 for a processing failure.
_FAILURE_SYSTEM: Final = {ZamEvent.DELIVERY: "SMTPERRORCODE", ZamEvent.READ: "applicationErrorCondition"}


@dataclass(frozen=True, slots=True)
class ZamFailure:
    """Why a receipt is negative: ERR-5 code and label; severity is ERR-4 (E, F, I or W)."""

    code: str
    text: str
    severity: str = "E"


@dataclass(frozen=True, slots=True)
class ZamReceipt:
    """One recipient's receipt for one ORU/MDM; ``failure`` None means success (OBX-5 Y)."""

    event: ZamEvent
    original_control_id: str
    address: str
    failure: ZamFailure | None = None


@dataclass(frozen=True, slots=True)
class ZamHeader:
    """The MSH parties: the gateway sends, the producer (the ORU/MDM's sender) receives."""

    sending_application: str
    sending_facility: str
    receiving_application: str
    receiving_facility: str
    processing_id: str = "P"


def build_zam(header: ZamHeader, receipt: ZamReceipt, now: datetime, control_id: str) -> str:
    """One ``ZAM^Z0x^ZAM_Z01`` message, segments separated by CR; an ERR exactly when the receipt failed."""
    e = escape
    event = receipt.event
    status_code, status_text, party_code, party_text = _OBSERVATIONS[event]
    msh = segment(
        "MSH",
        "^~\\&",
        e(header.sending_application),
        e(header.sending_facility),
        e(header.receiving_application),
        e(header.receiving_facility),
        timestamp(now),
        "",
        f"ZAM^{event.value}^ZAM_Z01",
        e(control_id),
        e(header.processing_id or "P"),
        ZAM_VERSION,
        "",
        "",
        "",
        "",
        "FRA",
        "UNICODE UTF-8",
        "",
        "",
        VOLET_PROFILE,
    )
    status = segment(
        "OBX",
        "1",
        "CWE",
        f"{status_code}^{e(status_text)}^{CODING_SYSTEM}",
        e(receipt.original_control_id),
        f"{'N' if receipt.failure else 'Y'}^^expandedYes-NoIndicator",
        "",
        "",
        "",
        "",
        "",
        "F",
    )
    party = segment(
        "OBX",
        "2",
        "XTN",
        f"{party_code}^{e(party_text)}^{CODING_SYSTEM}",
        "",
        f"^^X.400^{e(receipt.address)}",
        "",
        "",
        "",
        "",
        "",
        "F",
    )
    segments = [msh, status, party]
    if receipt.failure is not None:
        failure = receipt.failure
        segments.append(
            segment(
                "ERR",
                "",
                "",
                "207^Application error^messageErrorCondition",
                e(failure.severity),
                f"{e(failure.code)}^{e(failure.text)}^{_FAILURE_SYSTEM[event]}",
            )
        )
    return "\r".join(segments) + "\r"


def requested_events(ack_reception: bool, ack_lecture: bool) -> str | None:
    """The ZAM a producer's ACK_RECEPTION / ACK_LECTURE_MSS flags ask for, as the store keeps them."""
    events = [
        e.value for e, wanted in ((ZamEvent.DELIVERY, ack_reception), (ZamEvent.READ, ack_lecture)) if wanted
    ]
    return ",".join(events) or None
