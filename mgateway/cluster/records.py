# -*- test-case-name: tests.test_cluster_directory -*-
"""What the call directory holds of a call, and how a live call becomes one."""

from __future__ import annotations

import attrs

#: The state of a call whose media is gone, or whose node died.
ENDED = "ended"


@attrs.frozen
class CallRecord:
    """
    One call in the directory.

    @ivar address: the base URL of the owner's HTTP listener (C{[cluster]
        internal_url}), where start and stop are carried.
    @ivar legs: the media legs attached (SIPREC labels, Twilio tracks ...).
    @ivar state: a L{mgateway.calls.registry.CallState} value, or L{ENDED}.
    @ivar stream_ids: role -> C{streamId}.
    @ivar seq: orders the records one node publishes of a call.
    @ivar heartbeat_us: the owner's last heartbeat (read back only; None
        when the node never beat).
    """

    namespace: str
    guid: str
    node_id: str
    address: str
    legs: tuple[str, ...]
    state: str
    stream_ids: tuple[tuple[str, str], ...]
    seq: int
    updated_us: int
    heartbeat_us: int | None = None

    def alive(self, now_us: int, dead_after_us: int) -> bool:
        """Whether the call still runs on a node that beat recently enough."""
        return (self.state != ENDED and self.heartbeat_us is not None
                and now_us - self.heartbeat_us <= dead_after_us)
