"""
The transcript stores, each test run against SQLite, a real PostgreSQL server
and the shipped in-memory fake, and the retention service that purges them.
"""

from __future__ import annotations

import random
import sqlite3
import threading
from collections.abc import Callable
from contextlib import closing
from datetime import datetime, timedelta, timezone

import attrs
import psycopg
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, gatherResults
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from ulid import ULID
from zope.interface.verify import verifyObject

from mgateway.interfaces import ITranscriptStore
from mgateway.store.message import StoredMessage
from mgateway.store.postgres import PostgresTranscriptStore
from mgateway.store.retention import RetentionService
from mgateway.store.schema import StoreError
from mgateway.store.sqlite import SQLiteTranscriptStore, write_ahead_log
from mgateway.testing import MemoryTranscriptStore

T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
KST = timezone(timedelta(hours=9))


def message(
    conversation_id: str = "CONV1",
    *,
    spoken: datetime = T0,
    created: datetime | None = None,
    message_id: str | None = None,
    stream_id: str = "stream-agent",
    role: str = "agent",
    text: str = "hello",
) -> StoredMessage:
    created = created or spoken
    return StoredMessage(
        message_id=message_id or str(ULID.from_datetime(created)),
        namespace="mg",
        conversation_id=conversation_id,
        stream_id=stream_id,
        role=role,
        sender_external_id=f"{role}-7",
        text=text,
        start_ms=0,
        end_ms=1500,
        created=created,
        spoken=spoken,
    )


@attrs.frozen
class Backend:
    """Opens stores on one database, and runs SQL on it behind their back."""

    name: str
    open: Callable[[], ITranscriptStore]
    execute: Callable[[str], None] | None


def sqlite_backend(path) -> Backend:
    def execute(statement: str) -> None:
        with closing(sqlite3.connect(path, isolation_level=None)) as connection:
            connection.execute(statement)

    return Backend("sqlite", lambda: SQLiteTranscriptStore(path, reactor), execute)


def postgres_backend(dsn: str) -> Backend:
    def execute(statement: str) -> None:
        with psycopg.connect(dsn, autocommit=True) as connection:
            connection.execute(statement)

    return Backend("postgresql", lambda: PostgresTranscriptStore(dsn, reactor), execute)


def memory_backend() -> Backend:
    """The fake: stores opened on one set of lists, as on one database; no SQL."""
    rows: list = []
    vocabularies: list = []
    policies: dict = {}
    return Backend("memory", lambda: MemoryTranscriptStore(rows, vocabularies=vocabularies, policies=policies),
                   None)


def open_backend(request, tmp_path) -> Backend:
    if request.param == "sqlite":
        return sqlite_backend(tmp_path / "not-yet" / "transcripts.sqlite3")
    if request.param == "memory":
        return memory_backend()
    return postgres_backend(request.getfixturevalue("fresh_postgres_dsn"))


@pytest.fixture(params=["sqlite", "postgresql", "memory"])
def backend(request, tmp_path) -> Backend:
    return open_backend(request, tmp_path)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, tmp_path) -> Backend:
    """The real stores only: the tests that run SQL behind the store's back."""
    return open_backend(request, tmp_path)


@pytest_twisted.async_yield_fixture
async def store(backend):
    opened = backend.open()
    await opened.start()
    yield opened
    await opened.close()


async def add_all(store, messages) -> None:
    await gatherResults([store.add(m) for m in messages])


def test_stores_provide_the_store_interface(backend):
    verifyObject(ITranscriptStore, backend.open())


@pytest_twisted.ensureDeferred
async def test_every_field_reads_back_as_stored(store):
    stored = [
        attrs.evolve(
            message(spoken=T0.astimezone(KST), created=T0 + timedelta(microseconds=1)),
            text="네, 주문 번호가 어떻게 되세요?",
            start_ms=10_799_000,
            end_ms=10_800_000,
        ),
        attrs.evolve(
            message(spoken=T0 + timedelta(seconds=1), stream_id="stream-customer", role="customer"),
            sender_external_id=None,
        ),
    ]
    await add_all(store, stored)

    read = await store.messages("CONV1", 1000)

    assert read == stored
    for m in read:
        assert m.created.tzinfo is timezone.utc and m.spoken.tzinfo is timezone.utc, m
    assert read[0].spoken.microsecond == T0.microsecond


@pytest_twisted.ensureDeferred
async def test_messages_come_oldest_first_by_spoken_then_created_then_id(store):
    second = timedelta(seconds=1)
    tie = T0 + 2 * second
    expected = [
        message(spoken=T0, role="customer", stream_id="stream-customer"),
        message(spoken=T0 + second, created=T0 + 5 * second),
        message(spoken=tie, created=T0 + 3 * second, message_id="01HX0000000000000000000002"),
        message(spoken=tie, created=T0 + 4 * second, message_id="01HX0000000000000000000001"),
        message(spoken=tie, created=T0 + 4 * second, message_id="01HX0000000000000000000003"),
        message(spoken=T0 + 3 * second, created=tie, role="customer", stream_id="leg2"),
    ]
    shuffled = expected[:]
    random.Random(7).shuffle(shuffled)
    for m in shuffled:
        await store.add(m)

    assert await store.messages("CONV1", 1000) == expected


@pytest_twisted.ensureDeferred
async def test_at_most_limit_messages_the_oldest_ones(store):
    stored = [
        message(spoken=T0 + timedelta(seconds=i), text=f"utterance {i}") for i in range(1001)
    ]
    await add_all(store, stored)

    read = await store.messages("CONV1", 1000)
    assert [m.text for m in read] == [m.text for m in stored[:1000]]
    assert [m.text for m in await store.messages("CONV1", 2)] == ["utterance 0", "utterance 1"]


@pytest_twisted.ensureDeferred
async def test_conversations_do_not_see_each_others_messages(store):
    first = [message("CONV1", spoken=T0 + timedelta(seconds=i)) for i in range(0, 6, 2)]
    second = [message("CONV2", spoken=T0 + timedelta(seconds=i)) for i in range(1, 6, 2)]
    await add_all(store, first + second)

    assert await store.messages("CONV1", 1000) == first
    assert await store.messages("CONV2", 1000) == second
    assert await store.messages("CONV3", 1000) == []


@pytest_twisted.ensureDeferred
async def test_purge_deletes_only_messages_created_before_the_cutoff(store):
    cutoff = T0
    old = [
        message("CONV1", created=cutoff - timedelta(days=3)),
        message("CONV2", created=cutoff - timedelta(microseconds=1)),
    ]
    kept_1 = message("CONV1", spoken=T0 - timedelta(days=9), created=cutoff)
    kept_2 = message("CONV2", created=cutoff + timedelta(days=1))
    await add_all(store, [*old, kept_1, kept_2])

    assert await store.purge(cutoff) == 2
    assert await store.messages("CONV1", 1000) == [kept_1]
    assert await store.messages("CONV2", 1000) == [kept_2]
    assert await store.purge(cutoff) == 0


@pytest_twisted.ensureDeferred
async def test_messages_survive_closing_and_reopening(backend):
    stored = [message(spoken=T0 + timedelta(seconds=i)) for i in range(3)]
    first = backend.open()
    await first.start()
    await add_all(first, stored)
    await first.close()

    reopened = backend.open()
    await reopened.start()
    try:
        assert await reopened.messages("CONV1", 1000) == stored
    finally:
        await reopened.close()


@pytest_twisted.ensureDeferred
async def test_close_waits_for_writes_already_handed_over(backend):
    first = backend.open()
    writes = [first.add(message(spoken=T0 + timedelta(seconds=i))) for i in range(50)]
    await first.close()
    assert all(w.called for w in writes)

    reopened = backend.open()
    try:
        assert len(await reopened.messages("CONV1", 1000)) == 50
    finally:
        await reopened.close()


@pytest_twisted.ensureDeferred
async def test_a_closed_store_refuses_work(backend):
    closed = backend.open()
    await closed.start()
    await closed.close()

    for work in (
        lambda: closed.add(message()),
        lambda: closed.messages("CONV1", 10),
        lambda: closed.purge(T0),
        closed.close,
    ):
        with pytest.raises(StoreError):
            await work()


@pytest_twisted.ensureDeferred
async def test_a_database_with_a_newer_schema_is_refused(database):
    first = database.open()
    await first.start()
    await first.close()
    database.execute("INSERT INTO schema_version (version) VALUES (99)")

    newer = database.open()
    with pytest.raises(StoreError, match="schema version 99"):
        await newer.start()
    await newer.close()


@pytest_twisted.ensureDeferred
async def test_sqlite_creates_its_directory_and_logs_ahead_until_closed(tmp_path):
    path = tmp_path / "var" / "db" / "transcripts.sqlite3"
    wal = path.with_name(path.name + "-wal")
    store = SQLiteTranscriptStore(path, reactor)
    await store.add(message())
    assert wal.exists()

    await store.close()
    assert not wal.exists(), "closing the last connection checkpoints and removes the log"
    with closing(sqlite3.connect(path)) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)


class WatchedStore:
    """
    Hands purges to a real store and keeps their Deferreds for the test to
    wait on; results put in C{scripted} are handed out first instead.
    """

    def __init__(self, store: ITranscriptStore):
        self.store = store
        self.purges: list[Deferred] = []
        self.scripted: list[Deferred] = []

    def purge(self, older_than: datetime) -> Deferred:
        d = self.scripted.pop(0) if self.scripted else self.store.purge(older_than)
        self.purges.append(d)
        return d


@pytest.fixture
def logged():
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def purged_counts(events) -> list[int]:
    return [e["count"] for e in retention_events(events) if "count" in e]


def purge_failures(events) -> list[dict]:
    return [e for e in retention_events(events) if "log_failure" in e]


def retention_events(events) -> list[dict]:
    return [e for e in events if e.get("log_namespace") == "mgateway.store.retention"]


@pytest_twisted.ensureDeferred
async def test_retention_purges_at_start_and_then_every_interval(store, logged):
    now = T0
    day = timedelta(days=1)
    await add_all(store, [message(spoken=T0 - age * day) for age in (10, 5, 1)])
    watched = WatchedStore(store)
    clock = Clock()
    service = RetentionService(watched, clock, timedelta(days=7), 3600, now=lambda: now)

    service.startService()
    await watched.purges[0]
    assert purged_counts(logged) == [1]
    assert [m.spoken for m in await store.messages("CONV1", 10)] == [T0 - 5 * day, T0 - day]

    now = T0 + 3 * day
    clock.advance(3599)
    assert len(watched.purges) == 1
    clock.advance(1)
    await watched.purges[1]
    assert purged_counts(logged) == [1, 1]
    assert [m.spoken for m in await store.messages("CONV1", 10)] == [T0 - day]

    await service.stopService()
    clock.advance(3600)
    assert len(watched.purges) == 2


@pytest_twisted.ensureDeferred
async def test_retention_logs_a_failed_purge_and_keeps_going(store, logged):
    await store.add(message(spoken=T0 - timedelta(days=30)))
    watched = WatchedStore(store)
    watched.scripted.append(fail(StoreError("database unavailable")))
    clock = Clock()
    service = RetentionService(watched, clock, timedelta(days=7), 60, now=lambda: T0)

    service.startService()
    [failure] = purge_failures(logged)
    assert failure["log_failure"].check(StoreError), failure

    clock.advance(60)
    await watched.purges[1]
    assert purged_counts(logged) == [1]
    assert await store.messages("CONV1", 10) == []
    await service.stopService()


def test_stopping_retention_waits_for_the_purge_in_progress(logged):
    watched = WatchedStore(store=None)
    in_progress = Deferred()
    watched.scripted.append(in_progress)
    service = RetentionService(watched, Clock(), timedelta(days=7), 60, now=lambda: T0)
    service.startService()

    stopped = service.stopService()
    assert not stopped.called
    in_progress.callback(4)
    assert stopped.called
    assert purged_counts(logged) == [4]


@pytest_twisted.ensureDeferred
async def test_a_ping_answers_while_the_store_is_open_and_fails_once_closed(backend):
    opened = backend.open()
    await opened.start()
    assert await opened.ping() is None
    await opened.close()
    with pytest.raises(StoreError):
        await opened.ping()


def test_connections_opening_a_new_file_at_the_same_moment_all_switch_it_to_wal(tmp_path):
    """
    SQLite refuses the WAL switch at once ("database is locked") to a
    connection that races another one on a new file; several stores (or
    nodes of a test) opening one file together must all get it.
    """
    for trial in range(200):
        path = tmp_path / f"race-{trial}.db"
        together = threading.Barrier(4)
        modes, errors = [], []

        def open_and_switch():
            connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            together.wait()
            try:
                write_ahead_log(connection)
                modes.append(connection.execute("PRAGMA journal_mode").fetchone()[0])
            except sqlite3.OperationalError as e:
                errors.append(e)
            finally:
                connection.close()

        threads = [threading.Thread(target=open_and_switch) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == [] and modes == ["wal"] * 4, (trial, errors, modes)
