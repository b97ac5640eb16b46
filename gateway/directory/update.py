"""Importing the directory: a file or an ``https://`` URL (ZIP or text) read line by line into the store.

A download goes to a temporary file in ``state_dir`` (a ZIP cannot be read from a stream) and is deleted
after. The new generation becomes the one in force only when the whole file was read without a problem and
it holds at least ``directory.min_entries`` addresses and ``directory.min_share`` of the previous import's:
otherwise it is recorded as refused and the directory in force stays (``DirectoryRefused``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import ssl
import tempfile
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO
from zoneinfo import ZoneInfo

from gateway.errors import InputError
from gateway.settings import Settings
from gateway.store.directory import DirectoryStore, ImportRecord, LoadCounts
from mappers.directory import DirectoryFormatError, DirectoryReader

_STAMP = re.compile(r"_(\d{12})\.txt$", re.IGNORECASE)
_PARIS = ZoneInfo("Europe/Paris")
_CHUNK = 1024 * 1024


class DirectoryRefused(InputError):
    """A file that was read but may not replace the directory in force; the message says why."""

    def __init__(self, reason: str) -> None:
        super().__init__("--from", f"{reason}: refused, the directory in force stays")


@dataclass(frozen=True, slots=True)
class OpenedFile:
    """The extraction's lines and what its name says."""

    lines: IO[bytes]
    name: str
    timestamp: datetime | None


def file_timestamp(name: str) -> datetime | None:
    """``Extraction_Correspondance_MSSante_AAAAMMJJhhmm.txt`` → that time (French local time), else None."""
    match = _STAMP.search(name)
    if match is None:
        return None
    try:
        return datetime.strptime(match.group(1), "%Y%m%d%H%M").replace(tzinfo=_PARIS)
    except ValueError:
        return None


@contextlib.contextmanager
def fetched(source: str, settings: Settings) -> Iterator[Path]:
    """The file at ``source``: itself, or a download to a temporary file deleted afterwards."""
    if source.startswith("http://"):
        raise InputError(
            "--from", "the directory is only fetched over https:// (it decides who mail goes to)"
        )
    if not source.startswith("https://"):
        path = Path(source)
        if not path.is_file():
            raise InputError("--from", f"cannot read {source}: no such file")
        yield path
        return
    directory = settings.directory
    ca_bundle = directory.ca_bundle or settings.tls.ca_bundle
    context = ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    folder = settings.gateway.state_dir
    folder.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=folder, prefix=".directory-")
    try:
        with (
            os.fdopen(fd, "wb") as handle,
            urllib.request.urlopen(source, context=context, timeout=directory.fetch_timeout) as answer,  # noqa: S310 (https only, checked above)
        ):
            shutil.copyfileobj(_capped(answer, directory.max_download, source), handle, _CHUNK)
        yield Path(temporary)
    except OSError as error:
        raise InputError("--from", f"cannot fetch {source}: {getattr(error, 'reason', error)}") from error
    finally:
        Path(temporary).unlink(missing_ok=True)


class _capped:
    """A reader that refuses to go past ``limit`` bytes (a runaway download fills no disk)."""

    def __init__(self, answer: IO[bytes], limit: int, source: str) -> None:
        self.answer, self.limit, self.source, self.read_so_far = answer, limit, source, 0

    def read(self, size: int = -1) -> bytes:
        data = self.answer.read(size)
        self.read_so_far += len(data)
        if self.read_so_far > self.limit:
            raise InputError("--from", f"{self.source} is larger than directory.max_download: refused")
        return data


@contextlib.contextmanager
def opened(path: Path) -> Iterator[OpenedFile]:
    """The extraction's lines from ``path``: the text file itself, or the one ``.txt`` file of a ZIP."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.infolist() if m.filename.lower().endswith(".txt")]
            if len(members) != 1:
                raise InputError(
                    "--from", f"{path.name}: the ZIP holds {len(members)} .txt files, expected one"
                )
            member = members[0]
            stamp = file_timestamp(member.filename)
            if stamp is None:
                stamp = datetime(*member.date_time, tzinfo=_PARIS)
            with archive.open(member) as lines:
                yield OpenedFile(lines, member.filename, stamp)
        return
    with path.open("rb") as lines:
        yield OpenedFile(lines, path.name, file_timestamp(path.name))


def update_directory(
    store: DirectoryStore, source: str, settings: Settings, now: datetime, *, accept_smaller: bool = False
) -> ImportRecord:
    """Import ``source`` and put it in force; raises ``DirectoryRefused`` (the one in force stays)."""
    with fetched(source, settings) as path, opened(path) as extraction:
        generation = store.begin_import(source, extraction.name, extraction.timestamp, now)
        reader = DirectoryReader(extraction.lines)
        counts: LoadCounts | None = None
        try:
            counts = store.load(generation, reader)
            reason = _refusal(store, reader, counts, settings, accept_smaller)
        except DirectoryFormatError as error:
            reason = str(error)
        except BaseException:
            store.discard(generation, "failed", "the import stopped before its end", counts, now)
            raise
    if reason is not None:
        store.discard(generation, "refused", reason, counts, now)
        raise DirectoryRefused(reason)
    assert counts is not None
    store.publish(generation, counts, now)
    record = store.current()
    assert record is not None
    return record


def _refusal(
    store: DirectoryStore,
    reader: DirectoryReader,
    counts: LoadCounts,
    settings: Settings,
    accept_smaller: bool,
) -> str | None:
    if reader.problem_count:
        shown = "; ".join(reader.problems[:5])
        if reader.problem_count > 5:
            shown += f"; and {reader.problem_count - 5} more"
        return f"{reader.problem_count} unreadable lines ({shown})"
    wanted = settings.directory.min_entries
    if counts.addresses < wanted:
        return f"{counts.addresses} addresses, fewer than directory.min_entries = {wanted}"
    previous = store.current()
    share = settings.directory.min_share
    if previous is not None and not accept_smaller and counts.addresses < share * previous.addresses:
        return (
            f"{counts.addresses} addresses, under {share:.0%} of the {previous.addresses} of the directory "
            "in force (a truncated file?); use --accept-smaller if the directory really shrank"
        )
    return None
