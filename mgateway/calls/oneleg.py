# -*- test-case-name: tests.test_one_leg_call,tests.test_direct_api,tests.test_direct_timers -*-
"""
A call that is one stream and nothing else (the direct API's): the stream is
attached as the call's only leg, named by its participant's role, the call
is started as soon as the stream begins, and stopped and let go when the
stream ends. Whoever holds one only says when: L{OneLegCall.start} and
L{OneLegCall.finish}; the registry does the rest, as for every other call.
"""

from __future__ import annotations

from typing import Callable, Iterable

from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.logger import Logger

from mgateway.calls.requests import StartRequest, StopRequest, TranscribeParams
from mgateway.calls.stream import StreamSummary

log = Logger()

#: The summary of a stream whose call never started (or whose stop failed).
NOTHING_RECEIVED = StreamSummary(0, 0, 0, 0)


class OneLegCall:
    """
    One stream's call in C{registry} (an L{mgateway.interfaces.ICallRegistry}).

    @param guid: the call's guid, also the C{streamId} of its one stream.
    @param conversation_id: what its utterances are filed under.
    @param sink: the L{mgateway.interfaces.ITranscriptSink} that gets its
        utterances besides its namespace's sinks (the stream's own socket).
    @ivar media: the L{mgateway.interfaces.IMediaFeed} of its leg from
        L{start} until L{finish}, else None.
    """

    def __init__(self, registry, namespace: str, guid: str, conversation_id: str, sink):
        self._registry = registry
        self.namespace = namespace
        self.guid = guid
        self.conversation_id = conversation_id
        self._sink = sink
        self._role: str | None = None
        self.media = None

    def start(self, role: str, participant_id: str, transcribe: TranscribeParams, *,
              on_failure: Callable, phrases: Callable[[], Iterable] = tuple) -> Deferred:
        """
        Attach the leg of C{role} and start its transcription. Fires once
        started; fails (logged here) when the start failed.

        @param on_failure: called with the failure when its recogniser fails.
        @param phrases: gives the stream's own custom vocabulary, read at
            every utterance.
        """
        self._role = role
        self.media = self._registry.attach(
            self.namespace, self.guid, [role], on_failure=on_failure, conversation_id=self.conversation_id,
            stream_ids={role: self.guid}, sinks=[self._sink], phrases=phrases)
        request = StartRequest(namespace=self.namespace, guid=self.guid, customer_id=participant_id,
                               agent_id=participant_id, transcribe=transcribe)
        return ensureDeferred(self._registry.start(request)).addErrback(self._start_failed)

    def _start_failed(self, failure):
        log.failure("call {namespace}/{guid}: starting its one stream failed", failure,
                    namespace=self.namespace, guid=self.guid)
        return failure

    def finish(self) -> Deferred:
        """
        Stop the call, so that its last words are delivered, and let it go:
        fires with the stream's L{StreamSummary} (L{NOTHING_RECEIVED} when it
        never started). A second finish, while the first is under way, has
        nothing left to do.
        """
        media, self.media = self.media, None
        if media is None:
            return succeed(NOTHING_RECEIVED)
        role = self._role
        stopped = ensureDeferred(self._registry.stop(StopRequest(self.namespace, self.guid)))
        stopped.addCallback(lambda streams: streams[role][1])

        def stop_failed(failure):
            log.failure("call {namespace}/{guid}: stopping its one stream failed", failure,
                        namespace=self.namespace, guid=self.guid)
            return NOTHING_RECEIVED

        def let_go(summary):
            return media.hang_up().addErrback(self._last_words_lost).addCallback(lambda _: summary)

        return stopped.addErrback(stop_failed).addCallback(let_go)

    def _last_words_lost(self, failure) -> None:
        log.failure("call {namespace}/{guid}: ending it failed, its last words may be lost", failure,
                    namespace=self.namespace, guid=self.guid)
