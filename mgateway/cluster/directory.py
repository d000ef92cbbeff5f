# -*- test-case-name: tests.test_cluster_directory -*-
"""
The call directory in the transcript store's database (tables of schema
version 5): PostgreSQL shared by several nodes, or the embedded SQLite of one.

Its statements run on the store's thread pool (L{PooledTranscriptStore.
run_with_connection}), in its dialect; the upserts (C{INSERT ... ON CONFLICT})
are the same SQL in both databases.
"""

from __future__ import annotations

import json

from zope.interface import implementer

from mgateway.cluster.records import ENDED, CallRecord
from mgateway.interfaces import ICallDirectory

_CALL_COLUMNS = ("namespace", "guid", "node_id", "address", "legs", "state", "stream_ids", "seq", "updated_us")


@implementer(ICallDirectory)
class SQLCallDirectory:
    """@param store: a started or starting L{mgateway.store.schema.PooledTranscriptStore}."""

    def __init__(self, store):
        self._store = store
        self._p = store.dialect.param

    def publish(self, record: CallRecord):
        p = self._p
        columns = ", ".join(_CALL_COLUMNS)
        updates = ", ".join(f"{c} = excluded.{c}" for c in _CALL_COLUMNS[2:])
        statement = (
            f"INSERT INTO cluster_calls ({columns}) VALUES ({', '.join([p] * len(_CALL_COLUMNS))})"
            f" ON CONFLICT (namespace, guid) DO UPDATE SET {updates}"
            " WHERE cluster_calls.node_id <> excluded.node_id OR cluster_calls.seq < excluded.seq"
        )
        row = (record.namespace, record.guid, record.node_id, record.address, json.dumps(list(record.legs)),
               record.state, json.dumps(dict(record.stream_ids)), record.seq, record.updated_us)
        return self._execute(statement, row)

    def owner(self, namespace: str, guid: str):
        p = self._p
        statement = (
            f"SELECT {', '.join('c.' + c for c in _CALL_COLUMNS)}, n.heartbeat_us"
            " FROM cluster_calls c LEFT JOIN cluster_nodes n ON n.node_id = c.node_id"
            f" WHERE c.namespace = {p} AND c.guid = {p}"
        )

        def select(connection):
            cursor = connection.cursor()
            cursor.execute(statement, (namespace, guid))
            row = cursor.fetchone()
            if row is None:
                return None
            legs, stream_ids = json.loads(row[4]), json.loads(row[6])
            return CallRecord(row[0], row[1], row[2], row[3], tuple(legs), row[5],
                              tuple(sorted(stream_ids.items())), row[7], row[8], row[9])

        return self._store.run_with_connection(select)

    def heartbeat(self, node_id: str, address: str, now_us: int):
        p = self._p
        statement = (
            f"INSERT INTO cluster_nodes (node_id, address, heartbeat_us) VALUES ({p}, {p}, {p})"
            " ON CONFLICT (node_id) DO UPDATE SET address = excluded.address, heartbeat_us = excluded.heartbeat_us"
        )
        return self._execute(statement, (node_id, address, now_us))

    def end_dead(self, node_id: str, now_us: int, dead_after_us: int):
        p = self._p
        cutoff = now_us - dead_after_us

        def sweep(connection):
            cursor = connection.cursor()
            cursor.execute(
                f"UPDATE cluster_calls SET state = {p}, updated_us = {p}"
                f" WHERE state <> {p} AND node_id <> {p} AND node_id IN"
                f" (SELECT node_id FROM cluster_nodes WHERE heartbeat_us < {p})",
                (ENDED, now_us, ENDED, node_id, cutoff))
            ended = cursor.rowcount
            cursor.execute(f"DELETE FROM cluster_calls WHERE state = {p} AND updated_us < {p}", (ENDED, cutoff))
            return ended

        return self._store.run_with_connection(sweep)

    def end_node(self, node_id: str, now_us: int):
        p = self._p
        statement = f"UPDATE cluster_calls SET state = {p}, updated_us = {p} WHERE node_id = {p}"
        return self._execute(statement, (ENDED, now_us, node_id))

    def _execute(self, statement: str, params: tuple):
        """Run one statement; fires with None."""

        def execute(connection) -> None:
            connection.cursor().execute(statement, params)

        return self._store.run_with_connection(execute)
