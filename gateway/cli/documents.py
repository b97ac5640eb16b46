"""``mssgw ins …`` and ``mssgw xdm …``: look at INS matricules and XDM packages from the shell.

A thin shell over ``mappers.ins``, ``mappers.xdm`` and ``mappers.cda``: this module reads and writes the
files, the mappers stay pure. Refused input exits 65 with the mapper's sentence; INS values are masked in
``xdm show`` unless ``--reveal`` is given.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Final

from mappers import cda, ins, xdm, xds
from mappers.documents import Author, Code, Document
from mappers.errors import MappingError
from mappers.patient import Patient, Sex

EXIT_OK: Final = 0
EXIT_BAD_INPUT: Final = 65
MAX_INPUT_BYTES: Final = 256 * 1024 * 1024
_CONFIDENTIALITY: Final = {
    code.code: code for code in (xds.MASQUE_PS, xds.INVISIBLE_PATIENT, xds.INVISIBLE_REP_LEGAUX)
}
_PATIENT_KEYS: Final = frozenset(
    {
        "matricule", "oid", "birth_name", "given_name", "birth_date", "sex", "used_name",
        "other_given_names", "birth_place_code", "local_id", "local_id_root",
    }
)  # fmt: skip


class InputError(Exception):
    """A file or option the user must fix; the message names it."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``ins`` and ``xdm`` sub-commands."""
    ins_parser = subparsers.add_parser("ins", help="check and decode INS matricules")
    ins_commands = ins_parser.add_subparsers(dest="ins_command", required=True, metavar="ACTION")
    check = ins_commands.add_parser("check", help="check a matricule (or citizen address)")
    check.add_argument("matricule", help="15 characters, spaces allowed, or <matricule>@patient.mssante.fr")
    check.add_argument("--oid", help="the assigning authority OID that comes with it")
    check.set_defaults(handler=_ins_check)

    xdm_parser = subparsers.add_parser("xdm", help="show or build IHE_XDM.zip packages")
    xdm_commands = xdm_parser.add_subparsers(dest="xdm_command", required=True, metavar="ACTION")
    show = xdm_commands.add_parser("show", help="print a package's patient, documents and problems")
    show.add_argument("file", type=Path)
    show.add_argument("--reveal", action="store_true", help="print the full INS (masked by default)")
    show.add_argument("--strict", action="store_true", help="exit 65 when the package has problems")
    show.set_defaults(handler=_xdm_show)

    build = xdm_commands.add_parser("build", help="build a package from PDF or CDA files")
    build.add_argument("--patient", type=Path, required=True, help="JSON file describing the patient")
    build.add_argument("--doc", type=Path, action="append", required=True, dest="docs",
                       help="a PDF (wrapped in a CDA R2 N1) or a CDA XML file; repeatable")  # fmt: skip
    build.add_argument("--type-code", required=True, help="LOINC document type, e.g. 11490-0")
    build.add_argument("--type-label", required=True, help="its label, e.g. 'Lettre de liaison'")
    build.add_argument("--title", help="document title (default: the type label)")
    build.add_argument("--date", help="document date, ISO 8601 with offset (default: now)")
    build.add_argument("--author-rpps")
    build.add_argument("--author-family")
    build.add_argument("--author-given")
    build.add_argument("--institution-name")
    build.add_argument("--institution-id", help="identifiant national de structure")
    build.add_argument("--confidentiality", action="append", default=[],
                       choices=sorted(_CONFIDENTIALITY), help="masking code; repeatable")  # fmt: skip
    build.add_argument("--source-id", default=xdm.DEFAULT_SOURCE_ID, help="sending system OID")
    build.add_argument("-o", "--output", type=Path, required=True)
    build.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists")
    build.set_defaults(handler=_xdm_build)


def _fail(message: str) -> int:
    print(f"mssgw: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _ins_check(args: argparse.Namespace) -> int:
    text: str = args.matricule
    try:
        parse = ins.parse_citizen_address if "@" in text else ins.parse_matricule
        decoded = parse(text)
    except ins.InsError as error:
        return _fail(f"invalid INS matricule: {error}")
    print(f"{decoded.value}: valid INS matricule")
    print(decoded.describe(datetime.now(UTC).year))
    if args.oid:
        name = ins.oid_name(args.oid)
        if name is None:
            return _fail(f"OID {args.oid} is not an INS assigning authority")
        print(f"authority: {name} ({args.oid})" + (" - test data only" if ins.is_test_oid(args.oid) else ""))
    print(f"citizen address: {ins.citizen_address(decoded.value)}")
    return EXIT_OK


def _read(path: Path, what: str) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_INPUT_BYTES:
            raise InputError(f"{what} {path} is {size} bytes, more than {MAX_INPUT_BYTES}")
        return path.read_bytes()
    except OSError as error:
        raise InputError(f"cannot read {what} {path}: {error.strerror or error}") from error


def _code(code: Code | None) -> str:
    return f"{code.code} {code.label}".strip() if code else "-"


def _time(moment: datetime | None) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC" if moment else "-"


def _describe_patient(patient: Patient | None, reveal: bool) -> str:
    if patient is None:
        return "none"
    matricule = patient.matricule if reveal else ins.mask(patient.matricule)
    born = patient.birth_date.isoformat() if patient.birth_date else "unknown birth date"
    authority = ins.oid_name(patient.oid) or patient.oid or "no OID"
    return (
        f"{patient.birth_name} {patient.given_name}, sex {patient.sex.value}, born {born}, "
        f"INS {matricule} ({authority})"
    )


def _describe_document(number: int, document: Document) -> list[str]:
    masks = ", ".join(c.code for c in document.confidentiality) or "none"
    return [
        f"  {number}. {document.filename}  {document.mime_type}  {len(document.content)} bytes",
        f"     title: {document.title}",
        f"     type: {_code(document.type_code)}; class: {_code(document.class_code)}",
        f"     created: {_time(document.creation_time)}; unique id: {document.unique_id}",
        f"     author: {_describe_author(document.author)}; masking: {masks}",
    ]


def _describe_author(author: Author | None) -> str:
    if author is None:
        return "-"
    person = " ".join(p for p in (author.given_name, author.family_name) if p) or "?"
    rpps = f" (RPPS {author.rpps})" if author.rpps else ""
    place = f", {author.institution_name}" if author.institution_name else ""
    return person + rpps + place


def _xdm_show(args: argparse.Namespace) -> int:
    try:
        package = xdm.parse_package(_read(args.file, "package"))
    except InputError as error:
        return _fail(str(error))
    except MappingError as error:
        return _fail(f"{args.file}: refused: {error}")
    lines = [f"Patient: {_describe_patient(package.patient, args.reveal)}"]
    if package.cda_patient and package.cda_patient != package.patient:
        lines.append(f"Patient in CDA: {_describe_patient(package.cda_patient, args.reveal)}")
    lines.append(f"Qualified INS (X-MSS-INS): {'O' if package.ins_qualified else 'N'}")
    if package.submission:
        lines.append(
            f"Submission: {_time(package.submission.submission_time)}, "
            f"source {package.submission.source_id or '-'}, unique id {package.submission.unique_id or '-'}"
        )
    lines.append(f"Documents ({len(package.documents)}):")
    for number, document in enumerate(package.documents, start=1):
        lines.extend(_describe_document(number, document))
    lines.append(f"CDA codes (X-MSS-CODECDA): {', '.join(xdm.package_cda_codes(package)) or '-'}")
    lines.append(f"Problems ({len(package.problems)}):" if package.problems else "Problems: none")
    lines.extend(f"  - {problem}" for problem in package.problems)
    print("\n".join(lines))
    return EXIT_BAD_INPUT if args.strict and package.problems else EXIT_OK


def _load_patient(path: Path) -> Patient:
    try:
        raw = json.loads(_read(path, "patient file"))
    except json.JSONDecodeError as error:
        raise InputError(f"patient file {path} is not JSON: {error}") from error
    if not isinstance(raw, dict):
        raise InputError(f"patient file {path} must hold a JSON object")
    unknown = sorted(set(raw) - _PATIENT_KEYS)
    if unknown:
        raise InputError(f"patient file {path}: unknown keys {', '.join(unknown)}")
    for key in ("matricule", "oid", "birth_name", "given_name"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise InputError(f"patient file {path}: {key!r} is required (a string)")
    try:
        birth = date.fromisoformat(raw["birth_date"]) if raw.get("birth_date") else None
        sex = Sex(str(raw.get("sex", "U")).upper())
    except ValueError as error:
        raise InputError(f"patient file {path}: {error} (birth_date is AAAA-MM-JJ, sex M/F/U)") from error

    def text(key: str) -> str | None:
        value = raw.get(key)
        return str(value) if value else None

    patient = Patient(
        matricule=raw["matricule"],
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
        ins.parse_matricule(patient.matricule)
    if not ins.is_ins_oid(patient.oid):
        raise InputError(f"patient file {path}: OID {patient.oid} is not an INS assigning authority")
    return patient


def _document_id(content: bytes) -> str:
    digest = hashlib.sha1(content, usedforsecurity=False).digest()
    return "2.25." + str(uuid.UUID(bytes=digest[:16], version=5).int)


def _when(text: str | None) -> datetime:
    if not text:
        return datetime.now(UTC).replace(microsecond=0)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as error:
        raise InputError(f"--date {text!r} is not ISO 8601") from error
    if moment.tzinfo is None:
        raise InputError(f"--date {text!r} needs a UTC offset, e.g. 2024-01-16T15:11:12+01:00")
    return moment


def _documents(args: argparse.Namespace, patient: Patient, when: datetime) -> list[Document]:
    author = Author(
        rpps=args.author_rpps,
        family_name=args.author_family,
        given_name=args.author_given,
        institution_name=args.institution_name,
        institution_id=args.institution_id,
    )
    type_code = Code(args.type_code, args.type_label, xds.LOINC_OID)
    masks = tuple(_CONFIDENTIALITY[c] for c in dict.fromkeys(args.confidentiality))
    documents = []
    for path in args.docs:
        content = _read(path, "document")
        if content.startswith(b"%PDF-"):
            documents.append(
                cda.pdf_document(
                    content,
                    patient,
                    title=args.title or args.type_label,
                    type_code=type_code,
                    effective_time=when,
                    document_id=_document_id(content),
                    author=author,
                    confidentiality=masks,
                )  # fmt: skip
            )
            continue
        header = cda.read_header(content, what=str(path))
        documents.append(
            Document(
                filename=path.name,
                content=content,
                mime_type="text/xml",
                title=args.title or header.title or args.type_label,
                type_code=header.code or type_code,
                creation_time=header.effective_time or when,
                unique_id=header.unique_id or _document_id(content),
                author=header.author or author,
                confidentiality=masks,
            )  # fmt: skip
        )
    return documents


def _xdm_build(args: argparse.Namespace) -> int:
    output: Path = args.output
    try:
        if output.exists() and not args.force:
            raise InputError(f"{output} exists (use --force to overwrite)")
        patient = _load_patient(args.patient)
        when = _when(args.date)
        documents = _documents(args, patient, when)
        data = xdm.build_package(patient, documents, now=when, source_id=args.source_id)
    except InputError as error:
        return _fail(str(error))
    except MappingError as error:
        return _fail(f"cannot build the package: {error}")
    try:
        output.write_bytes(data)
    except OSError as error:
        return _fail(f"cannot write {output}: {error.strerror or error}")
    print(f"wrote {output}: {len(documents)} document(s), patient {ins.mask(patient.matricule)}")
    return EXIT_OK
