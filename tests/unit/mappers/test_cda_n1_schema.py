"""The CDA N1 wrapper against mssgw's own XML Schema (mappers/schemas/cda_n1.xsd, ``cda.N1_SCHEMA``).

Every wrapper any in-process test builds is validated by ``tests/conftest.py``; here: the schema ships with
the package, wrappers built from generated option sets keep to it, and broken variants of a valid wrapper
(a part missing, parts out of order, malformed values) are refused by it, so the validation proves something.
"""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from mappers import cda, xds
from mappers.documents import Author, Code
from mappers.patient import Sex
from tests.support.cda_header import AUTHOR, FACILITY_TYPE, PRACTICE_SETTING, WRAPPER
from tests.support.cda_schema import PARSER, assert_valid_n1, n1_errors

from .samples import CR_IMAGERIE, NOW, PDF, author, patient

N = {"h": cda.HL7_NS}
SCANNER = Code("ACQH004", "Scanographie", "1.2.250.1.213.2.5")


def wrapper(**changes: object) -> bytes:
    values: dict[str, object] = {
        "title": "CR d'imagerie",
        "type_code": CR_IMAGERIE,
        "effective_time": NOW,
        "document_id": "1.2.250.1.213.1.1.1.45.2^7",
        **WRAPPER,
        "event_codes": (SCANNER,),
        "service_stop": NOW + timedelta(hours=1),
        "replaces": "1.2.250.1.213.1.1.1.45.2^6",
    }
    values.update(changes)
    return cda.wrap_pdf(PDF, patient(), **values)  # type: ignore[arg-type]


def test_the_schema_ships_in_the_package_and_is_a_valid_xml_schema() -> None:
    assert cda.N1_SCHEMA.is_file() and cda.N1_SCHEMA.name == "cda_n1.xsd"
    assert n1_errors(wrapper()) == []


def test_the_ans_sample_values_and_a_minimal_wrapper_keep_to_the_schema() -> None:
    assert_valid_n1(wrapper())
    minimal = dataclasses.replace(AUTHOR, given_name=None, institution_name=None)
    assert_valid_n1(wrapper(author=minimal, event_codes=(), service_stop=None, replaces=None))


_WORD = st.text(string.ascii_letters + "ÀÉÈÊÏÔÇàéèêïôç-' ", min_size=1, max_size=20).filter(str.strip)
_CODE = st.text(string.ascii_uppercase + string.digits + "_/.-", min_size=1, max_size=12)
_OID = st.sampled_from(["1.2.250.1.213.2.5", "1.2.250.1.71.1.2.7", "2.16.840.1.113883.6.1", "1.2.3.4.5"])
_CODES = st.builds(Code, _CODE, _WORD, _OID)
_ZONE = st.integers(-12 * 60, 14 * 60).map(lambda minutes: timezone(timedelta(minutes=minutes)))
_MOMENT = st.builds(
    lambda when, zone: when.replace(tzinfo=zone),
    st.datetimes(datetime(1990, 1, 1), datetime(2090, 1, 1)),
    _ZONE,
)
_RPPS = st.text(string.digits, min_size=11, max_size=11)
_AUTHORS = st.builds(
    Author,
    rpps=_RPPS,
    family_name=_WORD,
    given_name=st.none() | _WORD,
    institution_name=st.none() | _WORD,
    institution_id=st.text(string.digits, min_size=9, max_size=15),
    specialty=st.none() | _CODES,
    role=st.none() | _CODES,
)
_SIGNERS = st.none() | st.builds(Author, rpps=_RPPS, family_name=_WORD, given_name=st.none() | _WORD)
_PATIENTS = st.builds(
    patient,
    given_name=_WORD,
    used_name=st.none() | _WORD,
    other_given_names=st.none() | _WORD,
    birth_place_code=st.none() | st.sampled_from(["63220", "2A004", "99100"]),
    local_id=st.none() | st.text(string.digits, min_size=1, max_size=13),
    sex=st.sampled_from(Sex),
)


@settings(max_examples=60, deadline=None)
@given(
    the_patient=_PATIENTS,
    the_author=_AUTHORS,
    signer=_SIGNERS,
    title=_WORD,
    effective=_MOMENT,
    span=st.none()
    | st.tuples(
        st.timedeltas(timedelta(0), timedelta(days=3)),
        st.none() | st.timedeltas(timedelta(0), timedelta(days=3)),
    ),
    events=st.lists(_CODES, max_size=3).map(tuple),
    version=st.integers(1, 99),
    replaces=st.none() | st.just("1.2.3^1"),
    language=st.sampled_from(["fr-FR", "fr", "en-GB"]),
)
def test_wrappers_from_generated_option_sets_keep_to_the_schema(
    the_patient: object, the_author: Author, signer: Author | None, title: str, effective: datetime,
    span: tuple[timedelta, timedelta | None] | None, events: tuple[Code, ...], version: int,
    replaces: str | None, language: str,
) -> None:  # fmt: skip
    start = stop = None
    if span is not None:
        start = effective - span[0]
        stop = None if span[1] is None else start + span[1]
    data = cda.wrap_pdf(
        PDF, the_patient, title=title, type_code=CR_IMAGERIE, effective_time=effective,  # type: ignore[arg-type]
        document_id=cda.document_id(title.encode()), author=the_author, legal_authenticator=signer,
        set_id="1.2.3", version=version, replaces=replaces, service_start=start, service_stop=stop,
        language=language, event_codes=events,
        healthcare_facility_type=FACILITY_TYPE, practice_setting=PRACTICE_SETTING,
    )  # fmt: skip
    assert_valid_n1(data)


Change = Callable[[etree._Element], None]


def _one(doc: etree._Element, path: str) -> etree._Element:
    found: list[etree._Element] = doc.xpath(path, namespaces=N)
    assert len(found) == 1, path
    return found[0]


def _remove(path: str) -> Change:
    def change(doc: etree._Element) -> None:
        element = _one(doc, path)
        element.getparent().remove(element)

    return change


def _set(path: str, attribute: str, value: str) -> Change:
    return lambda doc: _one(doc, path).set(attribute, value)


def _drop(path: str, attribute: str) -> Change:
    return lambda doc: _one(doc, path).attrib.pop(attribute)


def _text(path: str, value: str) -> Change:
    def change(doc: etree._Element) -> None:
        _one(doc, path).text = value

    return change


def _swap(first: str, second: str) -> Change:
    """Moves ``first`` just before ``second``."""

    def change(doc: etree._Element) -> None:
        _one(doc, second).addprevious(_one(doc, first))

    return change


def _null_flavor(path: str) -> Change:
    def change(doc: etree._Element) -> None:
        element = _one(doc, path)
        element.attrib.clear()
        element.set("nullFlavor", "UNK")

    return change


def _rename(path: str, tag: str) -> Change:
    def change(doc: etree._Element) -> None:
        _one(doc, path).tag = f"{{{cda.HL7_NS}}}{tag}"

    return change


BROKEN: dict[str, Change] = {
    "missing id": _remove("h:id"),
    "missing code": _remove("h:code"),
    "missing legalAuthenticator": _remove("h:legalAuthenticator"),
    "missing documentationOf": _remove("h:documentationOf"),
    "missing componentOf": _remove("h:componentOf"),
    "missing recordTarget": _remove("h:recordTarget"),
    "missing custodian id": _remove("h:custodian//h:representedCustodianOrganization/h:id"),
    "missing author time": _remove("h:author/h:time"),
    "missing encounter facility code": _remove("h:componentOf//h:healthCareFacility/h:code"),
    "missing family name": _remove("h:author/h:assignedAuthor/h:assignedPerson/h:name/h:family"),
    "title before code": _swap("h:title", "h:code"),
    "custodian before author": _swap("h:custodian", "h:author"),
    "componentOf before documentationOf": _swap("h:componentOf", "h:documentationOf"),
    "family before given": _swap("h:author//h:name/h:family", "h:author//h:name/h:given"),
    "effectiveTime with dashes": _set("h:effectiveTime", "value", "2024-01-16T15:11:12Z"),
    "effectiveTime in month 13": _set("h:effectiveTime", "value", "20241316151112+0000"),
    "effectiveTime without offset": _set("h:effectiveTime", "value", "20240116151112"),
    "effectiveTime to the day only": _set("h:effectiveTime", "value", "20240116"),
    "service low at hour 24": _set("h:documentationOf//h:low", "value", "20240116240000+0000"),
    "birth time with a time": _set("h:recordTarget//h:birthTime", "value", "19790328101010+0000"),
    "id root not an OID": _set("h:id", "root", "1.02.3"),
    "id without root": _drop("h:id", "root"),
    "author id without extension": _drop("h:author/h:assignedAuthor/h:id", "extension"),
    "author id as nullFlavor": _null_flavor("h:author/h:assignedAuthor/h:id"),
    "code without codeSystem": _drop("h:code", "codeSystem"),
    "code with a space": _set("h:code", "code", "18748 4"),
    "realmCode not FR": _set("h:realmCode", "code", "US"),
    "typeId of another model": _set("h:typeId", "extension", "POCD_HD000041"),
    "two template ids": _remove("h:templateId[3]"),
    "version 0": _set("h:versionNumber", "value", "0"),
    "language not a tag": _set("h:languageCode", "code", "français"),
    "gender outside HL7": _set("h:recordTarget//h:administrativeGenderCode", "code", "X"),
    "blank title": _text("h:title", "  "),
    "body not base64": _text("h:component/h:nonXMLBody/h:text", "not base64 !"),
    "body not a PDF": _set("h:component/h:nonXMLBody/h:text", "mediaType", "text/plain"),
    "structured body": _rename("h:component/h:nonXMLBody", "structuredBody"),
    "performer of another kind": _set("h:documentationOf//h:performer", "typeCode", "XXX"),
    "related document of another kind": _set("h:relatedDocument", "typeCode", "SUCC"),
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_the_schema_refuses_a_broken_wrapper(name: str) -> None:
    doc = etree.fromstring(wrapper(), PARSER)
    BROKEN[name](doc)
    errors = n1_errors(etree.tostring(doc))
    assert errors, f"{name}: accepted"


def test_a_refusal_names_the_line_and_the_element() -> None:
    doc = etree.fromstring(wrapper(), PARSER)
    _remove("h:id")(doc)
    (error,) = n1_errors(etree.tostring(doc))
    assert error.startswith("line ") and "code" in error and "Expected is ( {urn:hl7-org:v3}id )" in error


def test_the_n1_rules_sample_is_valid_with_any_offset_it_is_given() -> None:
    """Times are written in UTC whatever the zone they were given in."""
    paris = datetime(2024, 7, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    assert_valid_n1(wrapper(effective_time=paris, service_stop=None, author=author()))
    assert b'<effectiveTime value="20240701100000+0000"' in wrapper(effective_time=paris, service_stop=None)


def test_a_blank_title_is_refused_by_the_wrapper() -> None:
    with pytest.raises(cda.CdaError, match="no title"):
        wrapper(title=" ")


def test_a_blank_mandatory_name_is_refused_by_the_wrapper_as_missing() -> None:
    """What the schema would refuse (a family name of spaces) the wrapper refuses first, naming it."""
    with pytest.raises(cda.IncompleteHeaderError) as raised:
        wrapper(author=dataclasses.replace(AUTHOR, family_name="  "))
    assert raised.value.missing == (cda.HeaderValue.AUTHOR_FAMILY,)


@pytest.mark.parametrize(
    ("typed", "scheme"),
    [("SA 01^Etablissement public de santé", "1.2.250.1.71.4.2.4"), ("10^Médecin^1.2.250 .1", None)],
)
def test_a_typed_code_with_white_space_is_refused_before_it_reaches_a_wrapper(
    typed: str, scheme: str | None
) -> None:
    """The schema refuses a code or code system with a space; the option or setting typing one is refused
    first, naming where it was typed."""
    with pytest.raises(xds.MetadataValueError, match="--facility-type: .* cannot hold white space"):
        xds.parse_code_option(typed, "--facility-type", scheme)
    assert xds.parse_code_option(" SA01 ^ Etablissement public ", "k", "1.2") == Code(
        "SA01", "Etablissement public", "1.2"
    )
