"""The CI-SIS header rules for a CDA R2 N1, each a named test, checked with XPath (lxml) on the wrapper
the gateway builds around a PDF.

HL7's CDA R2 schema (CDA.xsd, POCD_MT000040) is HL7 normative material under HL7's licence and is not
shipped; the ANS schematrons are not shipped either. The structure is checked against mssgw's own schema
(mappers/schemas/cda_n1.xsd, tests/unit/mappers/test_cda_n1_schema.py); the rules below are those an XSD 1.0
cannot state (the main serviceEvent, qualifiers, OIDs by role), rewritten from the ANS pages
(IG-document-core "entête CDA" cardinalities, the CI-SIS "structuration minimale" header checks), plus the
CDA R2 element order the schema imposes on the parts the wrapper writes.
"""

from __future__ import annotations

import dataclasses

import pytest
from lxml import etree

from mappers import cda, xds
from mappers.documents import Code
from tests.support.cda_schema import PARSER, assert_valid_n1

from .samples import CR_IMAGERIE, NOW, PDF, author, patient

N = {"h": "urn:hl7-org:v3"}
FACILITY = Code("SA01", "Etablissement public de santé", xds.FACILITY_TYPE_OID)
SETTING = Code("ETABLISSEMENT", "Etablissement de santé", xds.PRACTICE_SETTING_OID)


@pytest.fixture(scope="module")
def doc() -> etree._Element:
    data = cda.wrap_pdf(
        PDF, patient(), title="CR d'imagerie", type_code=CR_IMAGERIE, effective_time=NOW,
        document_id="1.2.250.1.213.1.1.1.45.2^7", author=dataclasses.replace(author(), rpps="99700367909"),
        healthcare_facility_type=FACILITY, practice_setting=SETTING,
    )  # fmt: skip
    assert_valid_n1(data)  # a module fixture is built before conftest's per-test check
    return etree.fromstring(data, PARSER)


def count(doc: etree._Element, path: str) -> int:
    return int(doc.xpath(f"count({path})", namespaces=N))


def test_realm_code_once_and_fr(doc: etree._Element) -> None:
    assert count(doc, "h:realmCode") == 1 and count(doc, "h:realmCode[@code='FR']") == 1


def test_type_id_is_the_cda_r2_one(doc: etree._Element) -> None:
    assert count(doc, "h:typeId[@root='2.16.840.1.113883.1.3' and @extension='POCD_HD000040']") == 1


def test_at_least_three_template_ids_with_hl7_france_and_ci_sis(doc: etree._Element) -> None:
    assert count(doc, "h:templateId") >= 3
    assert count(doc, "h:templateId[@root='2.16.840.1.113883.2.8.2.1']") == 1
    assert count(doc, "h:templateId[@root='1.2.250.1.213.1.1.1.1']") == 1


def test_id_has_a_root(doc: etree._Element) -> None:
    assert count(doc, "h:id[@root]") == 1


def test_code_has_code_system_and_display_name(doc: etree._Element) -> None:
    assert count(doc, "h:code[@code and @codeSystem and @displayName]") == 1


def test_title_and_effective_time_value(doc: etree._Element) -> None:
    assert count(doc, "h:title") == 1 and count(doc, "h:effectiveTime[@value]") == 1


def test_confidentiality_language_and_version(doc: etree._Element) -> None:
    assert count(doc, "h:confidentialityCode[@codeSystem='2.16.840.1.113883.5.25' and @code='N']") == 1
    assert count(doc, "h:languageCode[@code='fr-FR']") == 1
    assert count(doc, "h:versionNumber[@value]") == 1


def test_record_target_once(doc: etree._Element) -> None:
    assert count(doc, "h:recordTarget") == 1


def test_no_null_flavor_anywhere_in_the_header(doc: etree._Element) -> None:
    assert count(doc, "//*[@nullFlavor]") == 0


def test_author_time_and_assigned_author_id_with_root_and_extension(doc: etree._Element) -> None:
    assert count(doc, "h:author/h:time[@value]") == 1
    assert count(doc, "h:author/h:assignedAuthor/h:id") == 1
    assert count(doc, "h:author/h:assignedAuthor/h:id[@root and @extension]") == 1


def test_author_rpps_is_the_national_id_8_plus_rpps(doc: etree._Element) -> None:
    ident = doc.xpath("h:author/h:assignedAuthor/h:id", namespaces=N)[0]
    assert (ident.get("root"), ident.get("extension")) == ("1.2.250.1.71.4.2.1", "899700367909")


def test_assigned_person_has_one_name_with_one_family(doc: etree._Element) -> None:
    for path in ("h:author/h:assignedAuthor", "h:legalAuthenticator/h:assignedEntity"):
        assert count(doc, f"{path}/h:assignedPerson/h:name") == 1
        assert count(doc, f"{path}/h:assignedPerson/h:name/h:family[normalize-space()]") == 1
        assert count(doc, f"{path}/h:assignedPerson/h:name/h:given") <= 1


def test_represented_organization_id_is_under_the_structure_oid(doc: etree._Element) -> None:
    ids = doc.xpath("//h:representedOrganization/h:id", namespaces=N)
    assert ids and all(i.get("root") == "1.2.250.1.71.4.2.2" for i in ids)


def test_custodian_organization_has_an_id(doc: etree._Element) -> None:
    path = "h:custodian/h:assignedCustodian/h:representedCustodianOrganization/h:id[@root and @extension]"
    assert count(doc, path) == 1


def test_legal_authenticator_once_signed_with_an_identified_entity(doc: etree._Element) -> None:
    assert count(doc, "h:legalAuthenticator") == 1
    assert count(doc, "h:legalAuthenticator/h:time[@value]") == 1
    assert count(doc, "h:legalAuthenticator/h:signatureCode[@code='S']") == 1
    assert count(doc, "h:legalAuthenticator/h:assignedEntity/h:id[@root and @extension]") == 1


def test_documentation_of_present_and_main_event_has_time_and_performer(doc: etree._Element) -> None:
    assert count(doc, "h:documentationOf") >= 1
    main = "h:documentationOf[1]/h:serviceEvent"
    assert count(doc, f"{main}/h:effectiveTime/h:low[@value]") == 1
    assert count(doc, f"{main}/h:performer/h:assignedEntity/h:id[@root and @extension]") == 1


def test_practice_setting_on_the_performer_organization(doc: etree._Element) -> None:
    path = (
        "h:documentationOf/h:serviceEvent/h:performer/h:assignedEntity/h:representedOrganization/"
        "h:standardIndustryClassCode[@code='ETABLISSEMENT' and @codeSystem='1.2.250.1.213.1.1.4.9']"
    )
    assert count(doc, path) == 1


def test_component_of_with_effective_time_and_facility_code(doc: etree._Element) -> None:
    encounter = "h:componentOf/h:encompassingEncounter"
    assert count(doc, "h:componentOf") == 1
    assert count(doc, f"{encounter}/h:effectiveTime/h:low[@value]") == 1
    assert count(doc, f"{encounter}/h:location/h:healthCareFacility/h:code[@code='SA01']") == 1


def test_related_document_at_most_once(doc: etree._Element) -> None:
    assert count(doc, "h:relatedDocument") <= 1


def test_header_elements_in_cda_r2_schema_order(doc: etree._Element) -> None:
    """POCD_MT000040.ClinicalDocument is an xs:sequence: the order below is the schema's."""
    order = [
        "realmCode", "typeId", "templateId", "id", "code", "title", "effectiveTime", "confidentialityCode",
        "languageCode", "setId", "versionNumber", "recordTarget", "author", "custodian",
        "legalAuthenticator", "documentationOf", "componentOf", "component",
    ]  # fmt: skip
    tags = [etree.QName(e).localname for e in doc]
    assert sorted(tags, key=order.index) == tags and set(tags) <= set(order)


def test_service_event_and_assigned_entity_children_in_schema_order(doc: etree._Element) -> None:
    event = doc.xpath("h:documentationOf[1]/h:serviceEvent", namespaces=N)[0]
    assert [etree.QName(e).localname for e in event] == ["effectiveTime", "performer"]
    entity = event.xpath("h:performer/h:assignedEntity", namespaces=N)[0]
    assert [etree.QName(e).localname for e in entity] == ["id", "assignedPerson", "representedOrganization"]
    organization = entity.xpath("h:representedOrganization", namespaces=N)[0]
    assert [etree.QName(e).localname for e in organization] == ["id", "name", "standardIndustryClassCode"]
