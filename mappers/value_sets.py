"""Value sets (ANS NOS "jeux de valeurs", JDV) in the IHE SVS XML form, and membership of a code in one.

The CI-SIS binds each coded header value to a JDV (author profession/specialty JDV_J01, functional role
JDV_J47, facility type, practice setting ...). The JDV files are ANS publications: mssgw ships none; a site
downloads the ones it wants checked from the NOS (the XML form, an IHE SVS ``RetrieveValueSetResponse``) and
names them in ``[documents.value_sets]``. Pure: bytes in, a value set out; the settings read the files.

Public API (stable):
    SVS_NS: str
    ValueSet(name, oid, concepts)   .problem(code: Code, what: str) -> str | None
    ValueSetError
    parse_value_set(data: bytes, *, what: str) -> ValueSet      # raises ValueSetError
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from mappers.documents import Code
from mappers.errors import MappingError
from mappers.safe_xml import XmlError, parse_xml

SVS_NS: Final = "urn:ihe:iti:svs:2008"
_VALUE_SETS: Final = (f"{{{SVS_NS}}}ValueSet", f"{{{SVS_NS}}}DescribedValueSet")
_CONCEPT: Final = f"{{{SVS_NS}}}Concept"


class ValueSetError(MappingError):
    """A value-set file that cannot be used (not SVS XML, several value sets, no concept)."""


@dataclass(frozen=True, slots=True)
class ValueSet:
    """One value set: its name (``displayName``, e.g. ``JDV_J01-XdsAuthorSpecialty-CISIS``), its OID and
    its concepts as ``(code, codeSystem)`` pairs: a code is a member only under its own code system."""

    name: str
    oid: str | None
    concepts: frozenset[tuple[str, str]]

    def problem(self, code: Code, what: str) -> str | None:
        """``None`` when ``code`` is a member, else a sentence that starts with ``what`` (the setting's key)
        and says which value set refused it, and under which code system the code is known if another."""
        if (code.code, code.scheme) in self.concepts:
            return None
        named = f"{self.name} ({self.oid})" if self.oid else self.name
        elsewhere = sorted(system for value, system in self.concepts if value == code.code)
        if elsewhere:
            return (
                f"{what}: {code.code!r} is in the value set {named} under the code system "
                f"{', '.join(elsewhere)}, not {code.scheme}"
            )
        return f"{what}: {code.code!r} (code system {code.scheme}) is not in the value set {named}"


def parse_value_set(data: bytes, *, what: str) -> ValueSet:
    """The value set of an SVS XML file (``RetrieveValueSetResponse/ValueSet/ConceptList/Concept``, or a
    ``DescribedValueSet``); ``what`` names the file in refusals. A file holding several value sets, or none
    with a concept, is refused rather than read as "every code is wrong"."""
    try:
        root = parse_xml(data, what=what)
    except XmlError as error:
        raise ValueSetError(str(error)) from error
    found = [element for element in root.iter() if element.tag in _VALUE_SETS]
    if len(found) != 1:
        raise ValueSetError(
            f"{what} is not one IHE SVS value set (a {{{SVS_NS}}}ValueSet element; found {len(found)}): "
            "download the JDV from the NOS in its XML (SVS) form"
        )
    (value_set,) = found
    concepts = frozenset(
        (concept.get("code", "").strip(), concept.get("codeSystem", "").strip())
        for concept in value_set.iter(_CONCEPT)
        if concept.get("code", "").strip()
    )
    name = value_set.get("displayName") or value_set.get("id") or what
    if not concepts:
        raise ValueSetError(f"{what}: the value set {name} holds no concept")
    return ValueSet(name=name, oid=value_set.get("id") or None, concepts=concepts)
