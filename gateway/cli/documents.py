"""``mssgw ins …`` and ``mssgw xdm …``: look at INS matricules and XDM packages from the shell.

A thin shell over ``mappers.ins``, ``mappers.xdm`` and ``mappers.cda``: this module reads and writes the
files, the mappers stay pure. Refused input exits 65 with the mapper's sentence; INS values are masked in
``xdm show`` unless ``--reveal`` is given.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from gateway.cli.clinical import (
    PATIENT_HELP,
    add_document_options,
    content_type_from_args,
    document_time,
    documents_from_args,
    load_patient,
    missing_xds_codes,
    read_input,
)
from gateway.errors import InputError
from mappers import ins, xdm
from mappers.documents import Author, Code, Document
from mappers.errors import MappingError
from mappers.patient import Patient

EXIT_OK: Final = 0
EXIT_BAD_INPUT: Final = 65


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
    build.add_argument("--patient", type=Path, help=PATIENT_HELP + " (default: the patient the CDA names)")
    add_document_options(build, required=True)
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
        package = xdm.parse_package(read_input(args.file, "package"))
    except MappingError as error:
        return _fail(f"{args.file}: refused: {error}")
    lines = [f"Patient: {_describe_patient(package.patient, args.reveal)}"]
    if package.cda_patient and package.cda_patient != package.patient:
        lines.append(f"Patient in CDA: {_describe_patient(package.cda_patient, args.reveal)}")
    if package.cda_headers:
        lines.append(f"Qualified INS (X-MSS-INS): {'O' if package.ins_qualified else 'N'}")
    else:
        lines.append("Qualified INS (X-MSS-INS): - (no CDA: the header is absent)")
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


def _xdm_build(args: argparse.Namespace) -> int:
    output: Path = args.output
    try:
        if output.exists() and not args.force:
            raise InputError("--output", f"{output} exists (use --force to overwrite)")
        when = document_time(args.date)
        declared = load_patient(args.patient) if args.patient else None
        patient, documents = documents_from_args(args, declared, when)
        content_type = content_type_from_args(args)
        data = xdm.build_package(
            patient, documents, now=when, source_id=args.source_id, content_type=content_type
        )
    except MappingError as error:
        return _fail(f"cannot build the package: {error}")
    try:
        output.write_bytes(data)
    except OSError as error:
        return _fail(f"cannot write {output}: {error.strerror or error}")
    for note in missing_xds_codes(documents, content_type, with_settings=False):
        print(f"mssgw: note: {note}", file=sys.stderr)
    print(f"wrote {output}: {len(documents)} document(s), patient {ins.mask(patient.matricule)}")
    return EXIT_OK
