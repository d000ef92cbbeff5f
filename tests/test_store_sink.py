"""
The store sink's queue: a store that stalls holds a bounded number of
utterances, the oldest dropped and counted; a failed write is logged; a
drain waits for every write. Against the real SQLite store where it can be.
"""

from __future__ import annotations

import pytest_twisted
from prometheus_client import REGISTRY
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from zope.interface import implementer
from zope.interface.verify import verifyObject

from mgateway.egress.queue import QueueStats
from mgateway.egress.store_sink import StoreSink
from mgateway.interfaces import ITranscriptSink, ITranscriptStore
from mgateway.store.sqlite import SQLiteTranscriptStore
from tests.test_webhook import event


def writes(outcome: str) -> float:
    return REGISTRY.get_sample_value("asapp_mg_store_writes_total", {"outcome": outcome})


@implementer(ITranscriptStore)
class StallingStore:
    """Each C{add} waits until the test fires it; C{fails} makes them fail at once."""

    def __init__(self, fails=False):
        self.fails = fails
        self.adding: list[tuple[str, Deferred]] = []

    def add(self, message):
        if self.fails:
            return fail(OSError("disk full"))
        d = Deferred()
        self.adding.append((message.text, d))
        return d

    def messages(self, conversation_id, limit):
        raise NotImplementedError

    def purge(self, older_than):
        raise NotImplementedError

    def close(self):
        raise NotImplementedError


def test_the_store_sink_provides_the_sink_interface():
    assert verifyObject(ITranscriptSink, StoreSink(StallingStore(), clock=Clock()))


def test_a_stalled_store_holds_at_most_queue_size_utterances_and_drops_the_oldest():
    store, logged = StallingStore(), []
    sink = StoreSink(store, clock=Clock(), concurrency=1, queue_size=2)
    dropped_before = writes("dropped")
    globalLogPublisher.addObserver(logged.append)
    try:
        for n in range(5):
            sink.deliver(event(text=f"u{n}", guid=f"call-{n}"))
    finally:
        globalLogPublisher.removeObserver(logged.append)

    assert sink.stats == QueueStats(in_flight=1, queued=2)
    assert writes("dropped") == dropped_before + 2
    warned = [e["guid"] for e in logged if e.get("log_namespace") == "mgateway.egress.store_sink"]
    assert warned == ["call-1", "call-2"]
    drained = sink.drain(None)
    while store.adding:
        store.adding.pop(0)[1].callback(None)
    assert drained.result is True
    assert sink.stats == QueueStats(in_flight=0, queued=0)


def test_a_failed_write_is_logged_with_the_call_and_counted():
    logged = []
    failed_before = writes("failed")
    globalLogPublisher.addObserver(logged.append)
    try:
        sink = StoreSink(StallingStore(fails=True), clock=Clock())
        sink.deliver(event(guid="failing-call"))
    finally:
        globalLogPublisher.removeObserver(logged.append)
    [failure] = [e for e in logged if e.get("log_namespace") == "mgateway.egress.store_sink"]
    assert failure["guid"] == "failing-call" and failure["log_failure"].check(OSError)
    assert writes("failed") == failed_before + 1
    assert sink.drain(1).result is True


@pytest_twisted.ensureDeferred
async def test_every_utterance_reaches_the_real_store_after_a_drain(tmp_path):
    store = SQLiteTranscriptStore(tmp_path / "t.sqlite3", reactor)
    sink = StoreSink(store, clock=reactor, concurrency=2, queue_size=100)
    for n in range(20):
        sink.deliver(event(text=f"utterance {n}", start=n * 1000, end=n * 1000 + 500))
    assert await sink.drain(30) is True
    stored = await store.messages(event().conversation_id, 100)
    assert sorted(m.text for m in stored) == sorted(f"utterance {n}" for n in range(20))
    await store.close()
