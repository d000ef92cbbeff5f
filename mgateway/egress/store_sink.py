"""Hands utterances to the transcript store for the after-call endpoint."""

from __future__ import annotations

from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger
from zope.interface import implementer

from mgateway.interfaces import ITranscriptSink, ITranscriptStore
from mgateway.store.message import StoredMessage
from mgateway.transcript import TranscriptEvent

log = Logger()


@implementer(ITranscriptSink)
class StoreSink:
    """Writes each utterance to the store; a failed write is logged with the call id."""

    def __init__(self, store: ITranscriptStore):
        self._store = store
        self._writing: set[Deferred] = set()

    def deliver(self, event: TranscriptEvent) -> None:
        d = self._store.add(StoredMessage.from_event(event))
        self._writing.add(d)

        def done(result):
            self._writing.discard(d)
            return result

        def failed(failure):
            log.failure(
                "storing an utterance of {guid} (stream {stream_id}) failed",
                failure,
                guid=event.conversation_id,
                stream_id=event.stream_id,
            )

        d.addBoth(done).addErrback(failed)

    def drain(self) -> Deferred:
        """Fires when every write begun so far has finished."""
        return DeferredList(list(self._writing), consumeErrors=True)
