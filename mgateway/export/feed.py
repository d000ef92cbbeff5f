# -*- test-case-name: tests.test_export_feed -*-
"""
The C{utterances} feed: its rows, and its gzipped JSONL and CSV files.

One row per stored utterance, with the column convention of the AI-Services
feeds (C{instance_ts}, the partition strings C{dt} and C{hr}). Files are laid
out as Hive partitions under the exporter's directory::

    utterances/version=1/format=jsonl/dt=2026-12-01/hr=13/utterances_2026-12-01_13.jsonl.gz

Everything here blocks (files, gzip): callers run it on a thread.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path

import attrs

from mgateway.store.message import StoredMessage

FEED = "utterances"
VERSION = "1"
FORMATS = ("jsonl", "csv")

#: The feed's columns, in file order.
COLUMNS = (
    "instance_ts",
    "external_conversation_id",
    "stream_id",
    "sender_role",
    "sender_id",
    "text",
    "start_ms",
    "end_ms",
    "created_ts",
    "language",
    "namespace",
    "dt",
    "hr",
)

#: Columns holding integers (a CSV file holds them as text).
INTEGER_COLUMNS = ("start_ms", "end_ms")


def hour_start(when: datetime) -> datetime:
    """The start of the UTC hour holding C{when}: the row's C{instance_ts} window."""
    return when.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=timezone.utc)


def _timestamp(when: datetime) -> str:
    """The feeds' timestamp form, e.g. C{2019-12-17T17:11:41.626000+00:00}."""
    return when.astimezone(timezone.utc).isoformat(timespec="microseconds")


def row(message: StoredMessage) -> dict:
    """The feed row of one stored utterance; partitioned by when it was created."""
    created = message.created.astimezone(timezone.utc)
    return {
        "instance_ts": _timestamp(hour_start(created)),
        "external_conversation_id": message.conversation_id,
        "stream_id": message.stream_id,
        "sender_role": message.role,
        "sender_id": message.sender_external_id,
        "text": message.text,
        "start_ms": message.start_ms,
        "end_ms": message.end_ms,
        "created_ts": _timestamp(created),
        "language": message.language,
        "namespace": message.namespace,
        "dt": created.date().isoformat(),
        "hr": f"{created.hour:02d}",
    }


def encode(rows: Sequence[dict], format: str) -> bytes:
    """The uncompressed bytes of a file of C{rows}: JSON Lines, or CSV with a header."""
    if format == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue().encode("utf-8")


def decode(data: bytes, format: str) -> list[dict]:
    """The rows of a file's uncompressed bytes; in CSV an empty field reads back as C{None}."""
    text = data.decode("utf-8")
    if format == "jsonl":
        # Only "\n" ends a line: str.splitlines() would also split inside texts
        # holding U+2028 and the like, which json.dumps leaves unescaped.
        return [json.loads(line) for line in text.split("\n") if line]
    rows = []
    for r in csv.DictReader(io.StringIO(text, newline="")):
        r = {k: (v if v != "" else None) for k, v in r.items()}
        rows.append({k: int(v) if k in INTEGER_COLUMNS and v is not None else v for k, v in r.items()})
    return rows


@attrs.frozen
class Partition:
    """One file of the feed: a format, a day and an hour."""

    format: str = attrs.field(validator=attrs.validators.in_(FORMATS))
    day: date
    hour: int = attrs.field(validator=attrs.validators.in_(range(24)))

    @property
    def date_dir(self) -> str:
        return f"dt={self.day.isoformat()}"

    @property
    def interval(self) -> str:
        return f"hr={self.hour:02d}"

    @property
    def file_name(self) -> str:
        return f"{FEED}_{self.day.isoformat()}_{self.hour:02d}.{self.format}.gz"

    def path(self, root: Path) -> Path:
        return format_dir(root, self.format) / self.date_dir / self.interval / self.file_name


def format_dir(root: Path, format: str) -> Path:
    return root / FEED / f"version={VERSION}" / f"format={format}"


def write_atomically(path: Path, data: bytes) -> None:
    """
    Replace C{path} with a gzip file of C{data}, or leave it as it was.

    The file is written under a hidden temporary name in the same directory,
    flushed to disk, then renamed over C{path}: a reader sees the old file or
    the whole new one, never a part; a failure removes the temporary file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as raw:
            # mtime=0: the same rows give the same bytes, whenever built.
            with gzip.GzipFile(filename=path.name, mode="wb", fileobj=raw, mtime=0) as compressed:
                compressed.write(data)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def write_hour(root: Path, day: date, hour: int, messages: Iterable[StoredMessage],
               formats: Sequence[str]) -> list[Path]:
    """
    Write the files of one hour, one per format, from the messages created in
    it; an hour without messages has no file (one left by an earlier build is
    removed). Returns the files written.
    """
    rows = [row(m) for m in messages]
    written = []
    for format in formats:
        path = Partition(format, day, hour).path(root)
        if rows:
            write_atomically(path, encode(rows, format))
            written.append(path)
        else:
            path.unlink(missing_ok=True)
    return written


# -- listing, for the File Exporter API ---------------------------------------------


def _visible(directory: Path) -> list[str]:
    """The names in C{directory}, without hidden (temporary) ones; none if it is missing."""
    try:
        return sorted(name for name in os.listdir(directory) if not name.startswith("."))
    except FileNotFoundError:
        return []


def dates(root: Path, format: str) -> list[str]:
    """The days (C{2026-12-01}) that have files in C{format}, oldest first."""
    days = [name.removeprefix("dt=") for name in _visible(format_dir(root, format)) if name.startswith("dt=")]
    return [day for day in days if intervals(root, format, day)]


def intervals(root: Path, format: str, day: str) -> list[str]:
    """The hours (C{hr=13}) of C{day} that have a file."""
    directory = format_dir(root, format) / f"dt={day}"
    return [name for name in _visible(directory) if _visible(directory / name)]


def files(root: Path, format: str, day: str, interval: str | None) -> list[tuple[str, str]]:
    """(interval, file name) of every file of C{day}, or of its one C{interval}."""
    directory = format_dir(root, format) / f"dt={day}"
    chosen = [interval] if interval is not None else intervals(root, format, day)
    return [(i, name) for i in chosen for name in _visible(directory / i)]


def purge_older(root: Path, older_than: datetime) -> list[str]:
    """
    Delete the days whose every row was created before C{older_than}, as the
    store's retention deletes the messages; returns the days deleted.
    """
    deleted = set()
    for format in FORMATS:
        for day in dates(root, format):
            if day_start(date.fromisoformat(day)) + timedelta(days=1) <= older_than:
                shutil.rmtree(format_dir(root, format) / f"dt={day}")
                deleted.add(day)
    return sorted(deleted)
