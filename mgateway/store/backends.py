# -*- test-case-name: tests.test_store,tests.test_lifecycle -*-
"""The transcript store a configuration names: SQLite (embedded) or PostgreSQL."""

from __future__ import annotations

from pathlib import Path


def open_store(backend: str, *, dsn: str, sqlite_path: Path, reactor):
    """
    An L{mgateway.interfaces.ITranscriptStore}, not yet started. The driver
    of the backend not chosen is never imported (psycopg is an extra).
    """
    if backend == "postgresql":
        from mgateway.store.postgres import PostgresTranscriptStore

        return PostgresTranscriptStore(dsn, reactor)
    from mgateway.store.sqlite import SQLiteTranscriptStore

    return SQLiteTranscriptStore(sqlite_path, reactor)
