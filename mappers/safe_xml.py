"""Parsing of untrusted XML (METADATA.XML, CDA headers) through defusedxml, with typed refusals.

Entity declarations (billion laughs), external entities and external DTDs are refused before any expansion;
syntax errors become ``XmlSyntaxError`` with the line. Never parse XML from the wire with anything else.

Public API (stable):
    parse_xml(data: bytes, *, what: str) -> xml.etree.ElementTree.Element
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import defusedxml
import defusedxml.ElementTree as DefusedET

from mappers.errors import MappingError

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element


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
