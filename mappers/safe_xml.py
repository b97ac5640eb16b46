"""Parsing of untrusted XML (METADATA.XML, CDA headers) through defusedxml, with typed refusals.

Entity declarations (billion laughs), external entities and external DTDs are refused before any expansion;
syntax errors become ``XmlSyntaxError`` with the line. Never parse XML from the wire with anything else.

Public API (stable):
    parse_xml(data: bytes, *, what: str) -> xml.etree.ElementTree.Element
    root_tag(data: bytes) -> str | None     # the root element's {namespace}name, read from the start only
    sanitize_tree(root: Element) -> None    # before serialising values that came from the store
"""

from __future__ import annotations

import io
import re
from typing import TYPE_CHECKING, Final

import defusedxml
import defusedxml.ElementTree as DefusedET

from mappers.errors import MappingError

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element


# Characters XML 1.0 §2.2 does not allow (C0 controls except tab/LF/CR, surrogates, U+FFFE/U+FFFF).
_NOT_XML: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


class XmlError(MappingError):
    """XML that cannot be used."""


class UnsafeXmlError(XmlError):
    """XML that tries an entity or DTD trick; refused before expansion."""


class XmlSyntaxError(XmlError):
    """XML that is not well-formed."""


def parse_xml(data: bytes, *, what: str) -> Element:
    """Root element of untrusted XML; ``what`` names the file in error messages (e.g. ``METADATA.XML``)."""
    try:
        root: Element = DefusedET.fromstring(data, forbid_dtd=False, forbid_entities=True)
    except defusedxml.EntitiesForbidden as error:
        if error.sysid or error.pubid:
            raise UnsafeXmlError(
                f"{what} declares the external entity {error.name!r} "
                f"({error.sysid or error.pubid}): external entities are refused"
            ) from error
        raise UnsafeXmlError(
            f"{what} declares the entity {error.name!r}: entity declarations are refused "
            f"(entity expansion / billion laughs attack)"
        ) from error
    except defusedxml.ExternalReferenceForbidden as error:
        raise UnsafeXmlError(
            f"{what} refers to an external resource ({error.sysid or error.pubid}): refused"
        ) from error
    except defusedxml.DTDForbidden as error:
        raise UnsafeXmlError(f"{what} declares a DTD: refused") from error
    except defusedxml.DefusedXmlException as error:
        raise UnsafeXmlError(f"{what} uses a forbidden XML construct: {error}") from error
    except DefusedET.ParseError as error:
        raise XmlSyntaxError(f"{what} is not well-formed XML: {error}") from error
    return root


def root_tag(data: bytes) -> str | None:
    """The root element's ``{namespace}name``, or ``None`` for data that is not (safe) XML.

    Reads only up to the root's start tag, so telling a CDA from an XML signature costs nothing even for
    a CDA with a large embedded PDF. It decides nothing else: parse with :func:`parse_xml` to use the XML.
    """
    try:
        events = DefusedET.iterparse(io.BytesIO(data), events=("start",), forbid_entities=True)
        for _, element in events:
            tag: str = element.tag
            return tag
    except (DefusedET.ParseError, defusedxml.DefusedXmlException):
        return None
    return None


def sanitize_tree(root: Element) -> None:
    """Replace characters XML cannot carry by U+FFFD, in every text and attribute of a built tree.

    Values come from the hospital's store (titles, names); a stray control character must neither produce
    a document no receiver can parse nor block the message.
    """
    for element in root.iter():
        if element.text:
            element.text = _NOT_XML.sub("\ufffd", element.text)
        if element.tail:
            element.tail = _NOT_XML.sub("\ufffd", element.tail)
        for name, value in element.attrib.items():
            element.set(name, _NOT_XML.sub("\ufffd", value))
