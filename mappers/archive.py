"""Safe reading and deterministic writing of ZIP archives (the IHE_XDM.zip container).

Every member of untrusted archives is vetted — names (absolute, ``..``, symlinks), count, declared and actual
expanded size — before any content is handed on; contents are read into memory with bounded reads and
nothing is ever extracted to disk. Writing sorts nothing and stamps a fixed time so outputs are reproducible.

Public API (stable):
    ArchiveLimits(max_members=64, max_total_size=64 MiB, max_member_size=None)
    read_members(data: bytes, *, limits: ArchiveLimits = ArchiveLimits()) -> dict[str, bytes]
    write_archive(members: Sequence[tuple[str, bytes]], *, when: datetime) -> bytes
"""

from __future__ import annotations

import io
import stat
import struct
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from mappers.errors import MappingError

_CHUNK: Final = 64 * 1024
_MIB: Final = 1024 * 1024


class ArchiveError(MappingError):
    """The data is not a readable ZIP archive (truncated, corrupt, encrypted)."""


class UnsafeArchiveError(ArchiveError):
    """The archive is readable but dangerous: refused before any member is used."""


class UnsafeMemberNameError(UnsafeArchiveError):
    """A member name that could escape a directory (absolute, ``..``, drive letter, NUL) or is a link."""


class TooManyMembersError(UnsafeArchiveError):
    """More members than ``ArchiveLimits.max_members``."""


class ArchiveTooLargeError(UnsafeArchiveError):
    """Declared or actual expanded size above the limits (zip bomb)."""


@dataclass(frozen=True, slots=True)
class ArchiveLimits:
    """Bounds applied to untrusted archives.

    The defaults fit Mon espace santé's 25 MB message limit (MSSANTE.md §9) with room for compression;
    ``max_member_size`` defaults to ``max_total_size``.
    """

    max_members: int = 64
    max_total_size: int = 64 * _MIB
    max_member_size: int | None = None

    @property
    def member_limit(self) -> int:
        """The per-member bound actually applied."""
        if self.max_member_size is None:
            return self.max_total_size
        return min(self.max_member_size, self.max_total_size)


def _check_name(info: zipfile.ZipInfo) -> None:
    """Refuse names that would escape an extraction directory, and symbolic links."""
    name = info.filename
    shown = name.encode("unicode_escape").decode("ascii")[:120]
    if not name or "\x00" in name:
        raise UnsafeMemberNameError(f"member {shown!r} has an empty name or a NUL character")
    unified = name.replace("\\", "/")
    if unified.startswith("/") or (len(unified) > 1 and unified[1] == ":"):
        raise UnsafeMemberNameError(f"member {shown!r} has an absolute path")
    if ".." in unified.split("/"):
        raise UnsafeMemberNameError(f"member {shown!r} climbs out of the archive with '..'")
    # Unix mode bits live in the high 16 bits of external_attr (APPNOTE 4.4.15, create_system 3).
    mode = info.external_attr >> 16
    if mode and stat.S_ISLNK(mode):
        raise UnsafeMemberNameError(f"member {shown!r} is a symbolic link")


def _vet(infos: Sequence[zipfile.ZipInfo], limits: ArchiveLimits) -> None:
    """All checks that need no decompression: count, names, duplicates, declared sizes."""
    if len(infos) > limits.max_members:
        raise TooManyMembersError(
            f"the archive has {len(infos)} members, more than the limit of {limits.max_members}"
        )
    seen: set[str] = set()
    declared = 0
    for info in infos:
        _check_name(info)
        folded = info.filename.replace("\\", "/").casefold()
        if folded in seen:
            raise UnsafeArchiveError(f"member {info.filename!r} appears twice in the archive")
        seen.add(folded)
        if info.flag_bits & 0x1:
            raise ArchiveError(f"member {info.filename!r} is encrypted")
        if info.file_size > limits.member_limit:
            raise ArchiveTooLargeError(
                f"member {info.filename!r} declares {info.file_size} bytes expanded, "
                f"more than the limit of {limits.member_limit}"
            )
        declared += info.file_size
        if declared > limits.max_total_size:
            raise ArchiveTooLargeError(
                f"the archive declares more than {limits.max_total_size} bytes expanded (zip bomb?)"
            )


def _read_bounded(archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: int) -> bytes:
    """Read one member without trusting its header: stop as soon as ``budget`` bytes are exceeded."""
    parts: list[bytes] = []
    size = 0
    with archive.open(info) as member:
        while True:
            chunk = member.read(_CHUNK)
            if not chunk:
                break
            size += len(chunk)
            if size > budget:
                raise ArchiveTooLargeError(
                    f"member {info.filename!r} expands beyond the limit of {budget} bytes (zip bomb?)"
                )
            parts.append(chunk)
    return b"".join(parts)


def _declared_count(data: bytes) -> int | None:
    """Entry count of the end-of-central-directory record, read before zipfile parses every entry."""
    # APPNOTE 4.3.16: the record is at most 22 + 65535 bytes from the end; total entries at offset 10.
    position = data.rfind(b"PK\x05\x06", max(0, len(data) - 22 - 0xFFFF))
    if position < 0 or position + 22 > len(data):
        return None
    count = int.from_bytes(data[position + 10 : position + 12], "little")
    return None if count == 0xFFFF else count


def read_members(data: bytes, *, limits: ArchiveLimits | None = None) -> dict[str, bytes]:
    """Every file member of an untrusted archive, by name (directories skipped), after all checks.

    Raises ``UnsafeArchiveError`` subclasses for dangerous archives and ``ArchiveError`` for unreadable ones.
    """
    limits = limits or ArchiveLimits()
    count = _declared_count(data)
    if count is not None and count > limits.max_members:
        raise TooManyMembersError(
            f"the archive has {count} members, more than the limit of {limits.max_members}"
        )
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
            _vet(infos, limits)
            members: dict[str, bytes] = {}
            remaining = limits.max_total_size
            for info in infos:
                if info.is_dir():
                    continue
                content = _read_bounded(archive, info, min(limits.member_limit, remaining))
                remaining -= len(content)
                members[info.filename.replace("\\", "/")] = content
            return members
    except MappingError:
        raise
    except zipfile.BadZipFile as error:
        raise ArchiveError(f"not a readable ZIP archive: {error}") from error
    except zlib.error as error:
        raise ArchiveError(f"a member of the ZIP archive is corrupt: {error}") from error
    except (EOFError, OSError, NotImplementedError, ValueError, struct.error) as error:
        raise ArchiveError(f"the ZIP archive cannot be read: {error}") from error


def write_archive(members: Sequence[tuple[str, bytes]], *, when: datetime) -> bytes:
    """A deflated ZIP with members in the given order, all stamped ``when`` (UTC), mode 0644."""
    stamp = when.astimezone(UTC) if when.tzinfo else when
    date_time = (max(stamp.year, 1980), stamp.month, stamp.day, stamp.hour, stamp.minute, stamp.second)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in members:
            info = zipfile.ZipInfo(name, date_time=date_time)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            info.create_system = 3
            archive.writestr(info, content)
    return buffer.getvalue()
