"""MSSanté header rules as pure functions: X-MSS-* values, document subject, sender names, PDF names.

Used by ``mappers.mime`` when a store record becomes a message and when a received message becomes a
record again; the rules and their sources are in MSSANTE.md §4 (Référentiel #2 ECO.2.1.x, ECO.2.2.x,
ECO.2.4.x) and §7. Values coming from the store are checked here for header injection. Nothing here
reads settings, builds MIME or logs: callers pass what they know and get strings back.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, tzinfo
from email.policy import SMTP
from zoneinfo import ZoneInfo

from mappers import cda, ins, wire
from mappers.documents import Document
from mappers.errors import MappingError
from mappers.patient import Patient

X_MSS_CODECDA = "X-MSS-CODECDA"
X_MSS_INS = "X-MSS-INS"
X_MSS_NIL = "X-MSS-NIL"
X_MSS_MES = "X-MSS-MES"
MES_END = "FIN"
SUBJECT_MARKER = "XDM/1.0/DDM+"
LABEL_MAX = 40
PARIS = ZoneInfo("Europe/Paris")

# The MIME types under which an XDM package carries a CDA R2 document (IHE XDS formatCode aside, the
# DocumentEntry mimeType is the only hint every producer fills in).
CDA_MIME_TYPES = frozenset({"text/xml", "application/xml", "application/hl7-v3+xml"})

_TITLES = frozenset({"dr", "pr", "docteur", "professeur", "mme", "mlle", "m", "m.", "mr", "me"})
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_NIL_FIELD = re.compile(rb"^x-mss-nil[ \t]*:", re.IGNORECASE | re.MULTILINE)
_FIN = re.compile(r"\[\s*FIN\s*\]", re.IGNORECASE)
_BIRTH_DATE = re.compile(r"\s(\d{2})/(\d{2})/(\d{4})$")
_COUNT_LABEL = re.compile(r"(\d+) documents ")
_UNSAFE_FILENAME = re.compile(r'[/\\:*?"<>|]')
# Letters that NFKD does not decompose but that a French birth name can carry.
_LIGATURES = str.maketrans(
    {"Œ": "OE", "œ": "oe", "Æ": "AE", "æ": "ae", "Ø": "O", "ø": "o", "Ł": "L", "ł": "l", "ß": "ss"}
)


# Unicode categories Cc (C0 and C1 controls, DEL), Zl and Zp, but the horizontal tab.
_UNSAFE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


class HeaderInjectionError(MappingError):
    """A value from the store carries a line break or a control character meant to forge a header."""


class HeaderValueError(MappingError):
    """A value that cannot be turned into the MSSanté header it is meant for (empty, missing part)."""


class SubjectError(MappingError):
    """A subject that announces a document mail (``XDM/1.0/DDM+``) but does not follow ECO.2.1.3."""


def check_header_value(value: str, *, field: str) -> str:
    """Return ``value`` unchanged if it cannot break out of its header line.

    CR and LF end a header; the other C0/C1 controls and the Unicode line and paragraph separators are
    refused too, because ``str.splitlines`` (used on some paths of the email package and of readers)
    treats several of them as line ends. Horizontal tab is ordinary folding white space. The characters
    of categories Cc, Zl and Zp are found by one regex search (``_UNSAFE``, held to ``unicodedata`` by a
    test over every code point) instead of a category lookup per character (issue 16).
    """
    found = _UNSAFE.search(value)
    if found is not None:
        raise HeaderInjectionError(
            f"{field}: control character U+{ord(found[0]):04X} at position {found.start()} is not allowed "
            "in a mail header"
        )
    return value


def strip_accents(text: str) -> str:
    """Remove diacritics as ECO.2.1.3 asks for the patient's names (``Hélène`` → ``Helene``)."""
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(char for char in decomposed if not unicodedata.combining(char))
    # Ligatures last: "Ǽ" decomposes to "Æ" + accent, and only then becomes "AE".
    return bare.translate(_LIGATURES)


def subject_family_name(birth_name: str) -> str:
    """The ``<NOM>`` of subjects and PDF names: birth name, upper case, without accents."""
    return strip_accents(birth_name).upper().strip()


def subject_given_name(given_name: str) -> str:
    """The ``<prénom>`` of subjects and PDF names: first given name without accents, case kept."""
    return strip_accents(given_name).strip()


def is_cda(document: Document) -> bool:
    """True for a CDA R2 document: XML whose root is a ClinicalDocument (ECO.2.4.1) — not a PDF or image
    carried directly in the package, nor other XML such as a signature."""
    return document.mime_type.lower() in CDA_MIME_TYPES and cda.is_clinical_document(document.content)


def read_cda_headers(documents: Sequence[Document]) -> list[tuple[Document, cda.CdaHeader | None]]:
    """The CDA documents with their header, read once; ``None`` for a header that cannot be read."""
    read: list[tuple[Document, cda.CdaHeader | None]] = []
    for document in documents:
        if is_cda(document):
            try:
                header = cda.read_header(document.content, what=document.filename or document.title)
            except MappingError:
                header = None
            read.append((document, header))
    return read


def codecda_value(
    documents: Sequence[Document], *, read: Sequence[tuple[Document, cda.CdaHeader | None]] | None = None
) -> str | None:
    """Value of X-MSS-CODECDA (ECO.2.4.1), or ``None`` when no CDA travels and the header must be absent.

    Each code is the ``code`` of a CDA header, never the XDS typeCode: the header says what the CDA
    itself says (ECO.2.4.1). The ANS text only says "multi-valué"; the comma list without spaces follows
    the connector examples (MSSANTE.md §4.2).
    """
    codes: list[str] = []
    for document, header in read_cda_headers(documents) if read is None else read:
        if header is None or header.code is None or not header.code.code:
            raise HeaderValueError(
                f"{X_MSS_CODECDA}: the CDA {document.filename or document.title or 'document'} has no "
                "readable header code"
            )
        code = check_header_value(header.code.code.strip(), field=X_MSS_CODECDA)
        if not code or any(char == "," or char.isspace() for char in code):
            raise HeaderValueError(f"{X_MSS_CODECDA}: CDA code {code!r} cannot be written in the header")
        if code not in codes:
            codes.append(code)
    return ",".join(codes) if codes else None


def ins_value(
    patient: Patient | None,
    documents: Sequence[Document],
    *,
    read: Sequence[tuple[Document, cda.CdaHeader | None]] | None = None,
) -> str | None:
    """Value of X-MSS-INS (ECO.2.4.2): ``O``/``N`` when a CDA travels, ``None`` (absent) otherwise.

    The rule is about what the documents hold: ``O`` only when every CDA header names a patient with
    a matricule (valid key), an INS OID and the four traits (``mappers.ins.is_qualified``), as the
    receiving side judges it (``XdmPackage.ins_qualified``). A header that cannot be read is judged
    on ``patient``.
    """
    read = read_cda_headers(documents) if read is None else read
    if not read:
        return None
    qualified = all(ins.is_qualified(patient if header is None else header.patient) for _, header in read)
    return "O" if qualified else "N"


def nil_value(reference: str) -> str:
    """Value of X-MSS-NIL (ECO.2.4.3): the product reference from the settings, on every message."""
    reference = check_header_value(reference, field=X_MSS_NIL).strip()
    if not reference:
        raise HeaderValueError(
            f"{X_MSS_NIL}: the product reference is empty; set the reference given by "
            "convergence.esante.gouv.fr"
        )
    return reference


def nil_field(raw: bytes, reference: str) -> bytes:
    """The ``X-MSS-NIL`` field to write in front of ``raw`` (CRLF line ends); nothing when its header block
    has one already.

    ECO.2.4.3 asks for it on every sent mail, whoever built the message (internal software submitting
    as it is, a DSN or MDN the gateway writes); a reference the sending software wrote itself is kept. The
    field alone, not the message with it: the relay writes it and the stored copy in one join (issue 16).
    """
    end = raw.find(b"\r\n\r\n")
    block = raw if end < 0 else raw[: end + 2]
    if _NIL_FIELD.search(block):
        return b""
    field = wire.text_header(X_MSS_NIL, nil_value(reference))
    return field.fold(policy=SMTP).encode("ascii")


def mss_headers(
    patient: Patient | None,
    documents: Sequence[Document],
    *,
    nil_reference: str,
    end_of_exchange: bool = False,
) -> list[tuple[str, str]]:
    """All X-MSS-* header fields of one outgoing message, in a stable order."""
    fields: list[tuple[str, str]] = []
    read = read_cda_headers(documents)
    codes = codecda_value(documents, read=read)
    if codes is not None:
        fields.append((X_MSS_CODECDA, codes))
    qualified = ins_value(patient, documents, read=read)
    if qualified is not None:
        fields.append((X_MSS_INS, qualified))
    fields.append((X_MSS_NIL, nil_value(nil_reference)))
    if end_of_exchange:
        fields.append((X_MSS_MES, MES_END))
    return fields


def parse_codecda(value: str | None) -> tuple[str, ...]:
    """The CDA codes announced by a received X-MSS-CODECDA (commas, optional spaces)."""
    if value is None:
        return ()
    return tuple(code.strip() for code in value.split(",") if code.strip())


def parse_ins_flag(value: str | None) -> bool | None:
    """A received X-MSS-INS: ``True`` for ``O``, ``False`` for ``N``, ``None`` when absent or unreadable."""
    flag = (value or "").strip().upper()
    return {"O": True, "N": False}.get(flag)


def is_end_of_exchange(value: str | None) -> bool:
    """True for a received ``X-MSS-MES: FIN`` (ECO.2.2.8 fixes the value to three upper-case letters)."""
    return (value or "").strip() == MES_END


def subject_closes_exchange(subject: str) -> bool:
    """True when a professional's subject carries ``[FIN]``, as the regional guides tell them to write.

    The CNAM text says the subject must be exactly ``[FIN]``; people write ``Re: [FIN]`` or
    ``[FIN] Ordonnance`` and expect the exchange to close, so mssgw's rule (DESIGN.md §6) is "carries".
    Case and spaces inside the brackets are tolerated; ``[Fin de traitement]`` is not a closing mark.
    """
    return _FIN.search(subject) is not None


def closes_exchange(subject: str, recipients: Sequence[str]) -> bool:
    """True when a message ends a citizen exchange: a ``[FIN]`` subject sent to a patient address.

    DESIGN.md §6: the gateway then adds ``X-MSS-MES: FIN`` so that Mon espace santé closes its side
    whatever the exact subject (ECO.2.2.8 makes the header the one-message way to close).
    """
    return subject_closes_exchange(subject) and any(ins.is_citizen_address(r) for r in recipients)


def is_exact_fin_subject(subject: str) -> bool:
    """The strict CNAM reading (MSSANTE.md §7.4): the whole subject is ``[FIN]``."""
    return subject.strip() == "[FIN]"


def document_subject(patient: Patient, documents: Sequence[Document], *, with_birth_date: bool = True) -> str:
    """ECO.2.1.3 subject: ``XDM/1.0/DDM+<libellé ≤ 40> <NOM> <prénom> [JJ/MM/AAAA]``.

    One document gives its type label (the CDA ``code/@displayName``) cut to 40 characters; several give
    ``N documents``. The birth date is the only optional field.
    """
    if not documents:
        raise HeaderValueError("a document subject needs at least one document")
    if len(documents) == 1:
        label = documents[0].type_code.label.strip()[:LABEL_MAX].rstrip()
    else:
        label = f"{len(documents)} documents"
    family = subject_family_name(patient.birth_name)
    given = subject_given_name(patient.given_name)
    for name, value in (("document type label", label), ("birth name", family), ("given name", given)):
        if not value:
            raise HeaderValueError(f"subject: the {name} is empty, and ECO.2.1.3 makes it mandatory")
    subject = f"{SUBJECT_MARKER}{label} {family} {given}"
    if with_birth_date and patient.birth_date is not None:
        subject += f" {patient.birth_date:%d/%m/%Y}"
    return check_header_value(subject, field="Subject")


@dataclass(frozen=True, slots=True)
class DocumentSubject:
    """The parts of a received ECO.2.1.3 subject; ``prefix`` is what came before the marker (``Re: ``)."""

    prefix: str
    label: str
    family_name: str
    given_name: str
    birth_date: date | None = None
    document_count: int = 1


def parse_document_subject(subject: str, *, patient: Patient | None = None) -> DocumentSubject | None:
    """Split a document subject into its fields; ``None`` when the subject is not a document subject.

    A label, a birth name and a given name can all contain spaces, so without help the split is a
    guess (the last two words are taken as NOM and prénom). Passing the patient read from the XDM
    package makes it exact whenever the subject names that patient.
    """
    start = subject.find(SUBJECT_MARKER)
    if start < 0:
        return None
    prefix, rest = subject[:start], subject[start + len(SUBJECT_MARKER) :].strip()
    birth_date: date | None = None
    date_match = _BIRTH_DATE.search(rest)
    if date_match is not None:
        day, month, year = (int(group) for group in date_match.groups())
        try:
            birth_date = date(year, month, day)
        except ValueError as exc:
            raise SubjectError(f"subject: {date_match.group().strip()} is not a date ({exc})") from exc
        rest = rest[: date_match.start()].rstrip()
    count = 1
    count_match = _COUNT_LABEL.match(rest)
    if patient is not None:
        family = subject_family_name(patient.birth_name)
        given = subject_given_name(patient.given_name)
        names = f" {family} {given}"
        if rest.endswith(names) and len(rest) > len(names):
            label = rest[: -len(names)]
            return DocumentSubject(prefix, label, family, given, birth_date, _label_count(label))
    if count_match is not None and int(count_match.group(1)) >= 2:
        label, names_part = count_match.group().rstrip(), rest[count_match.end() :]
        family, _, given = names_part.rpartition(" ")
        count = int(count_match.group(1))
    else:
        head, _, given = rest.rpartition(" ")
        label, _, family = head.rpartition(" ")
    if not (label and family and given):
        raise SubjectError(
            f"subject: expected 'XDM/1.0/DDM+<libellé> <NOM> <prénom> [JJ/MM/AAAA]', got {subject!r}"
        )
    return DocumentSubject(prefix, label, family, given, birth_date, count)


def _label_count(label: str) -> int:
    match = _COUNT_LABEL.match(label + " ")
    if match is not None and match.end() == len(label) + 1 and int(match.group(1)) >= 2:
        return int(match.group(1))
    return 1


def _display_part(value: str | None, *, field: str) -> str:
    # "_" (ASCII 95) separates the parts of an ECO.2.2.7 display name: inside a part it becomes a space
    # so that the reader still splits the name at the right places.
    return check_header_value(value or "", field=field).replace("_", " ").strip()


def person_display_name(
    given_name: str, family_name: str, *, title: str | None = None, entity: str | None = None
) -> str:
    """ECO.2.2.7 display name of a personal mailbox: ``Titre_Prénom_NOM_Entité``, NOM in upper case.

    Only the given and family names are mandatory, e.g. ``Dr_Marie_MARTIN_Cabinet Medical``.
    """
    given = _display_part(given_name, field="given name")
    family = _display_part(family_name, field="family name").upper()
    if not given or not family:
        raise HeaderValueError("a personal mailbox's display name needs a given name and a family name")
    parts = [_display_part(title, field="title"), given, family, _display_part(entity, field="entity")]
    return "_".join(part for part in parts if part)


def organisation_display_name(entity: str) -> str:
    """ECO.2.2.7 display name of an organisational or application mailbox: the functional entity."""
    name = check_header_value(entity, field="entity").strip()
    if not name:
        raise HeaderValueError("an organisational mailbox's display name (its entity) is empty")
    return name


@dataclass(frozen=True, slots=True)
class DisplayName:
    """A display name read back: a person (given and family names) or only an entity."""

    given_name: str | None = None
    family_name: str | None = None
    title: str | None = None
    entity: str | None = None

    @property
    def is_person(self) -> bool:
        """True when the name designates a person rather than an organisation or an application."""
        return self.family_name is not None


def parse_display_name(display_name: str) -> DisplayName:
    """Read an ECO.2.2.7 display name back, to show who wrote (person) or which service (entity).

    A name is taken as a person's only when a part in the NOM position is upper case, as the rule
    requires; anything else (``Hopital C – Biologie``) is an entity.
    """
    parts = [part.strip() for part in display_name.split("_")]
    title: str | None = None
    if len(parts) >= 3 and parts[0].lower() in _TITLES:
        title, parts = parts[0], parts[1:]
    if len(parts) >= 2 and parts[0] and _is_upper_name(parts[1]):
        entity = "_".join(parts[2:]) or None
        return DisplayName(given_name=parts[0], family_name=parts[1], title=title, entity=entity)
    return DisplayName(entity=display_name.strip() or None)


def _is_upper_name(text: str) -> bool:
    return any(char.isalpha() for char in text) and text == text.upper()


def pdf_attachment_name(
    act_date: date,
    type_label: str,
    birth_name: str,
    given_name: str,
    file_number: str | None = None,
) -> str:
    """ECO.2.1.6 name of a PDF copy: ``<AAAAMMJJ>_<type ≤ 40>_<NOM>_<prénom>[_<dossier>].pdf``.

    Characters that a receiving file system would read as a path (``/``, ``\\``, ``:`` …) become ``-``,
    so a saved copy always stays in the folder it is saved to.
    """
    parts = [
        f"{act_date:%Y%m%d}",
        type_label.strip()[:LABEL_MAX].rstrip(),
        subject_family_name(birth_name),
        subject_given_name(given_name),
    ]
    if file_number:
        parts.append(file_number.strip())
    cleaned = [_filename_part(part) for part in parts]
    if not all(cleaned[1:4]):
        raise HeaderValueError("PDF name: type, NOM and prénom are mandatory (ECO.2.1.6)")
    return "_".join(part for part in cleaned if part) + ".pdf"


def document_pdf_name(
    document: Document, patient: Patient, *, file_number: str | None = None, tz: tzinfo = PARIS
) -> str:
    """PDF copy name of one document; the act date is the service start (else the creation) in France."""
    moment: datetime = document.service_start or document.creation_time
    act_date = moment.astimezone(tz).date() if moment.tzinfo is not None else moment.date()
    return pdf_attachment_name(
        act_date, document.type_code.label, patient.birth_name, patient.given_name, file_number
    )


def _filename_part(text: str) -> str:
    check_header_value(text, field="attachment name")
    return _UNSAFE_FILENAME.sub("-", text)


def header_block(raw: bytes) -> bytes:
    """The header block of ``raw`` with the blank line that ends it (all of ``raw`` without one): what a
    header-only parse needs, since the email package decodes and splits whatever it is given in full."""
    end = _HEADER_END.search(raw)
    return raw[: end.end()] if end else raw


def remove_fields(raw: bytes, unwanted: Callable[[bytes], bool]) -> bytes:
    """``raw`` without the header fields ``unwanted`` picks (given each whole field, folded lines and
    all); the body after the blank line is never looked at."""
    kept: list[bytes] = []
    field: list[bytes] = []
    position = 0

    def flush() -> None:
        if field and not unwanted(b"".join(field)):
            kept.extend(field)
        field.clear()

    while position < len(raw):
        line_end = raw.find(b"\n", position)
        line_end = len(raw) if line_end < 0 else line_end + 1
        line = raw[position:line_end]
        if line in (b"\r\n", b"\n"):
            break  # the blank line: the body follows, untouched
        if line[:1] not in (b" ", b"\t"):
            flush()
        field.append(line)
        position = line_end
    flush()
    if sum(map(len, kept)) == position:
        return raw  # nothing removed: no copy of a body that may be large
    with memoryview(raw) as view, view[position:] as body:
        return b"".join([*kept, body])
