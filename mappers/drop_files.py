"""Received message record → the files a drop folder's ``.documents/`` holds for business software.

Business software reads files, not MIME: it gets the package's ``METADATA.XML`` as received, each document
under a name that says what it is (``DOC0001-lettre-de-liaison.cda.xml``: the package name first, so
METADATA.XML's ``URI`` still finds it, then the type), the PDF a CDA R2 level 1 carries, decoded, beside
its CDA (``DOC0001-lettre-de-liaison.pdf``), and every other attachment under its own bare name (a DSN's
``delivery-status-N.txt`` with all its blocks). Names never repeat: a later one gets ``-2``, ``-3``. Pure.
"""

from __future__ import annotations

import os
import re
import unicodedata
from pathlib import PurePosixPath

from mappers.documents import Document
from mappers.headers import is_cda
from mappers.pdf_copies import PDF_MIME_TYPE, pdf_copy
from mappers.records import MessageRecord

METADATA_NAME = "METADATA.XML"
_NOT_WORD = re.compile(r"[^a-z0-9]+")
_MAX_SLUG = 60


def drop_files(record: MessageRecord) -> dict[str, bytes]:
    """The files to write for ``record``, by file name, in the order a reader would want them."""
    files: dict[str, bytes] = {}
    for metadata in record.package_metadata:
        _add(files, METADATA_NAME, metadata)
    for document in record.documents:
        stem = _document_stem(document)
        if is_cda(document):
            _add(files, f"{stem}.cda.xml", document.content)
            pdf = pdf_copy(document)
            if pdf is not None:
                _add(files, f"{stem}.pdf", pdf)
        else:
            suffix = ".pdf" if document.mime_type.lower() == PDF_MIME_TYPE else _suffix(document.filename)
            _add(files, f"{stem}{suffix}", document.content)
    for attachment in record.attachments:
        _add(files, _bare(attachment.filename) or "attachment", attachment.content)
    return files


def slug(text: str) -> str:
    """``text`` as lower-case ASCII words joined by ``-``: ``Lettre de liaison`` → ``lettre-de-liaison``."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").lower()
    return _NOT_WORD.sub("-", folded).strip("-")[:_MAX_SLUG].rstrip("-")


def _document_stem(document: Document) -> str:
    package_name = PurePosixPath(_bare(document.filename)).stem or "document"
    kind = slug(document.type_code.label or document.title)
    return f"{package_name}-{kind}" if kind else package_name


def _suffix(filename: str) -> str:
    suffix = PurePosixPath(_bare(filename)).suffix.lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,8}", suffix) else ".bin"


def _bare(filename: str) -> str:
    """The last path element, without leading dots (a hidden or temporary-looking name)."""
    return PurePosixPath(filename.replace("\\", "/")).name.lstrip(".")


def _add(files: dict[str, bytes], name: str, content: bytes) -> None:
    stem, suffix = os.path.splitext(name)
    if stem.endswith(".cda"):
        stem, suffix = stem.removesuffix(".cda"), ".cda" + suffix
    candidate, number = name, 1
    while candidate in files:
        number += 1
        candidate = f"{stem}-{number}{suffix}"
    files[candidate] = content
