# -*- test-case-name: tests.test_config -*-
"""The C{[cluster]} section: this node's place among several sharing one PostgreSQL."""

from __future__ import annotations

import attrs

from mgateway.config.table import _Table


@attrs.frozen
class ClusterConfig:
    """
    @ivar node_id: this node's name among the nodes sharing the database;
        empty for a single node (nothing is recorded or forwarded).
    @ivar internal_url: the base URL (C{http://host:port}) where the other
        nodes reach this node's HTTP listener to carry a start or stop to it.
    @ivar secret: the key shared by every node, which signs (HMAC-SHA256)
        the requests carried between them.
    @ivar heartbeat_seconds: how often this node says it is alive and looks
        for dead ones.
    @ivar dead_after_seconds: how long after its last heartbeat a node is
        dead, and its calls ended.
    """

    node_id: str = ""
    internal_url: str = attrs.field(default="")
    secret: str = attrs.field(default="", repr=False)
    heartbeat_seconds: float = 5.0
    dead_after_seconds: float = 30.0

    @property
    def enabled(self) -> bool:
        return bool(self.node_id)


def _cluster(table: _Table, store_backend: str) -> ClusterConfig:
    """C{[cluster]}, checked against the C{[store] backend} the nodes would share."""
    node_id = table.string("node_id")
    config = ClusterConfig(
        node_id=node_id,
        internal_url=table.string("internal_url").rstrip("/"),
        secret=table.string("secret"),
        heartbeat_seconds=table.number("heartbeat_seconds", minimum=0, exclusive=True),
        dead_after_seconds=table.number("dead_after_seconds", minimum=0, exclusive=True),
    )
    if not node_id:
        return config
    if store_backend != "postgresql":
        raise table.error("node_id", 'several nodes share state only with store.backend = "postgresql"')
    if not config.internal_url.startswith(("http://", "https://")):
        raise table.error("internal_url", "must be this node's http:// or https:// URL when node_id is set")
    if len(config.secret) < 16:
        raise table.error("secret", "must be at least 16 characters when node_id is set")
    if config.dead_after_seconds <= config.heartbeat_seconds:
        raise table.error("dead_after_seconds", "must be longer than heartbeat_seconds")
    return config
