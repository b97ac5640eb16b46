"""Reading a patient and health documents from files and options, shared by ``send`` and ``xdm build``.

The patient is a JSON file; documents are PDF files (wrapped in a CDA R2 level 1 document by
``mappers.cda``) or CDA XML files, with their metadata given as options. Every refusal names the file or
option at fault (exit 65).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Final

from gateway.errors import InputError
from mappers import cda, ins, patient_match, xds
from mappers.documents import Author, Code, Document, HeaderDefaults
from mappers.errors import MappingError
from mappers.patient import Patient, Sex

MAX_INPUT_BYTES: Final = 256 * 1024 * 1024
_PATIENT_KEYS: Final = frozenset(
    {
        "matricule", "oid", "birth_name", "given_name", "birth_date", "sex", "used_name",
        "other_given_names", "birth_place_code", "local_id", "local_id_root",
    }
)  # fmt: skip
PATIENT_HELP: Final = (
    "JSON file describing the patient: matricule, oid, birth_name, given_name, birth_date (AAAA-MM-JJ), "
    "sex (M/F/U)"
)


def add_document_options(parser: argparse.ArgumentParser, *, required: bool) -> None:
    """The ``--doc`` option and the metadata that goes with the documents."""
    parser.add_argument("--doc", type=Path, action="append", required=required, dest="docs", default=[],
                        help="a PDF (wrapped in a CDA R2 N1) or a CDA XML file; repeatable")  # fmt: skip
    parser.add_argument("--type-code", help="LOINC document type, e.g. 11490-0 (for a CDA: its header code)")
    parser.add_argument("--type-label", help="its label, e.g. 'Lettre de liaison'")
    parser.add_argument("--title", help="document title (default: the type label)")
    parser.add_argument("--date", help="document date, ISO 8601 with offset (default: now)")
    parser.add_argument(
        "--service-start",
        metavar="ISO8601",
        help="when the act began (serviceEvent low, XDS serviceStartTime; default: --date)",
    )
    parser.add_argument(
        "--service-stop",
        metavar="ISO8601",
        help="when it ended (serviceEvent high, XDS serviceStopTime; default: none)",
    )
    parser.add_argument("--author-rpps", help="RPPS number (11 digits), written as its national id 8+RPPS")
    parser.add_argument("--author-family")
    parser.add_argument("--author-given")
    parser.add_argument("--institution-name")
    parser.add_argument("--institution-id", help="identifiant national de structure")
    parser.add_argument(
        "--author-role",
        metavar="CODE^LABEL^SYSTEM",
        help="author's functional role (CDA author/functionCode, XDS authorRole; JDV_J47)",
    )
    parser.add_argument(
        "--author-specialty",
        metavar="CODE^LABEL^SYSTEM",
        help="author's profession and specialty (assignedAuthor/code, XDS authorSpecialty; JDV_J01)",
    )
    parser.add_argument(
        "--facility-type",
        metavar="CODE^LABEL",
        help="healthcare facility type (TRE_R02), e.g. 'SA01^Etablissement public de santé'",
    )
    parser.add_argument(
        "--practice-setting",
        metavar="CODE^LABEL",
        help="practice setting (ASS_X04), e.g. 'ETABLISSEMENT^Etablissement de santé'",
    )
    parser.add_argument(
        "--class-code",
        metavar="CODE^LABEL",
        help="XDS classCode (JDV_J06-XdsClassCode-CISIS, code system 1.2.250.1.213.1.1.4.1), "
        "e.g. '10^Compte rendu'; no CDA header part carries it",
    )
    parser.add_argument(
        "--format-code",
        metavar="CODE^LABEL^SYSTEM",
        help="XDS formatCode of a structured CDA (JDV_J10; a wrapped PDF's is always XDS-SD PDF)",
    )
    parser.add_argument(
        "--content-type-code",
        metavar="CODE^LABEL",
        help="SubmissionSet contentTypeCode (JDV_J03, code system 1.2.250.1.213.2.2), "
        "e.g. '04^Hospitalisation de jour'",
    )
    parser.add_argument(
        "--event-code",
        metavar="CODE^LABEL^SYSTEM",
        action="append",
        default=[],
        help="act documented (serviceEvent code, e.g. CCAM); repeatable",
    )
    parser.add_argument("--confidentiality", action="append", default=[],
                        choices=sorted(xds.MASKING_CODES), help="masking code; repeatable")  # fmt: skip


def read_input(path: Path, what: str) -> bytes:
    """A file the user named, refused when unreadable or absurdly large."""
    try:
        size = path.stat().st_size
        if size > MAX_INPUT_BYTES:
            raise InputError(str(path), f"{what} of {size} bytes, more than {MAX_INPUT_BYTES}")
        return path.read_bytes()
    except OSError as error:
        raise InputError(str(path), f"cannot read {what}: {error.strerror or error}") from error


def load_patient(path: Path) -> Patient:
    """The patient of a JSON file, with a checked INS matricule and OID."""
    try:
        raw = json.loads(read_input(path, "patient file"))
    except json.JSONDecodeError as error:
        raise InputError(f"patient file {path}", f"not JSON ({error})") from error
    if not isinstance(raw, dict):
        raise InputError(f"patient file {path}", "must hold a JSON object")
    unknown = sorted(set(raw) - _PATIENT_KEYS)
    if unknown:
        raise InputError(f"patient file {path}", f"unknown keys {', '.join(unknown)}")
    for key in ("matricule", "oid", "birth_name", "given_name"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise InputError(f"patient file {path}", f"{key!r} is required (a string)")
    try:
        birth = date.fromisoformat(raw["birth_date"]) if raw.get("birth_date") else None
        sex = Sex(str(raw.get("sex", "U")).upper())
    except ValueError as error:
        raise InputError(f"patient file {path}", f"{error} (birth_date is AAAA-MM-JJ, sex M/F/U)") from error

    def text(key: str) -> str | None:
        value = raw.get(key)
        return str(value) if value else None

    patient = Patient(
        # Typed "2 80 07 2a …", it would travel so: the address, METADATA.XML and CDA carry it upper case.
        matricule=ins.normalize(raw["matricule"]),
        oid=raw["oid"],
        birth_name=raw["birth_name"],
        given_name=raw["given_name"],
        birth_date=birth,
        sex=sex,
        used_name=text("used_name"),
        other_given_names=text("other_given_names"),
        birth_place_code=text("birth_place_code"),
        local_id=text("local_id"),
        local_id_root=text("local_id_root"),
    )
    if patient.oid != ins.NIA_OID:
        try:
            ins.parse_matricule(patient.matricule)
        except MappingError as error:
            raise InputError(f"patient file {path}: matricule", str(error)) from error
    if not ins.is_ins_oid(patient.oid):
        raise InputError(f"patient file {path}: oid", f"{patient.oid} is not an INS assigning authority")
    return patient


def code_option(value: str | None, option: str, scheme: str | None) -> Code | None:
    """``CODE^LABEL`` (``CODE^LABEL^SYSTEM`` when ``scheme`` is None), refused naming the option."""
    if value is None:
        return None
    try:
        return xds.parse_code_option(value, option, scheme)
    except MappingError as error:
        raise InputError(option, str(error).removeprefix(f"{option}: ")) from error


def document_time(text: str | None) -> datetime:
    """``--date``, or now."""
    return time_option(text, "--date") or datetime.now(UTC).replace(microsecond=0)


def time_option(text: str | None, option: str) -> datetime | None:
    """An ISO 8601 time with its offset, refused naming the option; ``None`` when not given."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as error:
        raise InputError(option, f"{text!r} is not ISO 8601") from error
    if moment.tzinfo is None:
        raise InputError(option, f"{text!r} needs a UTC offset, e.g. 2024-01-16T15:11:12+01:00")
    return moment


WRAPPER_OPTIONS: Final = {
    cda.HeaderValue.AUTHOR_RPPS: "--author-rpps",
    cda.HeaderValue.AUTHOR_FAMILY: "--author-family",
    cda.HeaderValue.INSTITUTION_ID: "--institution-id",
    cda.HeaderValue.SIGNER_RPPS: "--author-rpps",
    cda.HeaderValue.SIGNER_FAMILY: "--author-family",
    cda.HeaderValue.PRACTICE_SETTING: "--practice-setting",
    cda.HeaderValue.FACILITY_TYPE: "--facility-type",
}
"""The option that gives each mandatory header value (or the ``[documents]`` setting of the same name)."""


def _incomplete(path: Path, error: cda.IncompleteHeaderError) -> InputError:
    options = list(dict.fromkeys(WRAPPER_OPTIONS[value] for value in error.missing))
    what = "; ".join(value.value for value in error.missing)
    return InputError(
        ", ".join(options),
        f"{path} is a PDF wrapped in a CDA R2 N1, whose header needs {what} (CI-SIS: mandatory, no "
        "nullFlavor); give the option, or set it in the [documents] settings",
    )


def _author_option(args: argparse.Namespace) -> Author:
    try:
        rpps = xds.check_rpps(args.author_rpps) if args.author_rpps else None
    except MappingError as error:
        raise InputError("--author-rpps", str(error)) from error
    return Author(
        rpps=rpps,
        family_name=args.author_family,
        given_name=args.author_given,
        institution_name=args.institution_name,
        institution_id=args.institution_id,
        specialty=code_option(args.author_specialty, "--author-specialty", None),
        role=code_option(args.author_role, "--author-role", None),
    )


def content_type_from_args(args: argparse.Namespace, defaults: HeaderDefaults | None = None) -> Code | None:
    """The SubmissionSet contentTypeCode: ``--content-type-code``, else the ``[documents]`` default."""
    given = code_option(args.content_type_code, "--content-type-code", xds.CONTENT_TYPE_OID)
    return given or (defaults or HeaderDefaults()).content_type


def missing_xds_codes(
    documents: Sequence[Document], content_type: Code | None, *, with_settings: bool
) -> list[str]:
    """What METADATA.XML will lack of the XDS codes no CDA header part carries, to be said, not refused:
    there is no fallback value to write, and mssgw copies no ANS table mapping a CDA to them. Each names
    the option to give (and the ``[documents]`` key, when the command reads the settings)."""

    def give(option: str, key: str) -> str:
        return f"give {option}" + (f" (or documents.{key})" if with_settings else "")

    notes = []
    unclassed = sum(1 for d in documents if d.class_code is None)
    if unclassed:
        notes.append(
            f"{unclassed} document(s) without an XDS classCode (JDV_J06) in METADATA.XML: "
            + give("--class-code", "class_code")
        )
    unformatted = sum(1 for d in documents if d.format_code is None)
    if unformatted:
        notes.append(
            f"{unformatted} structured CDA(s) without an XDS formatCode (JDV_J10; not derived from the "
            "templateId) in METADATA.XML: " + give("--format-code", "format_code")
        )
    if documents and content_type is None:
        notes.append(
            "no SubmissionSet contentTypeCode (JDV_J03) in METADATA.XML: "
            + give("--content-type-code", "content_type_code")
        )
    return notes


def documents_from_args(
    args: argparse.Namespace,
    patient: Patient | None,
    when: datetime,
    defaults: HeaderDefaults | None = None,
) -> tuple[Patient, list[Document]]:
    """The patient and the ``--doc`` files as documents with their metadata; PDFs are wrapped in a CDA.

    One patient per message: every CDA given must name the patient of the patient file, or, without a
    patient file, the patient the first CDA names (a PDF alone names nobody). What the options leave
    unset of a wrapper's header comes from ``defaults`` (the ``[documents]`` settings).
    """
    defaults = defaults or HeaderDefaults()
    given_author = _author_option(args)
    # The author answers for the PDFs the gateway wraps (the wrapper's default legalAuthenticator).
    author = given_author.filled_from(defaults.author)
    type_code = Code(args.type_code or "", args.type_label or "", xds.LOINC_OID)
    facility = code_option(args.facility_type, "--facility-type", xds.FACILITY_TYPE_OID)
    setting = code_option(args.practice_setting, "--practice-setting", xds.PRACTICE_SETTING_OID)
    facility, setting = facility or defaults.facility_type, setting or defaults.practice_setting
    class_code = code_option(args.class_code, "--class-code", xds.CLASS_CODE_OID) or defaults.class_code
    format_code = code_option(args.format_code, "--format-code", None) or defaults.format_code
    start = time_option(args.service_start, "--service-start")
    stop = time_option(args.service_stop, "--service-stop")
    events = tuple(c for v in args.event_code if (c := code_option(v, "--event-code", None)))
    masks = tuple(xds.MASKING_CODES[c] for c in dict.fromkeys(args.confidentiality))
    files = [(path, read_input(path, "document")) for path in args.docs]
    headers: dict[Path, cda.CdaHeader] = {}
    for path, content in files:
        if not content.startswith(b"%PDF-"):
            try:
                headers[path] = cda.read_header(content, what=str(path))
            except MappingError as error:
                raise InputError(f"document {path}", str(error)) from error
    named = [patient_match.NamedPatient(str(path), header.patient) for path, header in headers.items()]
    try:
        settled = patient_match.one_patient(patient, "the patient file", named)
    except MappingError as error:
        raise InputError("--doc", str(error)) from error
    if settled is None:
        raise InputError("--doc", "a PDF names no patient: give --patient too (or a CDA naming the patient)")
    with_pdfs = len(headers) < len(files)
    for path, _ in files:
        _check_type(path, headers.get(path), type_code, about_pdfs=with_pdfs)
    documents = []
    for path, content in files:
        header = headers.get(path)
        if header is None:
            try:
                wrapped = cda.pdf_document(
                    content,
                    settled,
                    title=args.title or args.type_label,
                    type_code=type_code,
                    effective_time=when,
                    document_id=cda.document_id(content),
                    author=author,
                    class_code=class_code,
                    confidentiality=masks,
                    service_start=start,
                    service_stop=stop,
                    healthcare_facility_type=facility,
                    practice_setting=setting,
                    event_codes=events,
                )
            except cda.IncompleteHeaderError as error:
                raise _incomplete(path, error) from error
            except MappingError as error:
                raise InputError(f"document {path}", str(error)) from error
            documents.append(wrapped)
            continue
        given = Document(
            filename=path.name,
            content=content,
            mime_type="text/xml",
            title=args.type_label or "",
            type_code=type_code,
            creation_time=when,
            unique_id=cda.document_id(content),
            author=given_author,
            confidentiality=masks,
            class_code=class_code,
            # A PDF wrapped in a CDA keeps its XDS-SD PDF format (apply_header: the header's wins).
            format_code=format_code,
        )
        documented = cda.apply_header(given, header)  # METADATA.XML says what the CDA header says
        if args.title:
            documented = dataclasses.replace(documented, title=args.title)
        documents.append(documented)
    return settled, documents


def _check_type(path: Path, header: cda.CdaHeader | None, given: Code, *, about_pdfs: bool) -> None:
    """A PDF needs --type-code and --type-label; a CDA has its own code, which --type-code may not
    contradict when it can only be about the CDAs (``about_pdfs``: it types the PDFs given beside)."""
    code = header.code if header is not None else None
    if code is None or not code.code:
        if not (given.code and given.label):
            what = "a PDF" if header is None else "a CDA without a header code"
            raise InputError("--doc", f"{path} is {what}: give the document's --type-code and --type-label")
    elif given.code and given.code != code.code and not about_pdfs:
        raise InputError(
            "--type-code",
            f"{given.code} given, but {path} says it is {code.code} ({code.label}) in its header",
        )
