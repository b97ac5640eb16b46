"""What a drop folder's ``.documents/`` holds for a received message: METADATA.XML, named CDAs, their PDFs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import PurePosixPath

from hypothesis import given
from hypothesis import strategies as st

from mappers.documents import Code, Document
from mappers.drop_files import drop_files, slug
from mappers.mime import build_message, parse_message
from mappers.records import Attachment, Mailbox, MessageRecord
from mappers.xds import LOINC_OID
from tests.unit.mappers import samples
from tests.unit.mappers.samples import PDF


def received(*documents: Document, attachments: tuple[Attachment, ...] = ()) -> MessageRecord:
    """``documents`` as a peer sends them (IHE_XDM.zip plus PDF copies), read back as the gateway does."""
    record = MessageRecord(
        author=Mailbox("cardio@chu-exemple.mssante.fr"),
        to=(Mailbox("secretariat@hopital.test.mssante.fr"),),
        subject="Compte rendu",
        body="Bonjour",
        patient=samples.patient(),
        documents=documents,
        attachments=attachments,
    )
    sent = build_message(record, nil_reference="DEV935997", hostname="gw.test", now=samples.NOW)
    return parse_message(bytes(sent))


def test_a_package_gives_its_metadata_each_cda_and_the_pdf_it_embeds() -> None:
    letter = samples.cda_document(type_code=Code("11490-0", "Lettre de liaison", LOINC_OID))
    files = drop_files(received(letter, attachments=(Attachment("notes.txt", "text/plain", b"vu\n"),)))
    assert list(files) == [
        "METADATA.XML",
        "DOC0001-lettre-de-liaison.cda.xml",
        "DOC0001-lettre-de-liaison.pdf",
        "notes.txt",
    ]
    assert b"urn:oasis:names:tc:ebxml-regrep" in files["METADATA.XML"]
    assert b"DOC0001.XML" in files["METADATA.XML"]  # the URI a reader matches to the file's stem
    assert files["DOC0001-lettre-de-liaison.pdf"] == PDF  # decoded, not the CDA's base64
    assert files["DOC0001-lettre-de-liaison.cda.xml"].startswith(b"<?xml")


def test_two_documents_of_the_same_type_never_share_a_name() -> None:
    first = samples.cda_document()
    second = samples.cda_document(document_id="1.2.250.1.213.1.1.1.45.2^9", title="Second scanner")
    files = drop_files(received(first, replace(second, filename="DOC0002.XML")))
    assert [n for n in files if n.endswith(".pdf")] == [
        "DOC0001-cr-d-imagerie-medicale.pdf",
        "DOC0002-cr-d-imagerie-medicale.pdf",
    ]


def test_a_message_without_package_gives_its_attachments_only() -> None:
    record = MessageRecord(
        Mailbox("a@x.test"), (), "s", attachments=(Attachment("cr.pdf", "application/pdf", PDF),) * 2
    )
    assert drop_files(record) == {"cr.pdf": PDF, "cr-2.pdf": PDF}


@given(st.text(max_size=200))
def test_a_slug_is_a_safe_ascii_file_name_part(text: str) -> None:
    word = slug(text)
    assert word.isascii() and len(word) <= 60
    assert all(c.isalnum() or c == "-" for c in word)
    assert not word.startswith("-") and not word.endswith("-")


@given(st.lists(st.text(min_size=1, max_size=30), max_size=8))
def test_drop_names_are_bare_and_unique_whatever_the_sender_named_its_files(names: list[str]) -> None:
    attachments = tuple(Attachment(name, "application/octet-stream", b"x") for name in names)
    files = drop_files(MessageRecord(Mailbox("a@x.test"), (), "s", attachments=attachments))
    assert len(files) == len(names)
    for name in files:
        assert PurePosixPath(name).name == name and not name.startswith(".") and "\\" not in name
