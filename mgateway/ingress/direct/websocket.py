# -*- test-case-name: tests.test_direct_api,tests.test_direct_timers -*-
"""
The direct WebSocket API's transport: a L{DirectSession} driven by the
shared L{CoreServerProtocol} (its idle timeout and duration limit run on the
factory's clock). Each stream is a one-leg call of the call registry
(namespace C{direct}, filed under the token's C{externalId}), started by its
C{startStream} and stopped by its end; the socket is a sink of that call, so
every utterance is sent back on it as well as going to the namespace's sinks.
The call's text stages read the session's C{updateVocabulary} phrases at
every utterance; its participant stream records the audio when
C{audioRecordingAllowed}.
"""

from __future__ import annotations

import uuid

from autobahn.websocket.types import ConnectionDeny
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred, succeed
from twisted.logger import Logger
from zope.interface import implementer

from mgateway.calls.namespaces import DIRECT
from mgateway.calls.requests import StartRequest, StopRequest
from mgateway.ingress.direct.session import NOTHING_RECEIVED, DirectSession, Flush, Started
from mgateway.ingress.events import Terminated
from mgateway.ingress.wscore import CoreServerFactory, CoreServerProtocol
from mgateway.interfaces import ITranscriptSink
from mgateway.tokens import DIRECT_AUDIENCE, InvalidToken, TokenSigner
from mgateway.transcript import TranscriptEvent

log = Logger()


@implementer(ITranscriptSink)
class DirectStreamProtocol(CoreServerProtocol):
    namespace = DIRECT
    core: DirectSession | None = None

    def accept(self, request):
        token = (request.params.get("token") or [""])[0]
        try:
            claims = self.factory.tokens.verify(token, DIRECT_AUDIENCE)
        except InvalidToken as e:
            log.warn("direct stream refused from {peer}: {reason}", peer=request.peer, reason=str(e))
            raise ConnectionDeny(401, "1008 Invalid or expired access token")
        self.guid = stream_id = str(uuid.uuid4())
        self.conversation_id = claims.get("ext") or stream_id
        self.core = self.factory.new_session(stream_id)
        return None

    def opened(self) -> None:
        log.info("direct stream {stream_id} opened for {conversation}",
                 stream_id=self.guid, conversation=self.conversation_id)

    def _start(self, event: Started) -> None:
        """Attach the stream as a one-leg call (the leg is named by its role) and start it."""
        role = event.sender.role
        self.attach(self.guid, [role], on_failure=self._recogniser_failed,
                    conversation_id=self.conversation_id, stream_ids={role: self.guid}, sinks=[self],
                    phrases=lambda: self.core.vocabulary)
        request = StartRequest(
            namespace=DIRECT, guid=self.guid, customer_id=event.sender.external_id,
            agent_id=event.sender.external_id, transcribe=event.transcribe,
        )
        ensureDeferred(self.factory.registry.start(request)).addErrback(self._start_failed)

    def _finish(self, event: Flush) -> None:
        """The call delivers everything, then the session sends its finalResponse and ends."""
        self._flush().addCallback(self._flushed)

    handlers = {Started: _start, Flush: _finish}

    def _flushed(self, summary) -> None:
        self.core.flushed(summary)
        self.drive()

    def _recogniser_failed(self, failure) -> None:
        """The call logged it: the client learns it from a 5000 finalResponse."""
        self.core.internal_error("speech recognition failed")
        self.drive()

    def _start_failed(self, failure) -> None:
        log.failure("direct stream {stream_id}: starting its call failed", failure, stream_id=self.guid)
        self.core.internal_error("starting transcription failed")
        self.drive()

    def _flush(self) -> Deferred:
        """
        Stop the call, so its last words are delivered, and let it go: fires
        with the stream's summary.
        """
        # Taken at once: a flush under way is not begun again when the socket goes.
        media, self.media = self.media, None
        if media is None:
            return succeed(NOTHING_RECEIVED)
        role = self.core.sender.role
        stopped = ensureDeferred(self.factory.registry.stop(StopRequest(DIRECT, self.guid)))
        stopped.addCallback(lambda streams: streams[role][1])

        def stop_failed(failure):
            log.failure("direct stream {stream_id}: stopping its call failed", failure, stream_id=self.guid)
            return NOTHING_RECEIVED

        def let_go(summary):
            return media.hang_up().addErrback(self.last_words_lost).addCallback(lambda _: summary)

        return stopped.addErrback(stop_failed).addCallback(let_go)

    def deliver(self, event: TranscriptEvent) -> None:
        """An utterance of this stream's call: sent on the socket."""
        self.core.transcript(event)
        self.drive()

    def terminated(self, event: Terminated) -> None:
        log.info("direct stream {stream_id} ends with {reason}", stream_id=self.guid, reason=event.reason)
        super().terminated(event)

    def lost(self, code) -> None:
        """A client that vanishes mid-stream still gets its last words stored."""
        self.core.connection_lost()
        self._flush()


class DirectStreamFactory(CoreServerFactory):
    """
    @param registry: the L{mgateway.interfaces.ICallRegistry} the streams are
        one-leg calls of; its engine says which languages can be transcribed
        and whether the models are loaded.
    @param force_redaction: the gateway always redacts (C{redaction.always}):
        a C{startStream} for other output gets 4094.
    @param admission: the L{mgateway.interfaces.IAdmission} a C{startStream}
        asks; None: every stream is taken.
    """

    protocol = DirectStreamProtocol

    def __init__(
        self,
        *,
        tokens: TokenSigner,
        registry,
        clock,
        idle_timeout: float,
        max_duration: float,
        max_message_bytes: int,
        default_language: str = "en-US",
        force_redaction: bool = False,
        admission=None,
    ):
        # The session enforces max_message_bytes with the spec's 4040; the
        # transport's hard limit is only a backstop against huge frames.
        super().__init__(registry=registry, clock=clock, max_frame_bytes=4 * max_message_bytes)
        self.admission = admission
        self.default_language = default_language
        self.force_redaction = force_redaction
        self.tokens = tokens
        self.engine = registry.engine
        self.idle_timeout = idle_timeout
        self.max_duration = max_duration
        self.max_message_bytes = max_message_bytes

    def admit(self, request) -> None:
        super().admit(request)
        if not self.engine.loaded:
            # Listeners open before the models load (so that Genesys probes
            # and SIP are answered at once); a session now could only fail.
            log.warn("direct stream refused from {peer}: the models are still loading", peer=request.peer)
            raise ConnectionDeny(503, "Service Unavailable: models are loading")

    def new_session(self, stream_id: str) -> DirectSession:
        return DirectSession(
            stream_id,
            self.engine.canonical,
            max_message_bytes=self.max_message_bytes,
            default_language=self.default_language,
            force_redaction=self.force_redaction,
            clock_now=self.clock.seconds,
            idle_timeout=self.idle_timeout,
            max_duration=self.max_duration,
            refusal=self.refusal,
        )

    def refusal(self):
        """Why the node takes no new stream now (one participant stream), or None."""
        return self.admission.refusal(1) if self.admission is not None else None

    def shut_down(self) -> Deferred:
        """Tell every open session the service is going away (5001)."""
        sockets = list(self.sockets)
        for protocol in sockets:
            protocol.core.shutting_down()
            protocol.drive()
        return DeferredList([protocol.is_closed for protocol in sockets], consumeErrors=True)
