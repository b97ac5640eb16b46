"""Small value-set files in the IHE SVS XML form the ANS NOS publishes its JDV in, written for the tests
(a handful of codes each, invented value-set OIDs, no ANS file copied): enough to check membership, not a
reference."""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import quoteattr

from mappers.value_sets import SVS_NS


def svs(name: str, oid: str, concepts: list[tuple[str, str, str]]) -> bytes:
    """A ``RetrieveValueSetResponse`` holding one value set of ``(code, displayName, codeSystem)``."""
    lines = "".join(
        f"      <Concept code={quoteattr(code)} displayName={quoteattr(label)}"
        f" codeSystem={quoteattr(system)}/>\n"
        for code, label, system in concepts
    )
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<RetrieveValueSetResponse xmlns="{SVS_NS}">\n'
        f'  <ValueSet id={quoteattr(oid)} displayName={quoteattr(name)} version="test">\n'
        f'    <ConceptList xml:lang="fr-FR">\n{lines}    </ConceptList>\n  </ValueSet>\n'
        "</RetrieveValueSetResponse>\n"
    ).encode()


SPECIALTIES = ("JDV_J01-test", "1.2.3.4.1", [
    ("G15_10/SM44", "Médecin - Radio-diagnostic (SM)", "1.2.250.1.213.1.1.4.5"),
    ("G15_10/SM26", "Médecin - Qualifié en médecine générale (SM)", "1.2.250.1.213.1.1.4.5"),
    ("10", "Médecin", "1.2.250.1.71.1.2.7"),
])  # fmt: skip
ROLES = ("JDV_J47-test", "1.2.3.4.47", [
    ("10", "Médecin", "1.2.250.1.71.1.2.7"),
    ("60", "Infirmier", "1.2.250.1.71.1.2.7"),
])  # fmt: skip
FACILITY_TYPES = ("JDV_J02-test", "1.2.3.4.2", [
    ("SA01", "Etablissement public de santé", "1.2.250.1.71.4.2.4"),
    ("SA25", "Centre de santé", "1.2.250.1.71.4.2.4"),
])  # fmt: skip
PRACTICE_SETTINGS = ("JDV_J04-test", "1.2.3.4.4", [
    ("ETABLISSEMENT", "Etablissement de santé", "1.2.250.1.213.1.1.4.9"),
    ("AMBULATOIRE", "Ambulatoire", "1.2.250.1.213.1.1.4.9"),
])  # fmt: skip


def write_value_sets(folder: Path) -> dict[str, str]:
    """The four test value sets as files in ``folder``, as the ``[documents.value_sets]`` table."""
    folder.mkdir(parents=True, exist_ok=True)
    table = {}
    for key, (name, oid, concepts) in {
        "author_specialty": SPECIALTIES,
        "author_role": ROLES,
        "facility_type": FACILITY_TYPES,
        "practice_setting": PRACTICE_SETTINGS,
    }.items():
        path = folder / f"{name}.xml"
        path.write_bytes(svs(name, oid, concepts))
        table[key] = str(path)
    return table
