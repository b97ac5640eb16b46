"""Read an ANS "Transmission de document(s) CDA-R2 en HL7v2" ORU^R01 (v2.5) or MDM (v2.6) into a record.

What the producer asks for its document (``evenements-declenchants``): a first transmission (``MDM^T02``,
OBX-11 = F), a replacement of one sent before (``MDM^T10``, OBX-11 = C) or a deletion (``MDM^T04``,
OBX-11 = D); an ORU^R01 says it with OBX-11 alone. An event and an OBX-11 that disagree are refused.

A producer (DPI, RIS, SGL) hands the gateway a CDA and its MSSanté recipients in ER7; everything the mail
needs is read here, without sockets, so the same refusal (with its HL7 table 0357 code) is given by the MLLP
listener and by any offline tool. Parsing and unescaping are the ``hl7`` library's; the profile's
rules are ours.

Public API (stable):
    read_transmission(er7: str) -> Transmission          # raises Hl7Refusal (code, text)
    check_flags(flags: Mapping[str, bool]) -> Route       # raises Hl7Refusal 207
    read_header(er7: str) -> RequestHeader | None         # what an ACK needs, even for a refused message
    decode_er7(block: bytes) -> str                       # an MLLP block decoded as its MSH-18 says
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Any, Final

import hl7

from mappers.documents import DocumentAction
from mappers.errors import MappingError
from mappers.hl7_ack import RequestHeader
from mappers.patient import Patient, Sex

#: The MetaDMPMSS flags every message must carry (profils-messages, "métadonnées DMP/MSSanté").
REQUIRED_FLAGS: Final = (
    "MASQUE_PS",
    "INVISIBLE_PATIENT",
    "INVISIBLE_REP_LEGAUX",
    "CONNEXION_SECRETE",
    "MODIF_CONF_CODE",
    "DESTDMP",
    "DESTMSSANTEPS",
    "DESTMSSANTEPAT",
    "ACK_RECEPTION",
    "ACK_LECTURE_MSS",
)
_BODY_CODES: Final = ("CORPSMAIL_PS", "CORPSMAIL_PATIENT")
#: MSH-9 and the MSH-12 version the profile fixes for it.
_VERSIONS: Final = {
    ("ORU", "R01"): "2.5",
    ("MDM", "T02"): "2.6",
    ("MDM", "T10"): "2.6",
    ("MDM", "T04"): "2.6",
}
#: OBX-11 of the document (HL7 table 0085) → what is asked for it.
_STATUSES: Final = {
    "F": DocumentAction.ORIGINAL,
    "C": DocumentAction.REPLACEMENT,
    "D": DocumentAction.DELETION,
}
#: The OBX-11 each MDM event implies (an ORU^R01 takes any of them).
_MDM_ACTIONS: Final = {
    "T02": DocumentAction.ORIGINAL,
    "T10": DocumentAction.REPLACEMENT,
    "T04": DocumentAction.DELETION,
}
#: MSH-18 names the profiles allow → Python codec.
CHARSETS: Final = {"UNICODE UTF-8": "utf-8", "8859/1": "iso-8859-1", "8859/15": "iso-8859-15", "": "ascii"}


class Hl7Refusal(MappingError):
    """Why a message cannot be accepted, with the HL7 table 0357 code that goes into ERR-3."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


class Route(StrEnum):
    """The three MetaDMPMSS combinations regles-gestion-mssante lets travel by MSSanté."""

    PROFESSIONALS_AND_PATIENT = "professionals-and-patient"
    PROFESSIONALS_ONLY = "professionals-only"
    PATIENT_ONLY = "patient-only"


@dataclass(frozen=True, slots=True)
class Transmission:
    """What one ORU/MDM asks the gateway to send; addresses as the producer wrote them."""

    sending_application: str
    sending_facility: str
    control_id: str
    version: str
    message_type: str
    charset: str
    patient: Patient
    cdas: tuple[bytes, ...]
    recipients: tuple[str, ...]
    reply_to: str | None
    flags: Mapping[str, bool]
    route: Route
    action: DocumentAction
    patient_reply_closed: bool
    body_professionals: str | None
    body_patient: str | None


def check_flags(flags: Mapping[str, bool]) -> Route:
    """Map the flags to one of the allowed routes or refuse with 207 ("les cas non représentés ...").

    INVISIBLE_REP_LEGAUX is read as free when the patient is not a recipient: the ANS's own MDM^T02 example
    sends to professionals only with it set to Y, and a PFI must accept what referenced producers send.
    """
    f = flags
    if f["DESTMSSANTEPS"] and f["DESTMSSANTEPAT"]:
        if not (f["MASQUE_PS"] or f["INVISIBLE_PATIENT"] or f["INVISIBLE_REP_LEGAUX"]):
            return Route.PROFESSIONALS_AND_PATIENT
    elif f["DESTMSSANTEPS"]:
        if not f["MASQUE_PS"] and f["INVISIBLE_PATIENT"]:
            return Route.PROFESSIONALS_ONLY
    elif f["DESTMSSANTEPAT"] and not (f["INVISIBLE_PATIENT"] or f["CONNEXION_SECRETE"] or f["DESTDMP"]):
        return Route.PATIENT_ONLY
    shown = ", ".join(f"{name}={'Y' if f[name] else 'N'}" for name in REQUIRED_FLAGS)
    raise Hl7Refusal(207, f"MetaDMPMSS combination not allowed for MSSanté: {shown}")


def decode_er7(block: bytes) -> str:
    """Decode a frame in the character set its own MSH-18 names (the profile allows UTF-8 and 8859/1, /15).

    MSH is read as bytes first: every allowed set is ASCII-compatible up to MSH-18, so the header can be
    split before the body is decoded.
    """
    if block[:3] != b"MSH" or len(block) < 4:
        raise Hl7Refusal(100, "the frame does not start with an MSH segment")
    fields = block.split(b"\r", 1)[0].split(block[3:4])
    name = fields[17].decode("ascii", "replace").strip() if len(fields) > 17 else ""
    if name not in CHARSETS:
        raise Hl7Refusal(203, f"MSH-18 character set {name!r} not supported")
    try:
        return block.decode(CHARSETS[name])
    except UnicodeDecodeError as exc:
        raise Hl7Refusal(102, f"the message is not valid {name or 'ASCII'} (MSH-18)") from exc


def read_transmission(er7: str) -> Transmission:
    """Parse one ER7 message (segments separated by CR) and apply the profile's rules."""
    message = _parse(er7)
    if message is None:
        raise Hl7Refusal(100, "no MSH segment first: not an HL7 v2 message")
    msh = message.segment("MSH")
    kind = (_get(msh, 9, comp=1), _get(msh, 9, comp=2))
    version = _get(msh, 12)
    if kind not in _VERSIONS:
        raise Hl7Refusal(
            201, f"message type {kind[0]}^{kind[1]} not supported (ORU^R01, MDM^T02, MDM^T10 or MDM^T04)"
        )
    if version != _VERSIONS[kind]:
        raise Hl7Refusal(203, f"{kind[0]}^{kind[1]} must be HL7 version {_VERSIONS[kind]}, not {version!r}")
    control_id = _get(msh, 10)
    if not control_id:
        raise Hl7Refusal(101, "MSH-10 (message control id) is empty")
    charset = _get(msh, 18)
    if charset not in CHARSETS:
        raise Hl7Refusal(203, f"MSH-18 character set {charset!r} not supported")
    segments = {str(seg[0]): seg for seg in message}
    if "PID" not in segments:
        raise Hl7Refusal(100, "PID segment missing")
    patient = _patient(segments["PID"])
    cdas, statuses, recipients, reply_to, flags, reply_closed, bodies = _observations(message)
    missing = [name for name in REQUIRED_FLAGS if name not in flags]
    if missing:
        raise Hl7Refusal(101, "MetaDMPMSS OBX missing: " + ", ".join(missing))
    route = check_flags(flags)
    if not cdas:
        raise Hl7Refusal(101, "no OBX of type ED carrying the CDA")
    action = _action(kind, statuses)
    if route is not Route.PATIENT_ONLY and not recipients:
        raise Hl7Refusal(101, "DESTMSSANTEPS=Y but no PRT with PRT-4 = RCT and an X.400 address")
    return Transmission(
        sending_application=_get(msh, 3),
        sending_facility=_get(msh, 4),
        control_id=control_id,
        version=version,
        message_type=f"{kind[0]}^{kind[1]}",
        charset=CHARSETS[charset],
        patient=patient,
        cdas=tuple(cdas),
        recipients=tuple(recipients),
        reply_to=reply_to,
        flags=flags,
        route=route,
        action=action,
        patient_reply_closed=reply_closed,
        body_professionals=bodies.get("CORPSMAIL_PS"),
        body_patient=bodies.get("CORPSMAIL_PATIENT"),
    )


def _action(kind: tuple[str, str], statuses: list[str]) -> DocumentAction:
    """What the documents' OBX-11 ask, which must be one thing and, for an MDM, what its event says.

    A T10 whose OBX says F (or a T02 saying D) leaves no safe reading: mailing a deletion as a new
    document, or the reverse, would mislead every recipient, so it is refused rather than guessed.
    """
    unknown = sorted({s for s in statuses if s not in _STATUSES})
    if unknown:
        raise Hl7Refusal(103, f"OBX-11 {unknown[0]!r} of the document is not F, C or D (HL7 table 0085)")
    actions = {_STATUSES[s] for s in statuses}
    if len(actions) > 1:
        raise Hl7Refusal(207, "the documents' OBX-11 differ: one message asks for one action (F, C or D)")
    [action] = actions
    expected = _MDM_ACTIONS.get(kind[1]) if kind[0] == "MDM" else None
    if expected is not None and action is not expected:
        letter = next(s for s, a in _STATUSES.items() if a is expected)
        raise Hl7Refusal(
            207,
            f"MDM^{kind[1]} asks for a {expected}: the document's OBX-11 must be {letter}, not {statuses[0]}",
        )
    return action


def read_header(er7: str) -> RequestHeader | None:
    """The MSH fields the ACK swaps and echoes; None when there is no MSH to answer."""
    message = _parse(er7)
    if message is None:
        return None
    msh = message.segment("MSH")
    return RequestHeader(
        sending_application=_get(msh, 3),
        sending_facility=_get(msh, 4),
        receiving_application=_get(msh, 5),
        receiving_facility=_get(msh, 6),
        control_id=_get(msh, 10),
        processing_id=_get(msh, 11),
        version=_get(msh, 12),
        trigger=_get(msh, 9, comp=2),
    )


def _parse(er7: str) -> Any:
    """The parsed message when it starts with an MSH the library can read, else None."""
    try:
        message = hl7.parse(er7)
        message.segment("MSH")
    except (hl7.ParseException, KeyError, IndexError, ValueError):
        return None
    return message


def _get(segment: Any, field: int, rep: int = 1, comp: int = 1, sub: int = 1) -> str:
    """A value or "" when absent: optional HL7 fields are routinely left out."""
    try:
        return str(segment.extract_field(1, field, rep, comp, sub)).strip()
    except (IndexError, KeyError):
        return ""


def _patient(pid: Any) -> Patient:
    """The INS from PID-3 (the repetition typed INS with an INS OID) and the PID-5/7/8 traits."""
    matricule = oid = ""
    for rep in range(1, len(pid[3]) + 1 if len(pid) > 3 else 1):
        candidate = _get(pid, 3, rep, 4, 2)
        if candidate.startswith("1.2.250.1.213.1.4.") and _get(pid, 3, rep, 5) == "INS":
            matricule, oid = _get(pid, 3, rep, 1), candidate
            break
    if not matricule:
        raise Hl7Refusal(101, "PID-3 carries no INS (identifier type INS with an INS OID)")
    birth = _get(pid, 7)
    try:
        birth_date = date(int(birth[0:4]), int(birth[4:6]), int(birth[6:8])) if birth else None
    except ValueError as exc:
        raise Hl7Refusal(102, "PID-7 is not a date (YYYYMMDD…)") from exc
    sex_code = _get(pid, 8)
    sex = Sex(sex_code) if sex_code in {s.value for s in Sex} else Sex.UNKNOWN
    given = _get(pid, 5, comp=2)
    return Patient(
        matricule=matricule,
        oid=oid,
        birth_name=_get(pid, 5, comp=1),
        given_name=given.split(" ")[0] if given else "",
        birth_date=birth_date,
        sex=sex,
        other_given_names=_get(pid, 5, comp=3) or None,
    )


_FLAG_VALUE = re.compile(r"[YN]")


def _observations(
    message: Any,
) -> tuple[list[bytes], list[str], list[str], str | None, dict[str, bool], bool, dict[str, str]]:
    """Walk OBX/PRT/NTE in order: PRT and NTE belong to the OBX before them. The documents come with
    their OBX-11 (result status)."""
    cdas: list[bytes] = []
    statuses: list[str] = []
    recipients: list[str] = []
    reply_to: str | None = None
    flags: dict[str, bool] = {}
    bodies: dict[str, str] = {}
    reply_closed = False
    current = ""
    for segment in message:
        name = str(segment[0])
        if name == "OBX":
            current = _get(segment, 3)
            if _get(segment, 2) == "ED" and current not in _BODY_CODES:
                cdas.append(_cda(segment))
                statuses.append(_get(segment, 11))
            elif _get(segment, 3, comp=3) == "MetaDMPMSS" and current in _BODY_CODES:
                bodies[current] = _body_text(segment)
            elif _get(segment, 3, comp=3) == "MetaDMPMSS":
                value = _get(segment, 5)
                if not _FLAG_VALUE.fullmatch(value):
                    raise Hl7Refusal(103, f"OBX {current}: value must be Y or N")
                flags[current] = value == "Y"
        elif name == "PRT":
            role, address = _get(segment, 4), _get(segment, 15, comp=4)
            if role in {"RCT", "REPLY"} and (_get(segment, 15, comp=3) != "X.400" or "@" not in address):
                raise Hl7Refusal(102, f"PRT {role}: PRT-15 must be ^^X.400^<address>")
            if role == "RCT":
                recipients.append(address)
            elif role == "REPLY":
                reply_to = address
        elif name == "NTE" and current == "DESTMSSANTEPAT":
            reply_closed = _get(segment, 4) == "FIN"
    return cdas, statuses, recipients, reply_to, flags, reply_closed, bodies


def _cda(obx: Any) -> bytes:
    """OBX-5 as ED: ^TEXT|text^XML^Base64^<data>."""
    return _encapsulated(obx, "the document")


def _encapsulated(obx: Any, what: str) -> bytes:
    """The data of an ED OBX-5 (``^TEXT^<subtype>^Base64^<data>``), which the profile always sends base64."""
    if _get(obx, 5, comp=4).lower() != "base64":
        raise Hl7Refusal(102, f"OBX-5.4 of {what} must be Base64")
    try:
        return base64.b64decode(_get(obx, 5, comp=5), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise Hl7Refusal(102, f"OBX-5.5 of {what} is not valid base64") from exc


def _body_text(obx: Any) -> str:
    """A CORPSMAIL_* text: the profile (and every ANS example) sends it ED, base64 of the text in OBX-5.5;
    a value without Base64 in OBX-5.4 (TX, ST, or an ED some producers fill as text) is taken as written.
    The base64 carries octets with no charset of their own: UTF-8 (what the ANS examples use) unless
    they are not, then ISO 8859-15, the profile's other MSH-18."""
    if _get(obx, 2) != "ED" or _get(obx, 5, comp=4).lower() != "base64":
        return _get(obx, 5)
    data = _encapsulated(obx, f"the mail body {_get(obx, 3)}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("iso-8859-15")
