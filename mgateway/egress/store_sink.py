# -*- test-case-name: tests.test_store_sink -*-
"""
Hands utterances to the transcript store for the after-call endpoint.

The writes go through a L{DeliveryQueue}, as the webhook's POSTs do, so that a
store that stalls (a PostgreSQL failover, a locked SQLite file) holds at most
C{queue_size} utterances in memory; beyond that the oldest waiting one is
dropped, logged with its call id and counted.
"""

from __future__ import annotations

from prometheus_client import Counter
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mgateway.egress.queue import DeliveryQueue, QueueStats
from mgateway.interfaces import ITranscriptSink, ITranscriptStore
from mgateway.store.message import StoredMessage
from mgateway.transcript import TranscriptEvent

log = Logger()

#: What became of an utterance handed to the store.
OUTCOMES = ("stored", "failed", "dropped")

WRITES = Counter(
    "asapp_mg_store_writes_total",
    "Utterances handed to the transcript store, by outcome: stored, failed (the "
    "store refused or lost the write), dropped (never written: the queue was full).",
    ["outcome"],
)
for _outcome in OUTCOMES:
    WRITES.labels(outcome=_outcome)

#: Writes at once: enough to keep a PostgreSQL pool busy; SQLite serialises them anyway.
CONCURRENCY = 4
#: Utterances waiting for the store: minutes of speech of hundreds of calls.
QUEUE_SIZE = 10_000


@implementer(ITranscriptSink)
class StoreSink:
    """Writes each utterance to the store; a failed write is logged with the call id."""

    def __init__(self, store: ITranscriptStore, *, clock: IReactorTime,
                 concurrency: int = CONCURRENCY, queue_size: int = QUEUE_SIZE):
        self._store = store
        self._queue: DeliveryQueue[TranscriptEvent] = DeliveryQueue(
            self._write, clock=clock, concurrency=concurrency, queue_size=queue_size,
            on_drop=self._dropped,
        )

    @property
    def stats(self) -> QueueStats:
        return self._queue.stats

    def deliver(self, event: TranscriptEvent) -> None:
        self._queue.put(event)

    def drain(self, timeout: float | None = None) -> Deferred:
        """
        Fires with C{True} when every write begun or queued so far has
        finished, or with C{False} after C{timeout} seconds (never, for L{None}).
        """
        return self._queue.drain(timeout)

    def _write(self, event: TranscriptEvent) -> Deferred:
        d = self._store.add(StoredMessage.from_event(event))
        return d.addCallbacks(lambda _: WRITES.labels(outcome="stored").inc(),
                              self._failed, errbackArgs=(event,))

    def _failed(self, failure: Failure, event: TranscriptEvent) -> None:
        WRITES.labels(outcome="failed").inc()
        log.failure(
            "storing an utterance of {guid} (stream {stream_id}) failed",
            failure,
            guid=event.conversation_id,
            stream_id=event.stream_id,
        )

    def _dropped(self, event: TranscriptEvent, why: str) -> None:
        WRITES.labels(outcome="dropped").inc()
        log.warn(
            "utterance of {guid} (stream {stream_id}) not stored: {why}",
            guid=event.conversation_id,
            stream_id=event.stream_id,
            why=why,
        )
