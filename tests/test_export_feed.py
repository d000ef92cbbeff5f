"""
The utterances feed's rows and files: columns, both formats read back equal,
the Hive partition layout, atomic writes, listing and retention.
"""

from __future__ import annotations

import gzip
from datetime import date, datetime, timedelta, timezone

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mgateway.export import feed
from mgateway.store.message import StoredMessage

DAY = date(2026, 11, 30)
T0 = datetime(2026, 11, 30, 13, 45, 12, 345678, tzinfo=timezone.utc)


def stored(created=T0, text="I need help with my plan", **changes) -> StoredMessage:
    base = StoredMessage(
        message_id="01JDQ3Z6J2X1ZB0Y5W0KZ4T9QH", namespace="twilio", conversation_id="CA123",
        stream_id="5ce2b755-3f38-11ed-b755-7aed4d7f8f6b", role="customer", sender_external_id="TT9833237",
        text=text, start_ms=1200, end_ms=3400, created=created, spoken=created, language="en-US",
    )
    return attrs.evolve(base, **changes)


def test_a_row_has_the_feed_columns_partitioned_by_creation_time_in_utc():
    kst = timezone(timedelta(hours=9))
    row = feed.row(stored(created=T0.astimezone(kst)))
    assert tuple(row) == feed.COLUMNS
    assert row == {
        "instance_ts": "2026-11-30T13:00:00.000000+00:00",
        "external_conversation_id": "CA123",
        "stream_id": "5ce2b755-3f38-11ed-b755-7aed4d7f8f6b",
        "sender_role": "customer",
        "sender_id": "TT9833237",
        "text": "I need help with my plan",
        "start_ms": 1200,
        "end_ms": 3400,
        "created_ts": "2026-11-30T13:45:12.345678+00:00",
        "language": "en-US",
        "namespace": "twilio",
        "dt": "2026-11-30",
        "hr": "13",
    }


texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1)


@settings(max_examples=200, deadline=None)
@given(text=texts, sender=st.none() | texts, language=st.none() | st.sampled_from(["en-US", "ko-KR"]))
def test_every_text_reads_back_equal_from_either_format(text, sender, language):
    # Commas, quotes, line breaks, U+2028, non-ASCII: whatever the recogniser
    # or a client's sender id holds.
    rows = [feed.row(stored(text=text, sender_external_id=sender, language=language)), feed.row(stored())]
    assert feed.decode(feed.encode(rows, "jsonl"), "jsonl") == rows
    # CSV has no null: an absent sender id or language reads back as None,
    # and so does an empty string, which the store never holds for them.
    assert feed.decode(feed.encode(rows, "csv"), "csv") == [
        {k: (None if v == "" else v) for k, v in r.items()} for r in rows]


def test_csv_has_a_header_row_of_the_columns():
    first_line = feed.encode([feed.row(stored())], "csv").split(b"\r\n")[0]
    assert first_line.decode() == ",".join(feed.COLUMNS)


def test_an_hour_is_written_as_one_gzip_file_per_format_in_hive_partitions(tmp_path):
    messages = [stored(), stored(created=T0 + timedelta(seconds=1), role="agent")]
    written = feed.write_hour(tmp_path, DAY, 13, messages, feed.FORMATS)

    assert [p.relative_to(tmp_path).as_posix() for p in written] == [
        "utterances/version=1/format=jsonl/dt=2026-11-30/hr=13/utterances_2026-11-30_13.jsonl.gz",
        "utterances/version=1/format=csv/dt=2026-11-30/hr=13/utterances_2026-11-30_13.csv.gz",
    ]
    for path, format in zip(written, feed.FORMATS):
        assert feed.decode(gzip.decompress(path.read_bytes()), format) == [feed.row(m) for m in messages]
    assert feed.dates(tmp_path, "csv") == ["2026-11-30"]
    assert feed.intervals(tmp_path, "csv", "2026-11-30") == ["hr=13"]
    assert feed.files(tmp_path, "jsonl", "2026-11-30", None) == [("hr=13", "utterances_2026-11-30_13.jsonl.gz")]
    assert feed.files(tmp_path, "jsonl", "2026-11-30", "hr=14") == []


def test_rebuilding_an_hour_that_lost_its_messages_removes_its_file(tmp_path):
    feed.write_hour(tmp_path, DAY, 13, [stored()], ("jsonl",))
    assert feed.write_hour(tmp_path, DAY, 13, [], ("jsonl",)) == []
    assert feed.dates(tmp_path, "jsonl") == []


class Boom(Exception):
    pass


def test_a_failed_write_leaves_the_previous_file_and_no_temporary_one(tmp_path, monkeypatch):
    path = feed.Partition("jsonl", DAY, 13).path(tmp_path)
    feed.write_atomically(path, b"old rows\n")

    def fail(*args, **kwargs):
        raise Boom("disk full")

    # The failure comes after part of the new file has been written.
    monkeypatch.setattr(feed.os, "fsync", fail)
    with pytest.raises(Boom):
        feed.write_atomically(path, b"new rows\n" * 10_000)

    assert gzip.decompress(path.read_bytes()) == b"old rows\n"
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_a_temporary_file_left_by_a_crash_is_never_listed(tmp_path):
    path = feed.Partition("csv", DAY, 7).path(tmp_path)
    path.parent.mkdir(parents=True)
    (path.parent / f".{path.name}.x1y2.tmp").write_bytes(b"half")
    assert feed.dates(tmp_path, "csv") == []
    feed.write_atomically(path, b"rows")
    assert feed.files(tmp_path, "csv", DAY.isoformat(), "hr=07") == [("hr=07", path.name)]


def test_retention_deletes_the_days_whose_every_row_is_older_than_the_cutoff(tmp_path):
    for day in (date(2026, 11, 28), date(2026, 11, 29), date(2026, 11, 30)):
        for format in feed.FORMATS:
            feed.write_atomically(feed.Partition(format, day, 23).path(tmp_path), b"rows")

    # Rows of the 29th were created up to 23:59:59.999999 on the 29th.
    deleted = feed.purge_older(tmp_path, datetime(2026, 11, 29, 23, 59, tzinfo=timezone.utc))

    assert deleted == ["2026-11-28"]
    assert feed.dates(tmp_path, "jsonl") == feed.dates(tmp_path, "csv") == ["2026-11-29", "2026-11-30"]
    assert feed.purge_older(tmp_path, datetime(2026, 11, 30, tzinfo=timezone.utc)) == ["2026-11-29"]
