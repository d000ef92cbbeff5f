"""
The File Exporter's ledger (claims and hourly reads) on SQLite, PostgreSQL
and the in-memory fake, the schema migration that brings it, and the daily
build service driven by a L{Clock}.
"""

from __future__ import annotations

import gzip
import sqlite3
from contextlib import closing
from datetime import date, datetime, timedelta, timezone

import attrs
import pytest
import pytest_twisted
from prometheus_client import REGISTRY
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from mgateway.export import feed
from mgateway.export.build import FeedExporter
from mgateway.interfaces import IExportLedger
from mgateway.export.ledger import StoreExportLedger
from mgateway.export.service import DailyExportService, due_day, next_build
from mgateway.testing import MemoryExportLedger
from mgateway.store.schema import MIGRATIONS
from mgateway.store.sqlite import SQLiteTranscriptStore
from tests.test_store import logged, message, postgres_backend, sqlite_backend  # noqa: F401 (fixture)

UTC = timezone.utc
NOV29, NOV30, DEC1 = date(2026, 11, 29), date(2026, 11, 30), date(2026, 12, 1)
NOON = datetime(2026, 11, 30, 12, tzinfo=UTC)


def at(day: date, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=UTC)


def test_the_due_day_is_the_one_before_the_last_build_time():
    assert due_day(at(DEC1, 2), 2) == NOV30
    assert due_day(at(DEC1, 1, 59, 59), 2) == NOV29
    assert due_day(at(DEC1, 23, 59), 2) == NOV30
    assert due_day(at(DEC1, 0), 0) == NOV30


def test_the_next_build_is_strictly_after_now():
    assert next_build(at(DEC1, 1, 59, 59), 2) == at(DEC1, 2)
    assert next_build(at(DEC1, 2), 2) == at(date(2026, 12, 2), 2)


# -- the ledger, on every backend -----------------------------------------------------


@attrs.frozen
class Ledgers:
    """Opens ledgers on one database, as several nodes would."""

    open: object
    stores: list


@pytest.fixture(params=["sqlite", "postgresql", "memory"])
def ledgers(request, tmp_path):
    if request.param == "memory":
        shared = MemoryExportLedger()
        yield Ledgers(lambda: shared, [])
        return
    backend = (sqlite_backend(tmp_path / "transcripts.sqlite3") if request.param == "sqlite"
               else postgres_backend(request.getfixturevalue("fresh_postgres_dsn")))
    stores = []

    def open_ledger():
        store = backend.open()
        stores.append(store)
        return StoreExportLedger(store)

    yield Ledgers(open_ledger, stores)
    for store in stores:
        pytest_twisted.blockon(store.close())


async def add_messages(ledger, messages) -> None:
    if isinstance(ledger, MemoryExportLedger):
        ledger.messages.extend(messages)
    else:
        await gatherResults([ledger._store.add(m) for m in messages])


def test_ledgers_provide_the_ledger_interface(ledgers):
    verifyObject(IExportLedger, ledgers.open())


@pytest_twisted.ensureDeferred
async def test_one_claim_per_day_until_it_is_released(ledgers):
    a, b = ledgers.open(), ledgers.open()
    assert await a.state(feed.FEED, NOV30) is None
    assert await a.claim(feed.FEED, NOV30, "node-a", NOON, NOON - timedelta(hours=1)) is True
    assert await b.claim(feed.FEED, NOV30, "node-b", NOON, NOON - timedelta(hours=1)) is False
    assert await b.claim(feed.FEED, NOV29, "node-b", NOON, NOON - timedelta(hours=1)) is True, "another day"
    assert await b.state(feed.FEED, NOV30) == ("building", "node-a")

    await b.release(feed.FEED, NOV30, "node-b")
    assert await b.state(feed.FEED, NOV30) == ("building", "node-a"), "only its holder releases a claim"
    await a.release(feed.FEED, NOV30, "node-a")
    assert await b.claim(feed.FEED, NOV30, "node-b", NOON, NOON - timedelta(hours=1)) is True


@pytest_twisted.ensureDeferred
async def test_a_built_day_is_never_claimed_again(ledgers):
    a, b = ledgers.open(), ledgers.open()
    await a.claim(feed.FEED, NOV30, "node-a", NOON, NOON - timedelta(hours=1))
    await a.finish(feed.FEED, NOV30, "node-a", NOON)
    later = NOON + timedelta(days=3)
    assert await b.claim(feed.FEED, NOV30, "node-b", later, later) is False
    assert await b.state(feed.FEED, NOV30) == ("done", "node-a")


@pytest_twisted.ensureDeferred
async def test_a_stale_claim_of_a_dead_node_is_taken_over(ledgers):
    a, b = ledgers.open(), ledgers.open()
    await a.claim(feed.FEED, NOV30, "node-a", NOON, NOON - timedelta(hours=1))
    hour_later = NOON + timedelta(hours=1)
    assert await b.claim(feed.FEED, NOV30, "node-b", hour_later, NOON) is False, "claimed at the cutoff: not stale"
    assert await b.claim(feed.FEED, NOV30, "node-b", hour_later, NOON + timedelta(microseconds=1)) is True
    assert await b.state(feed.FEED, NOV30) == ("building", "node-b")
    await a.finish(feed.FEED, NOV30, "node-a", hour_later)
    assert await b.state(feed.FEED, NOV30) == ("building", "node-b"), "the dead node's late finish is ignored"


@pytest_twisted.ensureDeferred
async def test_nodes_claiming_at_the_same_moment_get_one_claim(ledgers):
    nodes = [ledgers.open() for _ in range(4)]
    granted = await gatherResults([
        ledger.claim(feed.FEED, NOV30, f"node-{i}", NOON, NOON - timedelta(hours=1))
        for i, ledger in enumerate(nodes)])
    assert sorted(granted) == [False, False, False, True], granted


@pytest_twisted.ensureDeferred
async def test_the_messages_of_an_hour_oldest_first_end_excluded(ledgers):
    ledger = ledgers.open()
    hour = at(NOV30, 13)
    inside = [message(created=hour + timedelta(minutes=m), spoken=hour, text=f"t{m}") for m in (59, 0, 30)]
    outside = [message(created=hour - timedelta(microseconds=1), spoken=hour),
               message(created=hour + timedelta(hours=1), spoken=hour)]
    await add_messages(ledger, [*inside, *outside])
    read = await ledger.messages_created(hour, hour + timedelta(hours=1))
    assert [m.text for m in read] == ["t0", "t30", "t59"]


# -- the migration ----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_version_1_database_gains_the_language_column_and_the_claims(tmp_path):
    path = tmp_path / "transcripts.sqlite3"
    with closing(sqlite3.connect(path, isolation_level=None)) as connection:
        connection.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for statement in MIGRATIONS[0]:
            connection.execute(statement)
        connection.execute("INSERT INTO schema_version (version) VALUES (1)")
        connection.execute(
            "INSERT INTO messages VALUES ('01J', 'siprec', 'CONV1', 's1', 'agent', NULL, 'hi', 0, 10, 5, 5)")

    store = SQLiteTranscriptStore(path, reactor)
    try:
        [old] = await store.messages("CONV1", 10)
        assert (old.text, old.language) == ("hi", None)
        await store.add(attrs.evolve(message(), language="ko-KR"))
        assert [m.language for m in await store.messages("CONV1", 10)] == [None, "ko-KR"]
        assert await StoreExportLedger(store).claim(feed.FEED, NOV30, "n", NOON, NOON) is True
    finally:
        await store.close()
    with closing(sqlite3.connect(path)) as connection:
        assert connection.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == len(MIGRATIONS)


@pytest_twisted.ensureDeferred
async def test_postgres_version_1_database_is_migrated_too(fresh_postgres_dsn):
    backend = postgres_backend(fresh_postgres_dsn)
    backend.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for statement in MIGRATIONS[0]:
        backend.execute(statement)
    backend.execute("INSERT INTO schema_version (version) VALUES (1)")
    backend.execute("INSERT INTO messages VALUES ('01J', 'siprec', 'CONV1', 's1', 'agent', NULL, 'hi', 0, 10, 5, 5)")
    store = backend.open()
    try:
        await store.add(attrs.evolve(message(), language="ko-KR"))
        assert [m.language for m in await store.messages("CONV1", 10)] == [None, "ko-KR"]
    finally:
        await store.close()


# -- the daily service ------------------------------------------------------------------


def export_events(events) -> list[dict]:
    return [e for e in events if e.get("log_namespace", "").startswith("mgateway.export")]


def clock_at(when: datetime) -> Clock:
    clock = Clock()
    clock.advance(when.timestamp())
    return clock


def service(ledger, directory, clock, node="node-a", retention=None, build=True) -> DailyExportService:
    exporter = FeedExporter(ledger, directory, feed.FORMATS, reactor)
    return DailyExportService(exporter, ledger, clock, build_hour=2, retention=retention, node=node, build=build)


def builds(outcome: str) -> float:
    return REGISTRY.get_sample_value("asapp_mg_export_builds_total", {"outcome": outcome}) or 0.0


def built_days(directory) -> list[str]:
    return feed.dates(directory, "jsonl")


async def advance(clock: Clock, node: DailyExportService, seconds: float) -> None:
    clock.advance(seconds)
    await node.last_run


@pytest_twisted.ensureDeferred
async def test_at_two_the_day_before_is_built_and_not_a_second_earlier(tmp_path):
    ledger = MemoryExportLedger([message(created=at(NOV30, h, 15), spoken=at(NOV30, h)) for h in (0, 13, 23)])
    # The day due at start-up (the 29th) was built before the restart.
    await ledger.claim(feed.FEED, NOV29, "node-a", at(NOV30, 2), at(NOV30, 2))
    await ledger.finish(feed.FEED, NOV29, "node-a", at(NOV30, 2))
    clock = clock_at(at(DEC1, 1, 30))
    node = service(ledger, tmp_path, clock)
    node.startService()
    await advance(clock, node, 0)
    await advance(clock, node, 29 * 60 + 59)
    assert built_days(tmp_path) == []

    await advance(clock, node, 1)

    assert built_days(tmp_path) == ["2026-11-30"]
    assert feed.intervals(tmp_path, "csv", "2026-11-30") == ["hr=00", "hr=13", "hr=23"]
    assert await ledger.state(feed.FEED, NOV30) == ("done", "node-a")
    assert [c.getTime() for c in clock.getDelayedCalls()] == [at(date(2026, 12, 2), 2).timestamp()]
    await node.stopService()
    assert clock.getDelayedCalls() == [], "stopping cancels the next build"


@pytest_twisted.ensureDeferred
async def test_a_node_started_after_two_catches_up_once_and_a_restart_does_not_rebuild(tmp_path, logged):
    ledger = MemoryExportLedger([message(created=at(NOV30, 9), spoken=at(NOV30, 9))])
    clock = clock_at(at(DEC1, 8))
    first = service(ledger, tmp_path, clock)
    first.startService()
    await advance(clock, first, 0)
    assert built_days(tmp_path) == ["2026-11-30"]
    await first.stopService()
    path = feed.Partition("jsonl", NOV30, 9).path(tmp_path)
    built = path.stat().st_mtime_ns

    restarted = service(ledger, tmp_path, clock, node="node-a-restarted")
    restarted.startService()
    await advance(clock, restarted, 0)
    await restarted.stopService()

    assert path.stat().st_mtime_ns == built
    skipped = [e for e in export_events(logged) if e.get("other") == "node-a"]
    assert skipped and skipped[0]["state"] == "done", export_events(logged)


@pytest_twisted.ensureDeferred
async def test_of_two_nodes_waking_at_two_one_builds_and_the_other_sees_it(tmp_path, logged):
    store = SQLiteTranscriptStore(tmp_path / "shared.sqlite3", reactor)
    await store.add(message(created=at(NOV30, 10), spoken=at(NOV30, 10)))
    clock = clock_at(at(DEC1, 2))
    nodes = [service(StoreExportLedger(store), tmp_path / "files", clock, node=name) for name in ("a", "b")]
    try:
        for node in nodes:
            node.startService()
        clock.advance(0)
        await gatherResults([node.last_run for node in nodes])
        assert await StoreExportLedger(store).state(feed.FEED, NOV30) in {("done", "a"), ("done", "b")}
        builds = [e for e in export_events(logged) if e.get("log_format", "").startswith("built the")]
        skips = [e for e in export_events(logged) if e.get("state") in ("building", "done")]
        assert (len(builds), len(skips)) == (1, 1), export_events(logged)
        assert built_days(tmp_path / "files") == ["2026-11-30"]
    finally:
        await gatherResults([node.stopService() for node in nodes])
        await store.close()


@pytest_twisted.ensureDeferred
async def test_a_failed_build_is_logged_leaves_no_file_and_is_retried_after_a_restart(tmp_path, logged):
    ledger = MemoryExportLedger([message(created=at(NOV30, h), spoken=at(NOV30, h)) for h in (3, 4)])
    blocked = tmp_path / "files"
    blocked.write_text("a file where the feed's directory should be")
    clock = clock_at(at(DEC1, 2))
    node = service(ledger, blocked, clock)
    failed_before = builds("failed")
    node.startService()
    await advance(clock, node, 0)
    await node.stopService()
    assert builds("failed") == failed_before + 1

    failures = [e for e in export_events(logged) if "log_failure" in e]
    assert failures and "2026-11-30" in failures[0]["day"], export_events(logged)
    assert await ledger.state(feed.FEED, NOV30) is None, "the claim is released"
    assert blocked.read_text().startswith("a file"), "nothing written"

    blocked.unlink()
    restarted = service(ledger, blocked, clock)
    restarted.startService()
    await advance(clock, restarted, 0)
    await restarted.stopService()
    assert feed.intervals(blocked, "jsonl", "2026-11-30") == ["hr=03", "hr=04"]


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("build", [True, False])
async def test_each_run_deletes_the_files_older_than_the_retention(tmp_path, build):
    for day in (date(2026, 11, 20), date(2026, 11, 25)):
        feed.write_atomically(feed.Partition("jsonl", day, 1).path(tmp_path), b"{}\n")
    ledger = MemoryExportLedger([message(created=at(NOV30, 5), spoken=at(NOV30, 5))] if not build else [])
    clock = clock_at(at(DEC1, 2))
    node = service(ledger, tmp_path, clock, retention=timedelta(days=7), build=build)
    node.startService()
    await advance(clock, node, 0)
    await advance(clock, node, 24 * 3600)
    await node.stopService()
    # The 20th is past retention; a node that does not build wrote nothing of the 30th.
    assert built_days(tmp_path) == ["2026-11-25"]
    if build:
        assert await ledger.state(feed.FEED, NOV30) == ("done", "node-a"), "an empty day is built: no files"
    else:
        assert await ledger.state(feed.FEED, NOV30) is None, "a node that does not build claims nothing"


@pytest_twisted.ensureDeferred
async def test_a_built_file_holds_the_rows_of_its_hour(tmp_path):
    messages = [attrs.evolve(message(created=at(NOV30, 13, m), spoken=at(NOV30, 13), text=f"t{m}"),
                             language="ko-KR") for m in (1, 2)]
    exporter = FeedExporter(MemoryExportLedger(messages), tmp_path, ("csv",), reactor)
    written = await exporter.build_day(NOV30)
    assert [p.name for p in written] == ["utterances_2026-11-30_13.csv.gz"]
    assert feed.decode(gzip.decompress(written[0].read_bytes()), "csv") == [feed.row(m) for m in messages]


@pytest_twisted.ensureDeferred
async def test_a_failed_purge_is_logged_and_the_day_is_built_all_the_same(tmp_path, logged, monkeypatch):
    def unreadable(root, older_than):
        raise PermissionError(13, "Permission denied", str(root))

    monkeypatch.setattr(feed, "purge_older", unreadable)
    ledger = MemoryExportLedger([message(created=at(NOV30, 6), spoken=at(NOV30, 6))])
    clock = clock_at(at(DEC1, 2))
    node = service(ledger, tmp_path, clock, retention=timedelta(days=7))
    node.startService()
    await advance(clock, node, 0)
    await node.stopService()
    failures = [e for e in export_events(logged) if "log_failure" in e]
    assert [f["log_failure"].type for f in failures] == [PermissionError], failures
    assert built_days(tmp_path) == ["2026-11-30"]
