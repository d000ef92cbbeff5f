# -*- test-case-name: tests.test_store -*-
"""The embedded transcript store: one SQLite file in the gateway's data directory."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from twisted.logger import Logger

from mgateway.store.schema import Dialect, PooledTranscriptStore

log = Logger()

SQLITE = Dialect(param="?", begin_schema_change=("BEGIN IMMEDIATE",))


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
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute("PRAGMA busy_timeout=5000")
        log.info("transcript store: SQLite {path}", path=str(self.path))
        return connection
