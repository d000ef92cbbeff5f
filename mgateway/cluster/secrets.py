# -*- test-case-name: tests.test_cluster_directory -*-
"""Secrets every node of one database must share, created once by the first node that needs one."""

from __future__ import annotations

import secrets

#: The name of the streaming-URL and File Exporter signing key.
SIGNING_KEY = "token-signing"


def shared_secret(store, name: str):
    """
    The secret C{name} of the store's database: a new random one is offered
    and the one stored first wins, so nodes starting together agree. Fires
    with its bytes.

    @param store: a L{mgateway.store.schema.PooledTranscriptStore}.
    """
    p = store.dialect.param

    def get_or_create(connection) -> bytes:
        cursor = connection.cursor()
        cursor.execute(f"INSERT INTO shared_secrets (name, value) VALUES ({p}, {p}) ON CONFLICT (name) DO NOTHING",
                       (name, secrets.token_hex(32)))
        cursor.execute(f"SELECT value FROM shared_secrets WHERE name = {p}", (name,))
        return cursor.fetchone()[0].encode("utf-8")

    return store.run_with_connection(get_or_create)
