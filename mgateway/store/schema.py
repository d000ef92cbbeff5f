# -*- test-case-name: tests.test_store -*-
"""
The transcript table, shared by the SQLite and PostgreSQL stores.

One portable schema (TEXT and BIGINT only), its migrations, its statements and
L{PooledTranscriptStore}: the part of a store that runs those statements on a
dedicated thread pool, one DB-API connection per worker thread. A backend only
says how to connect, how many threads to use and how its SQL differs
(L{Dialect}).

Times are stored as BIGINT microseconds since the Unix epoch, UTC: exact for a
Python L{datetime}, so a message reads back equal to the one stored, and they
compare and index the same way in both databases.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs
from twisted.internet.defer import Deferred, DeferredList, fail
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from mgateway.interfaces import ITranscriptStore, IWebhookFailureLog
from mgateway.store.configuration import ConfigurationTables
from mgateway.store.failure import WebhookFailure
from mgateway.store.message import StoredMessage

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)

#: DDL of each schema version, oldest first: version N is C{MIGRATIONS[N - 1]}.
#: A later version is a new entry here, never an edit of an older one.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """
        CREATE TABLE messages (
            message_id TEXT PRIMARY KEY,
            namespace TEXT NOT NULL,
            conversation_id TEXT NOT NULL,
            stream_id TEXT NOT NULL,
            role TEXT NOT NULL,
            sender_external_id TEXT,
            text TEXT NOT NULL,
            start_ms BIGINT NOT NULL,
            end_ms BIGINT NOT NULL,
            created_us BIGINT NOT NULL,
            spoken_us BIGINT NOT NULL
        )
        """,
        """
        CREATE INDEX messages_by_conversation
            ON messages (conversation_id, spoken_us, created_us)
        """,
        "CREATE INDEX messages_by_created ON messages (created_us)",
    ),
    (
        # The language of the stream, for the File Exporter's utterances feed;
        # NULL for messages stored before it was recorded.
        "ALTER TABLE messages ADD COLUMN language TEXT",
        # One row per feed and day: which node builds (or built) it, so that
        # of several nodes sharing the database one builds and the others see
        # it (mgateway.export.ledger).
        """
        CREATE TABLE export_claims (
            feed TEXT NOT NULL,
            day TEXT NOT NULL,
            node TEXT NOT NULL,
            state TEXT NOT NULL,
            claimed_us BIGINT NOT NULL,
            PRIMARY KEY (feed, day)
        )
        """,
    ),
    (
        """
        CREATE TABLE webhook_failures (
            conversation_id TEXT NOT NULL,
            stream_id TEXT NOT NULL,
            message_id TEXT NOT NULL,
            start_ms BIGINT NOT NULL,
            end_ms BIGINT NOT NULL,
            target TEXT NOT NULL,
            status BIGINT,
            error TEXT NOT NULL,
            reason TEXT NOT NULL,
            at_us BIGINT NOT NULL
        )
        """,
        """
        CREATE INDEX webhook_failures_by_conversation
            ON webhook_failures (conversation_id, at_us)
        """,
        "CREATE INDEX webhook_failures_by_time ON webhook_failures (at_us)",
    ),
    (
        # What a request allowed beyond the text: the unredacted text and
        # the detailed tokens of each message.
        "ALTER TABLE messages ADD COLUMN unredacted_text TEXT",
        "ALTER TABLE messages ADD COLUMN tokens_json TEXT",
        # The Configuration API's custom vocabulary and redaction policies,
        # shared by every node of the same database.
        """
        CREATE TABLE custom_vocabularies (
            vocabulary_id TEXT PRIMARY KEY,
            phrase TEXT NOT NULL,
            sounds_like TEXT NOT NULL,
            category TEXT,
            created_us BIGINT NOT NULL
        )
        """,
        """
        CREATE TABLE redaction_policies (
            entity_id TEXT PRIMARY KEY,
            policies TEXT NOT NULL,
            updated_us BIGINT NOT NULL
        )
        """,
    ),
    (
        # Several nodes on one database (mgateway.cluster): each node's
        # heartbeat and the address the others carry requests to, ...
        """
        CREATE TABLE cluster_nodes (
            node_id TEXT PRIMARY KEY,
            address TEXT NOT NULL,
            heartbeat_us BIGINT NOT NULL
        )
        """,
        # ... which node holds which call's media, its legs, state and the
        # streamId of each role (JSON) ...
        """
        CREATE TABLE cluster_calls (
            namespace TEXT NOT NULL,
            guid TEXT NOT NULL,
            node_id TEXT NOT NULL,
            address TEXT NOT NULL,
            legs TEXT NOT NULL,
            state TEXT NOT NULL,
            stream_ids TEXT NOT NULL,
            seq BIGINT NOT NULL,
            updated_us BIGINT NOT NULL,
            PRIMARY KEY (namespace, guid)
        )
        """,
        "CREATE INDEX cluster_calls_by_node ON cluster_calls (node_id)",
        # ... and the secrets every node must share (the streaming-URL
        # signing key), created once by whichever node needs one first.
        """
        CREATE TABLE shared_secrets (
            name TEXT PRIMARY KEY,
            value TEXT NOT NULL
        )
        """,
    ),
)

#: Columns in the order of L{StoredMessage}'s fields.
COLUMNS = (
    "message_id",
    "namespace",
    "conversation_id",
    "stream_id",
    "role",
    "sender_external_id",
    "text",
    "start_ms",
    "end_ms",
    "created_us",
    "spoken_us",
    "language",
    "unredacted_text",
    "tokens_json",
)

#: The columns holding times, and the L{StoredMessage} field of each.
_TIME_COLUMNS = {"created_us": "created", "spoken_us": "spoken"}


#: Columns of C{webhook_failures} in the order of L{WebhookFailure}'s fields.
FAILURE_COLUMNS = ("conversation_id", "stream_id", "message_id", "start_ms", "end_ms", "target", "status",
                   "error", "reason", "at_us")


class StoreError(Exception):
    """The transcript store cannot do what was asked (closed, or a schema it does not know)."""


@attrs.frozen
class Dialect:
    """
    What differs between the SQL of two databases.

    @ivar param: the DB-API placeholder (C{?} or C{%s}).
    @ivar begin_schema_change: statements that open the transaction in which
        the schema is checked and migrated, holding a lock that keeps other
        processes sharing the database out until it commits.
    """

    param: str
    begin_schema_change: tuple[str, ...]

    def insert(self, table: str = "messages", columns: tuple[str, ...] = COLUMNS) -> str:
        values = ", ".join([self.param] * len(columns))
        return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({values})"

    def select(self, table: str = "messages", columns: tuple[str, ...] = COLUMNS,
               order: str = "spoken_us, created_us, message_id") -> str:
        """A conversation's rows in C{order}, at most a limit."""
        return (
            f"SELECT {', '.join(columns)} FROM {table} WHERE conversation_id = {self.param}"
            f" ORDER BY {order} LIMIT {self.param}"
        )

    def delete_older(self, table: str = "messages", column: str = "created_us") -> str:
        return f"DELETE FROM {table} WHERE {column} < {self.param}"

    def record_version(self) -> str:
        return f"INSERT INTO schema_version (version) VALUES ({self.param})"


def micros(when: datetime) -> int:
    """Microseconds since the epoch of an aware datetime."""
    return (when - EPOCH) // _MICROSECOND


def moment(value: int) -> datetime:
    """The aware UTC datetime of microseconds since the epoch."""
    return EPOCH + value * _MICROSECOND


def to_row(message: StoredMessage) -> tuple:
    """The values of L{COLUMNS} for C{message}."""
    return tuple(
        micros(getattr(message, _TIME_COLUMNS[column])) if column in _TIME_COLUMNS
        else getattr(message, column)
        for column in COLUMNS
    )


def from_row(row: Sequence) -> StoredMessage:
    """The message of a row whose values are those of L{COLUMNS}."""
    return StoredMessage(**{
        _TIME_COLUMNS.get(column, column): moment(value) if column in _TIME_COLUMNS else value
        for column, value in zip(COLUMNS, row)
    })


def migrate(connection: Any, dialect: Dialect) -> None:
    """
    Bring the schema of an autocommit connection up to the latest version.

    @raise StoreError: the database holds a newer schema than this code knows.
    """
    cursor = connection.cursor()
    for statement in dialect.begin_schema_change:
        cursor.execute(statement)
    try:
        cursor.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        cursor.execute("SELECT MAX(version) FROM schema_version")
        current = cursor.fetchone()[0] or 0
        if current > len(MIGRATIONS):
            raise StoreError(
                f"the transcript database has schema version {current}; "
                f"this gateway knows versions up to {len(MIGRATIONS)}"
            )
        for version in range(current + 1, len(MIGRATIONS) + 1):
            for statement in MIGRATIONS[version - 1]:
                cursor.execute(statement)
            cursor.execute(dialect.record_version(), (version,))
    except BaseException:
        cursor.execute("ROLLBACK")
        raise
    cursor.execute("COMMIT")


@implementer(ITranscriptStore, IWebhookFailureLog)
class PooledTranscriptStore(ConfigurationTables):
    """
    An L{ITranscriptStore} whose every statement runs on its own thread pool.

    Each worker thread opens its own connection the first time it needs one
    (and again if the database dropped it); the first connection of the store
    also migrates the schema, so no statement can reach a table before it
    exists, even when work is queued before L{start} has finished. Connections
    are in autocommit mode: every statement is its own transaction.

    The pool starts with L{start} or with the first piece of work; L{close}
    lets the work already handed over finish, then stops the threads and
    closes the connections. Anything asked after L{close} fails with
    L{StoreError}.
    """

    def __init__(self, reactor, dialect: Dialect, threads: int, name: str):
        self._reactor = reactor
        self._dialect = dialect
        self._pool = ThreadPool(minthreads=threads, maxthreads=threads, name=name)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: set = set()
        self._migrated = False
        self._running: set[Deferred] = set()
        self._closed = False

    def _connect(self) -> Any:
        """Open one autocommit DB-API connection (on a worker thread)."""
        raise NotImplementedError

    def _usable(self, connection: Any) -> bool:
        """Whether a connection opened earlier can still be used."""
        return True

    def start(self) -> Deferred:
        """Start the threads, connect and migrate the schema; fires with L{None}."""

        def connect() -> None:
            self._connection()

        return self._run(connect)

    def ping(self) -> Deferred:
        """One round trip to the database (C{SELECT 1}); fires with L{None}, or fails."""

        def select_one() -> None:
            cursor = self._connection().cursor()
            cursor.execute("SELECT 1")
            cursor.fetchall()

        return self._run(select_one)

    def add(self, message: StoredMessage) -> Deferred:
        def insert() -> None:
            self._execute(self._dialect.insert(), to_row(message))

        return self._run(insert)

    def messages(self, conversation_id: str, limit: int) -> Deferred:
        def select() -> list[StoredMessage]:
            cursor = self._connection().cursor()
            cursor.execute(self._dialect.select(), (conversation_id, limit))
            return [from_row(row) for row in cursor.fetchall()]

        return self._run(select)

    def purge(self, older_than: datetime) -> Deferred:
        """Also forgets the webhook failures recorded before C{older_than}."""
        def delete() -> int:
            self._execute(self._dialect.delete_older("webhook_failures", "at_us"),
                          (micros(older_than),))
            return self._execute(self._dialect.delete_older(), (micros(older_than),))

        return self._run(delete)

    def record(self, failure: WebhookFailure) -> Deferred:
        def insert() -> None:
            row = attrs.astuple(failure, recurse=False)
            self._execute(self._dialect.insert("webhook_failures", FAILURE_COLUMNS), (*row[:-1], micros(failure.at)))

        return self._run(insert)

    def webhook_failures(self, conversation_id: str, limit: int) -> Deferred:
        def select() -> list[WebhookFailure]:
            cursor = self._connection().cursor()
            cursor.execute(self._dialect.select("webhook_failures", FAILURE_COLUMNS, "at_us DESC"), (conversation_id, limit))
            return [WebhookFailure(*row[:-1], at=moment(row[-1])) for row in cursor.fetchall()]

        return self._run(select)

    def close(self) -> Deferred:
        if self._closed:
            return fail(StoreError("the transcript store is already closed"))
        self._closed = True
        finished = DeferredList(list(self._running))
        finished.addCallback(lambda _: self._release())
        return finished

    def _release(self) -> None:
        # Every piece of work has finished, so the threads are idle and
        # joining them does not hold up the reactor.
        self._pool.stop()
        for connection in self._connections:
            connection.close()
        self._connections.clear()

    def _run(self, work: Callable[[], Any]) -> Deferred:
        if self._closed:
            return fail(StoreError("the transcript store is closed"))
        if not self._pool.started:
            self._pool.start()
        # Tracked apart from the caller's Deferred, whose callbacks close()
        # neither waits for nor consumes.
        done = Deferred()
        self._running.add(done)

        def finished(result):
            self._running.discard(done)
            done.callback(None)
            return result

        return deferToThreadPool(self._reactor, self._pool, work).addBoth(finished)

    @property
    def dialect(self) -> Dialect:
        return self._dialect

    def run_with_connection(self, work: Callable[[Any], Any]) -> Deferred:
        """
        Run C{work(connection)} on a worker thread with its autocommit
        connection, the schema migrated; fires with what it returns. For
        statements of other modules on the same tables (the File Exporter's).
        """
        return self._run(lambda: work(self._connection()))

    def _execute(self, statement: str, params: tuple) -> int:
        cursor = self._connection().cursor()
        cursor.execute(statement, params)
        return cursor.rowcount

    def _connection(self) -> Any:
        """This worker thread's connection, opened (and the schema migrated) on first use."""
        connection = getattr(self._local, "connection", None)
        if connection is None or not self._usable(connection):
            dropped, connection = connection, self._connect()
            self._local.connection = connection
            with self._lock:
                self._connections.discard(dropped)
                self._connections.add(connection)
        if not self._migrated:
            with self._lock:
                if not self._migrated:
                    migrate(connection, self._dialect)
                    self._migrated = True
        return connection
