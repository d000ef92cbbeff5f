# -*- test-case-name: tests.test_export_service -*-
"""
L{IExportLedger} on the transcript store (SQLite or PostgreSQL).

A claim is checked and taken in one transaction that holds the store's
exclusive lock: C{BEGIN IMMEDIATE} on SQLite, and on PostgreSQL the
transaction-level advisory lock under which nodes also migrate the schema.
So of several nodes waking at 02:00 exactly one inserts the claim; the others
find it and leave the day alone. A claim that stays C{building} long after it
was taken belongs to a node that died: another node may take it over.
"""

from __future__ import annotations

from datetime import date, datetime

from twisted.internet.defer import Deferred
from zope.interface import implementer

from mgateway.interfaces import IExportLedger
from mgateway.store.schema import COLUMNS, PooledTranscriptStore, from_row, micros

BUILDING = "building"
DONE = "done"


@implementer(IExportLedger)
class StoreExportLedger:
    def __init__(self, store: PooledTranscriptStore):
        self._store = store
        self._dialect = store.dialect

    def messages_created(self, start: datetime, end: datetime) -> Deferred:
        p = self._dialect.param
        statement = (
            f"SELECT {', '.join(COLUMNS)} FROM messages"
            f" WHERE created_us >= {p} AND created_us < {p} ORDER BY created_us, message_id"
        )

        def select(connection) -> list:
            cursor = connection.cursor()
            cursor.execute(statement, (micros(start), micros(end)))
            return [from_row(r) for r in cursor.fetchall()]

        return self._store.run_with_connection(select)

    def claim(self, feed: str, day: date, node: str, now: datetime, stale_before: datetime) -> Deferred:
        p = self._dialect.param
        key = (feed, day.isoformat())

        def take(connection) -> bool:
            cursor = connection.cursor()
            for statement in self._dialect.begin_schema_change:
                cursor.execute(statement)
            try:
                cursor.execute(
                    f"SELECT state, claimed_us FROM export_claims WHERE feed = {p} AND day = {p}", key)
                found = cursor.fetchone()
                if found is None:
                    cursor.execute(
                        "INSERT INTO export_claims (feed, day, node, state, claimed_us)"
                        f" VALUES ({p}, {p}, {p}, {p}, {p})", (*key, node, BUILDING, micros(now)))
                    taken = True
                elif found[0] == BUILDING and found[1] < micros(stale_before):
                    cursor.execute(
                        f"UPDATE export_claims SET node = {p}, claimed_us = {p}"
                        f" WHERE feed = {p} AND day = {p}", (node, micros(now), *key))
                    taken = True
                else:
                    taken = False
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
            cursor.execute("COMMIT")
            return taken

        return self._store.run_with_connection(take)

    def finish(self, feed: str, day: date, node: str, now: datetime) -> Deferred:
        p = self._dialect.param
        return self._execute(
            f"UPDATE export_claims SET state = {p}, claimed_us = {p}"
            f" WHERE feed = {p} AND day = {p} AND node = {p}",
            (DONE, micros(now), feed, day.isoformat(), node))

    def release(self, feed: str, day: date, node: str) -> Deferred:
        p = self._dialect.param
        return self._execute(
            f"DELETE FROM export_claims WHERE feed = {p} AND day = {p} AND node = {p} AND state = {p}",
            (feed, day.isoformat(), node, BUILDING))

    def state(self, feed: str, day: date) -> Deferred:
        p = self._dialect.param

        def select(connection):
            cursor = connection.cursor()
            cursor.execute(
                f"SELECT state, node FROM export_claims WHERE feed = {p} AND day = {p}",
                (feed, day.isoformat()))
            found = cursor.fetchone()
            return None if found is None else tuple(found)

        return self._store.run_with_connection(select)

    def _execute(self, statement: str, params: tuple) -> Deferred:
        def run(connection) -> None:
            connection.cursor().execute(statement, params)

        return self._store.run_with_connection(run)
