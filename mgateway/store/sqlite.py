# -*- test-case-name: tests.test_store -*-
"""The embedded transcript store: one SQLite file in the gateway's data directory."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from twisted.logger import Logger

from mgateway.store.schema import Dialect, PooledTranscriptStore

log = Logger()

SQLITE = Dialect(param="?", begin_schema_change=("BEGIN IMMEDIATE",))

#: How long a connection keeps trying to put a new file in WAL mode while
#: other connections open it at the same moment, and how often.
WAL_SWITCH_SECONDS = 5.0
WAL_SWITCH_RETRY_SECONDS = 0.01


def write_ahead_log(connection: sqlite3.Connection) -> None:
    """
    Put the file in WAL mode. The switch needs the file to itself, and SQLite
    answers "database is locked" at once, without waiting out the busy
    timeout, when another connection opens the new file at the same moment:
    so the switch is retried for a while (this runs on a worker thread).
    """
    deadline = time.monotonic() + WAL_SWITCH_SECONDS
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() >= deadline:
                raise
            time.sleep(WAL_SWITCH_RETRY_SECONDS)


class SQLiteTranscriptStore(PooledTranscriptStore):
    """
    Transcripts in a SQLite file, in write-ahead-log mode.

    A single worker thread holds the only connection: SQLite serialises
    writers anyway, and one thread keeps every statement in order. With WAL,
    C{synchronous=NORMAL} loses no committed message when the process dies,
    only (at worst) the last ones on power loss, and readers in other
    processes never block the gateway's writes.
    """

    def __init__(self, path: Path | str, reactor):
        super().__init__(reactor, SQLITE, threads=1, name="sqlite-transcript-store")
        self.path = Path(path)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: autocommit, transactions only where migrate()
        # opens one. The connection is closed by close() on the reactor
        # thread once its worker has stopped, hence check_same_thread=False.
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA busy_timeout=5000")
        write_ahead_log(connection)
        connection.execute("PRAGMA synchronous=NORMAL")
        log.info("transcript store: SQLite {path}", path=str(self.path))
        return connection
