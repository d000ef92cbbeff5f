# -*- test-case-name: tests.test_cluster_directory,tests.test_cluster_carry -*-
"""
This node's membership of the cluster: its heartbeat, the sweep that ends
dead nodes' calls, and the directory records of the calls it holds.
"""

from __future__ import annotations

import itertools

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from mgateway.cluster.records import CallRecord

log = Logger()


def _micros(seconds: float) -> int:
    return int(seconds * 1_000_000)


class Membership:
    """
    @param directory: the L{mgateway.interfaces.ICallDirectory}.
    @param address: this node's C{[cluster] internal_url}.
    @param clock: what the heartbeat runs on and the times written are read
        from (the nodes' clocks must agree to well within
        C{dead_after_seconds}, as NTP keeps them).
    """

    def __init__(self, directory, node_id: str, address: str, clock: IReactorTime,
                 heartbeat_seconds: float, dead_after_seconds: float):
        self.directory = directory
        self.node_id = node_id
        self.address = address
        self._clock = clock
        self._interval = heartbeat_seconds
        self.dead_after_us = _micros(dead_after_seconds)
        self._seq = itertools.count(1)
        self._loop = LoopingCall(self.beat)
        self._loop.clock = clock

    def now_us(self) -> int:
        return _micros(self._clock.seconds())

    async def start(self) -> None:
        """Forget the calls of an earlier run of this node (it holds none yet), beat, then beat every interval."""
        await self.directory.end_node(self.node_id, self.now_us())
        await self.beat()
        self._loop.start(self._interval, now=False).addErrback(
            lambda failure: log.failure("cluster heartbeat of {node} stopped", failure, node=self.node_id))

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    async def beat(self) -> None:
        """Say this node is alive; end the calls of nodes that are not."""
        now = self.now_us()
        try:
            await self.directory.heartbeat(self.node_id, self.address, now)
            ended = await self.directory.end_dead(self.node_id, now, self.dead_after_us)
        except Exception:
            # The database is away: the next beat tries again.
            log.failure("cluster heartbeat of {node} failed", node=self.node_id)
            return
        if ended:
            log.warn("cluster: {count} calls of dead nodes marked ended", count=ended)

    def changed(self, call) -> Deferred:
        """Publish a call of this node's (the registry's C{on_change}); a failure is logged, not raised."""
        record = CallRecord(
            namespace=call.namespace, guid=call.guid, node_id=self.node_id, address=self.address,
            legs=tuple(call.legs), state=call.state.value,
            stream_ids=tuple(sorted((role, stream.stream_id) for role, stream in call.streams.items())),
            seq=next(self._seq), updated_us=self.now_us(),
        )
        published = self.directory.publish(record)
        published.addErrback(
            lambda failure: log.failure("cluster: recording call {namespace}/{guid} as {state} failed", failure,
                                        namespace=call.namespace, guid=call.guid, state=record.state))
        return published
