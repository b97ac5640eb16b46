"""The PDF copy of a health document that ECO.2.1.1 puts next to the IHE_XDM.zip in the mail.

Used by ``mappers.mime`` in both directions: to attach the copies when building, and to recognise them
(byte for byte) when parsing so they are not stored twice. A CDA R2 level 1 carries its PDF in
``nonXMLBody/text``; a structured (level 3) CDA has none, and nothing here renders one. XML only
through ``mappers.safe_xml``; no I/O.
"""

from __future__ import annotations

import base64
import binascii

from mappers.cda import HL7_NS
from mappers.documents import Document
from mappers.errors import MappingError
from mappers.headers import is_cda
from mappers.safe_xml import parse_xml

PDF_MIME_TYPE = "application/pdf"
_N = {"h": HL7_NS}


def embedded_pdf(cda_document: bytes, *, what: str = "CDA document") -> bytes | None:
    """The PDF inside a CDA R2 level 1 body, or ``None`` when the body is structured or not a PDF."""
    root = parse_xml(cda_document, what=what)
    text = root.find("h:component/h:nonXMLBody/h:text", _N)
    if text is None or (text.get("mediaType") or "").lower() != PDF_MIME_TYPE:
        return None
    if (text.get("representation") or "B64").upper() != "B64":
        return None
    try:
        pdf = base64.b64decode("".join((text.text or "").split()), validate=True)
    except (binascii.Error, ValueError):
        return None
    return pdf if pdf.startswith(b"%PDF-") else None


def pdf_copy(document: Document) -> bytes | None:
    """The PDF to attach for ``document``: itself when it is a PDF, the embedded one for a CDA N1."""
    if document.mime_type.lower() == PDF_MIME_TYPE:
        return document.content
    if not is_cda(document):
        return None
    try:
        return embedded_pdf(document.content, what=document.filename or document.title)
    except MappingError:
        # An unreadable CDA has no copy to offer; whether that is acceptable is the caller's rule.
        return None
