"""
The direct WebSocket API's transport: Autobahn moves frames in and out of a
L{DirectSession}, and the session's one timer (its idle timeout and duration
limit) runs on the factory's clock. Each stream is a one-leg call of the call registry
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
from mgateway.ingress.events import LegAudio, Terminated
from mgateway.ingress.wsserver import GatewayServerFactory, GatewayServerProtocol
from mgateway.interfaces import ITranscriptSink
from mgateway.tokens import DIRECT_AUDIENCE, InvalidToken, TokenSigner
from mgateway.transcript import TranscriptEvent

log = Logger()


@implementer(ITranscriptSink)
class DirectStreamProtocol(GatewayServerProtocol):
    """
    @ivar media: the attachment feeding the stream's call, from
        C{startStream} until the call is stopped.
    """

    session: DirectSession | None = None
    media = None
    _timer = None

    def onConnect(self, request):
        factory = self.factory
        if not factory.engine.loaded:
            # Listeners open before the models load (so that Genesys probes
            # and SIP are answered at once); a session now could only fail.
            log.warn("direct stream refused from {peer}: the models are still loading", peer=request.peer)
            raise ConnectionDeny(503, "Service Unavailable: models are loading")
        token = (request.params.get("token") or [""])[0]
        try:
            claims = factory.tokens.verify(token, DIRECT_AUDIENCE)
        except InvalidToken as e:
            log.warn("direct stream refused from {peer}: {reason}", peer=request.peer, reason=str(e))
            raise ConnectionDeny(401, "1008 Invalid or expired access token")
        stream_id = str(uuid.uuid4())
        self.conversation_id = claims.get("ext") or stream_id
        self.session = DirectSession(
            stream_id,
            factory.engine.canonical,
            max_message_bytes=factory.max_message_bytes,
            default_language=factory.default_language,
            force_redaction=factory.force_redaction,
            clock_now=factory.clock.seconds,
            idle_timeout=factory.idle_timeout,
            max_duration=factory.max_duration,
            refusal=factory.refusal,
        )
        return None

    def onOpen(self):
        self.factory.sessions.add(self)
        self._pump()
        log.info("direct stream {stream_id} opened for {conversation}",
                 stream_id=self.session.stream_id, conversation=self.conversation_id)

    def onMessage(self, payload: bytes, isBinary: bool):
        if isBinary:
            self.session.receive_bytes(payload)
        else:
            try:
                text = payload.decode("utf-8")
            except UnicodeDecodeError:
                text = ""
            self.session.receive_text(text)
        self._pump()

    def _pump(self) -> None:
        """Carry out what the session asks, write its frames, then arm its timer or close."""
        terminated = None
        for event in self.session.events():
            if isinstance(event, LegAudio):
                if self.media is not None:
                    self.media.audio(event.leg, event.pcm)
            elif isinstance(event, Started):
                self._start(event)
            elif isinstance(event, Flush):
                self._flush().addCallback(self._flushed)
            elif isinstance(event, Terminated):
                terminated = event
        for frame in self.session.data_to_send():
            if self.state == self.STATE_OPEN:
                self.sendMessage(frame.encode("utf-8"), isBinary=False)
        self._arm_timer()
        if terminated is not None:
            log.info("direct stream {stream_id} ends with {reason}",
                     stream_id=self.session.stream_id, reason=terminated.reason)
            self.sendClose(code=terminated.close_code)

    def _flushed(self, summary) -> None:
        """The call delivered everything: the session sends its finalResponse and ends."""
        self.session.flushed(summary)
        self._pump()

    def _arm_timer(self) -> None:
        """One timer on the factory's clock, due when the session's next is."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        deadline, clock = self.session.get_timer(), self.factory.clock
        if deadline is not None:
            self._timer = clock.callLater(max(0.0, deadline - clock.seconds()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.session.handle_timer(self.factory.clock.seconds())
        self._pump()

    def _start(self, event: Started) -> None:
        """Attach the stream as a one-leg call (the leg is named by its role) and start it."""
        registry, stream_id, role = self.factory.registry, self.session.stream_id, event.sender.role
        self.media = registry.attach(
            DIRECT, stream_id, [role], on_failure=self._recogniser_failed,
            conversation_id=self.conversation_id, stream_ids={role: stream_id}, sinks=[self],
            phrases=lambda: self.session.vocabulary,
        )
        request = StartRequest(
            namespace=DIRECT, guid=stream_id, customer_id=event.sender.external_id,
            agent_id=event.sender.external_id, transcribe=event.transcribe,
        )
        ensureDeferred(registry.start(request)).addErrback(self._failed, "starting")

    def _recogniser_failed(self, failure) -> None:
        """The call logged it: the client learns it from a 5000 finalResponse."""
        self.session.internal_error("speech recognition failed")
        self._pump()

    def _failed(self, failure, doing: str) -> None:
        log.failure("direct stream {stream_id}: {doing} its call failed", failure,
                    stream_id=self.session.stream_id, doing=doing)
        self.session.internal_error(f"{doing} transcription failed")
        self._pump()

    def _flush(self) -> Deferred:
        """
        Stop the call, so its last words are delivered, and let it go: fires
        with the stream's summary.
        """
        media, self.media = self.media, None
        if media is None:
            return succeed(NOTHING_RECEIVED)
        role = self.session.sender.role
        stopped = ensureDeferred(self.factory.registry.stop(StopRequest(DIRECT, self.session.stream_id)))
        stopped.addCallback(lambda streams: streams[role][1])

        def stop_failed(failure):
            log.failure("direct stream {stream_id}: stopping its call failed", failure,
                        stream_id=self.session.stream_id)
            return NOTHING_RECEIVED

        def let_go(summary):
            hung_up = media.hang_up().addErrback(
                lambda failure: log.failure("direct stream {stream_id}: ending its call failed",
                                            failure, stream_id=self.session.stream_id))
            return hung_up.addCallback(lambda _: summary)

        return stopped.addErrback(stop_failed).addCallback(let_go)

    def deliver(self, event: TranscriptEvent) -> None:
        """An utterance of this stream's call: sent on the socket."""
        self.session.transcript(event)
        self._pump()

    def onClose(self, wasClean, code, reason):
        if self.session is None:
            return
        self.session.connection_lost()
        self._arm_timer()  # cancels it: a session whose socket is gone has none
        self.factory.sessions.discard(self)
        # A client that vanishes mid-stream still gets its last words stored.
        self._flush()


class DirectStreamFactory(GatewayServerFactory):
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
        super().__init__()
        self.admission = admission
        self.default_language = default_language
        self.force_redaction = force_redaction
        self.tokens = tokens
        self.registry = registry
        self.engine = registry.engine
        self.clock = clock
        self.idle_timeout = idle_timeout
        self.max_duration = max_duration
        self.max_message_bytes = max_message_bytes
        self.sessions: set[DirectStreamProtocol] = set()
        # The session enforces max_message_bytes with the spec's 4040; the
        # transport's hard limit is only a backstop against huge frames.
        self.setProtocolOptions(
            maxMessagePayloadSize=4 * max_message_bytes,
            maxFramePayloadSize=4 * max_message_bytes,
            failByDrop=False,
        )

    def refusal(self):
        """Why the node takes no new stream now (one participant stream), or None."""
        return self.admission.refusal(1) if self.admission is not None else None

    def shut_down(self) -> Deferred:
        """Tell every open session the service is going away (5001)."""
        closing = []
        for protocol in list(self.sessions):
            closing.append(protocol.is_closed)
            protocol.session.shutting_down()
            protocol._pump()
        return DeferredList(closing, consumeErrors=True)
