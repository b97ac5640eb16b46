"""Malicious ZIP archives are refused before any member is used, with a typed error and a clear message."""

from __future__ import annotations

import io
import stat
import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from mappers import archive, xdm
from mappers.archive import ArchiveLimits

from .samples import set_declared_size, zip_members

GIB = 1024 * 1024 * 1024


@pytest.fixture(scope="module")
def gigabyte_bomb() -> Iterator[bytes]:
    """A real archive whose one member expands to 1 GiB of zeros (about 1 MB compressed).

    Written in 1 MiB chunks, so memory stays small; compression level 1 keeps it around a second.
    """
    buffer = io.BytesIO()
    with (
        zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as out,
        out.open("IHE_XDM/SUBSET01/DOC0001.XML", "w", force_zip64=True) as member,
    ):
        chunk = bytes(1024 * 1024)
        for _ in range(1024):
            member.write(chunk)
    yield buffer.getvalue()


def test_reads_a_plain_archive() -> None:
    data = zip_members(("README.TXT", b"hello"), ("IHE_XDM/SUBSET01/METADATA.XML", b"<x/>"))
    assert archive.read_members(data) == {
        "README.TXT": b"hello",
        "IHE_XDM/SUBSET01/METADATA.XML": b"<x/>",
    }


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("../../etc/cron.d/evil", "climbs out of the archive"),
        ("IHE_XDM/SUBSET01/../../../evil", "climbs out of the archive"),
        ("..\\..\\evil.bat", "climbs out of the archive"),
        ("/etc/passwd", "absolute path"),
        ("\\windows\\evil", "absolute path"),
        ("C:/evil", "absolute path"),
    ],
)
def test_zip_slip_names_are_refused(name: str, message: str, tmp_path: Path) -> None:
    data = zip_members(("README.TXT", b"ok"), (name, b"evil"))
    with pytest.raises(archive.UnsafeMemberNameError, match=message):
        archive.read_members(data)
    with pytest.raises(archive.UnsafeArchiveError):
        xdm.parse_package(data)
    assert list(tmp_path.iterdir()) == []


def test_symbolic_links_are_refused() -> None:
    data = zip_members(("IHE_XDM/SUBSET01/DOC0001.XML", b"/etc/passwd"), mode=stat.S_IFLNK | 0o777)
    with pytest.raises(archive.UnsafeMemberNameError, match="symbolic link"):
        archive.read_members(data)


def test_too_many_members_are_refused_before_parsing_the_directory() -> None:
    data = zip_members(*((f"F{n}.TXT", b"") for n in range(11)))
    with pytest.raises(archive.TooManyMembersError, match="11 members, more than the limit of 10"):
        archive.read_members(data, limits=ArchiveLimits(max_members=10))


def test_duplicate_names_are_refused() -> None:
    data = zip_members(("README.TXT", b"a"), ("readme.txt", b"b"))
    with pytest.raises(archive.UnsafeArchiveError, match="appears twice"):
        archive.read_members(data)


def test_declared_one_gigabyte_is_refused_without_decompressing() -> None:
    data = set_declared_size(zip_members(("IHE_XDM/SUBSET01/DOC0001.XML", b"small")), GIB)
    with pytest.raises(archive.ArchiveTooLargeError, match="declares 1073741824 bytes expanded"):
        xdm.parse_package(data)


def test_gigabyte_bomb_is_refused(gigabyte_bomb: bytes) -> None:
    assert len(gigabyte_bomb) < 8 * 1024 * 1024
    with pytest.raises(archive.ArchiveTooLargeError, match="1073741824 bytes expanded"):
        xdm.parse_package(gigabyte_bomb)


def test_gigabyte_bomb_lying_about_its_size_stops_at_the_limit(gigabyte_bomb: bytes) -> None:
    """Headers claiming 1 KiB: the bounded read stops at the limit, zipfile's size/CRC check refuses it."""
    data = bytearray(gigabyte_bomb)
    # zipfile takes sizes from the central directory (1 GiB fits in 32 bits: no zip64 extra there).
    central = data.rfind(b"PK\x01\x02")
    assert struct.unpack_from("<I", data, central + 24)[0] == GIB
    struct.pack_into("<I", data, central + 24, 1024)
    with pytest.raises(archive.ArchiveError) as caught:
        archive.read_members(bytes(data), limits=ArchiveLimits(max_total_size=1024 * 1024))
    assert "1073741824" not in str(caught.value)


def test_bounded_read_does_not_trust_headers() -> None:
    """Even when the header is believed, the actual bytes read are counted against the limit."""
    data = zip_members(("A.TXT", bytes(4096)))
    limits = ArchiveLimits(max_total_size=1024 * 1024, max_member_size=4095)
    with pytest.raises(archive.ArchiveTooLargeError, match="declares 4096 bytes"):
        archive.read_members(data, limits=limits)
    two = zip_members(("A.TXT", bytes(600)), ("B.TXT", bytes(600)))
    with pytest.raises(archive.ArchiveTooLargeError, match="more than 1000 bytes"):
        archive.read_members(two, limits=ArchiveLimits(max_total_size=1000))


def test_not_a_zip_is_an_archive_error() -> None:
    with pytest.raises(archive.ArchiveError, match="not a readable ZIP"):
        archive.read_members(b"this is not a zip")
    with pytest.raises(archive.ArchiveError):
        archive.read_members(zip_members(("A.TXT", b"hello" * 100))[:-30])


def test_corrupted_member_is_an_archive_error() -> None:
    data = bytearray(zip_members(("A.TXT", b"hello world, hello world")))
    offset = data.find(b"A.TXT") + len("A.TXT") + 2
    data[offset] ^= 0xFF
    with pytest.raises(archive.ArchiveError):
        archive.read_members(bytes(data))


def test_written_archives_are_reproducible() -> None:
    from datetime import UTC, datetime

    when = datetime(2024, 1, 16, 15, 11, 12, tzinfo=UTC)
    first = archive.write_archive([("A.TXT", b"a"), ("B/C.TXT", b"c")], when=when)
    assert first == archive.write_archive([("A.TXT", b"a"), ("B/C.TXT", b"c")], when=when)
    assert archive.read_members(first) == {"A.TXT": b"a", "B/C.TXT": b"c"}
