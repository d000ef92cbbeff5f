# -*- test-case-name: tests.test_store -*-
"""The shared transcript store: PostgreSQL, for several gateway nodes."""

from __future__ import annotations

import psycopg
from twisted.logger import Logger

from mgateway.store.schema import Dialect, PooledTranscriptStore

log = Logger()

#: Key of the transaction-level advisory lock under which a node migrates the
#: schema, so that nodes starting together do not race to create it. Any
#: constant does; this one is "asapp-mg" read as ASCII.
SCHEMA_LOCK_KEY = int.from_bytes(b"asapp-mg", "big")

POSTGRES = Dialect(
    param="%s",
    begin_schema_change=("BEGIN", f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK_KEY})"),
)


class PostgresTranscriptStore(PooledTranscriptStore):
    """
    Transcripts in PostgreSQL, through psycopg 3.

    A small dedicated thread pool with one connection per worker thread,
    rather than C{psycopg_pool}: the blocking calls need threads of their own
    anyway, so pairing each thread with a connection gives as many statements
    in flight as there are threads, with no checkout contention and no extra
    dependency (and no pool threads of its own). A connection that the server
    dropped is replaced on its thread's next statement.

    @param dsn: a libpq connection string or URI.
    @param threads: worker threads, and so connections, of this node.
    """

    def __init__(self, dsn: str, reactor, threads: int = 4):
        super().__init__(reactor, POSTGRES, threads=threads, name="postgres-transcript-store")
        self._dsn = dsn

    def _connect(self) -> psycopg.Connection:
        connection = psycopg.connect(self._dsn, autocommit=True)
        log.info(
            "transcript store: PostgreSQL {host}:{port}/{dbname}",
            host=connection.info.host,
            port=connection.info.port,
            dbname=connection.info.dbname,
        )
        return connection

    def _usable(self, connection: psycopg.Connection) -> bool:
        return not connection.closed
