"""The values the CI-SIS makes mandatory in a CDA R2 N1 header (no nullFlavor), for every test that has the
gateway wrap a PDF: as ``wrap_pdf`` keywords, as ``mssgw send``/``xdm build`` options and as the
``[documents]`` settings. The ANS test professional KIT DOC0036790 of the sample METADATA.XML."""

from __future__ import annotations

from typing import Final

from mappers import xds
from mappers.documents import Author, Code

AUTHOR: Final = Author(
    rpps="899700367909",
    family_name="DOC0036790",
    given_name="KIT",
    institution_name="BCOM",
    institution_id="499700367909006",
)
FACILITY_TYPE: Final = Code("SA01", "Etablissement public de santé", xds.FACILITY_TYPE_OID)
PRACTICE_SETTING: Final = Code("ETABLISSEMENT", "Etablissement de santé", xds.PRACTICE_SETTING_OID)
WRAPPER: Final = {
    "author": AUTHOR,
    "healthcare_facility_type": FACILITY_TYPE,
    "practice_setting": PRACTICE_SETTING,
}
"""``cda.wrap_pdf`` / ``cda.pdf_document`` keywords."""
OPTIONS: Final = (
    "--author-rpps", "99700367909", "--author-family", "DOC0036790", "--author-given", "KIT",
    "--institution-id", "499700367909006", "--institution-name", "BCOM",
    "--facility-type", "SA01^Etablissement public de santé",
    "--practice-setting", "ETABLISSEMENT^Etablissement de santé",
)  # fmt: skip
"""The same as command-line options (the RPPS typed bare: the wrapper writes it 8 + RPPS)."""
SETTINGS: Final = {
    "author_rpps": "99700367909",
    "author_family": "DOC0036790",
    "author_given": "KIT",
    "institution_id": "499700367909006",
    "institution_name": "BCOM",
    "facility_type": "SA01^Etablissement public de santé",
    "practice_setting": "ETABLISSEMENT^Etablissement de santé",
}
"""The same as the ``[documents]`` section."""
