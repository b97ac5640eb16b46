"""Wire forms of headers and bodies: whatever the value, a standard reader decodes the same value."""

from __future__ import annotations

from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesParser, HeaderParser

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mappers import wire
from mappers.addresses import canonical_display_name
from mappers.folding import READ_POLICY, set_header
from mappers.headers import HeaderInjectionError

_FRAGMENT = st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")) | st.sampled_from(
    ["\t", " ", "  ", "=?", "?=", "=?utf-8?q?x?=", '"', "\\", ",", "é", "_", "="]
)
_TEXT = st.lists(_FRAGMENT, max_size=80).map("".join)


def _read(header: wire.WireHeader) -> EmailMessage:
    folded = header.fold(policy=READ_POLICY)
    assert all(len(line) <= wire.HARD_LINE for line in folded.splitlines())
    return HeaderParser(policy=READ_POLICY).parsestr(folded + "\n")


@settings(max_examples=400)
@given(_TEXT)
@example("Résultats d'examens — très long sujet " * 3)
@example("=?utf-8?q?pas_un_mot_encod=C3=A9?= vraiment")
@example("a\tb  c")
@example("https://exemple.fr/" + "x" * 1200 + " fin")
def test_text_header_reads_back(value: str) -> None:
    header = wire.text_header("Subject", value)

    assert str(_read(header)["Subject"]) == value.strip()
    assert str(header) == value.strip()


_NAME = _TEXT.map(canonical_display_name)


@settings(max_examples=400)
@given(st.lists(_NAME, min_size=1, max_size=4))
@example(["Dr_Marie_MARTIN_Cabinet Médical du centre hospitalier régional universitaire de Lyon Sud"])
@example(["é " * 40])
@example(['Quote " and \\ back é', "Ünïcödé, with comma"])
def test_address_header_reads_back(names: list[str]) -> None:
    addresses = [Address(name, f"user{n}", "exemple.mssante.fr") for n, name in enumerate(names)]
    header = wire.address_header("To", addresses)

    parsed = _read(header)["To"].addresses
    assert [(a.display_name, a.addr_spec) for a in parsed] == [
        (a.display_name, a.addr_spec) for a in addresses
    ]
    assert header.addresses == parsed


@settings(max_examples=300)
@given(_TEXT.map(str.strip).filter(lambda name: name and name[0] + name[-1] not in ('""', "<>")))
@example("20150802_CR d'examens biologiques_VIAL_Paul_12150302014578.pdf")
@example("é" * 300 + ".pdf")
def test_parameter_reads_back(filename: str) -> None:
    header = wire.parameter_header("Content-Disposition", "attachment", [("filename", filename)])

    message = HeaderParser(policy=READ_POLICY).parsestr(header.fold(policy=READ_POLICY) + "\n")
    assert message.get_filename() == filename


@settings(max_examples=300)
@given(st.text(st.characters(blacklist_categories=("Cs",)), max_size=500))
def test_text_body_reads_back(text: str) -> None:
    encoding, payload = wire.text_body(text)
    raw = (
        f'Content-Type: text/plain; charset="utf-8"\nContent-Transfer-Encoding: {encoding}\n\n{payload}'
    ).encode("ascii")

    content = BytesParser(policy=READ_POLICY).parsebytes(raw).get_content()
    expected = text.replace("\r\n", "\n").replace("\r", "\n")
    assert content == (expected if expected.endswith("\n") else expected + "\n")


@settings(max_examples=500)
@given(st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"a", b".", b"\r\r\n", b"\n\r"]), max_size=40))
@example([b"a\r\nb\r\n"])
def test_crlf_makes_every_line_end_crlf_and_keeps_crlf_mail_as_it_is(pieces: list[bytes]) -> None:
    data = b"".join(pieces)
    made = wire.crlf(data)
    assert made.count(b"\n") == made.count(b"\r\n") == made.count(b"\r")
    assert made.replace(b"\r\n", b"\n").replace(b"\r", b"\n") == data.replace(b"\r\n", b"\n").replace(
        b"\r", b"\n"
    )
    if b"\r" not in data.replace(b"\r\n", b"") and b"\n" not in data.replace(b"\r\n", b""):
        assert made is data


def test_date_and_ids_keep_the_attributes_of_the_email_package() -> None:
    date = wire.date_header("Date", datetime(2024, 1, 16, 15, 11, 12, tzinfo=UTC))
    ids = wire.ids_header("References", [f"<{n}.{'x' * 30}@gw.chu-exemple.fr>" for n in range(5)])

    assert str(date) == "Tue, 16 Jan 2024 15:11:12 +0000"
    assert date.datetime.year == 2024
    assert all(len(line) <= wire.MAX_LINE for line in ids.fold(policy=READ_POLICY).splitlines())
    assert str(_read(ids)["References"]) == str(ids)


def test_a_part_longer_than_a_line_allows_is_refused() -> None:
    with pytest.raises(wire.HeaderEncodingError, match="longer than 998"):
        wire.ids_header("References", ["<" + "x" * 1000 + "@y>"])


def test_set_header_checks_and_encodes() -> None:
    message = EmailMessage(policy=READ_POLICY)
    set_header(message, "From", Address("Passerelle MSSanté", addr_spec="postmaster@chu-exemple.fr"))
    set_header(message, "Subject", "Avis de non-remise : très long " * 4)

    parsed = BytesParser(policy=READ_POLICY).parsebytes(bytes(message))
    assert parsed["From"].addresses[0].display_name == "Passerelle MSSanté"
    assert str(parsed["Subject"]) == ("Avis de non-remise : très long " * 4).strip()
    with pytest.raises(HeaderInjectionError):
        set_header(message, "Subject", "x\r\nBcc: a@b.fr")
