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

import sys
import uuid

from autobahn.websocket.types import ConnectionDeny
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from mgateway.admission import NOT_READY, Admission
from mgateway.calls.namespaces import DIRECT
from mgateway.calls.oneleg import OneLegCall
from mgateway.ingress.direct.session import DirectSession, Flush, Started
from mgateway.ingress.wscore import CoreServerFactory, CoreServerProtocol
from mgateway.interfaces import ITranscriptSink
from mgateway.tokens import DIRECT_AUDIENCE, InvalidToken, TokenSigner
from mgateway.transcript import TranscriptEvent

log = Logger()

#: The retry hint of a node without an admission of its own.
NOT_READY_RETRY_SECONDS = 10


@implementer(ITranscriptSink)
class DirectStreamProtocol(CoreServerProtocol):
    """
    @ivar call: the stream's L{OneLegCall}, from the accepted upgrade on.
    """

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
        self.call = OneLegCall(self.factory.registry, DIRECT, stream_id, claims.get("ext") or stream_id, self)
        self.core = self.factory.new_session(stream_id)
        return None

    def opened(self) -> None:
        log.info("direct stream {stream_id} opened for {conversation}",
                 stream_id=self.guid, conversation=self.call.conversation_id)

    def _start(self, event: Started) -> None:
        started = self.call.start(event.sender.role, event.sender.external_id, event.transcribe,
                                  on_failure=self._failed("speech recognition failed"),
                                  phrases=lambda: self.core.vocabulary)
        self.media = self.call.media
        started.addErrback(self._failed("starting transcription failed"))

    def _finish(self, event: Flush) -> None:
        """The call delivers everything, then the session sends its finalResponse and ends."""
        self.media = None
        self.after_flush(self.call.finish(), self.core.flushed)

    handlers = {Started: _start, Flush: _finish}

    def _failed(self, detail: str):
        """What ends the stream with 5000 when its call fails (the call logged why)."""
        def failed(failure) -> None:
            self.core.internal_error(detail)
            self.drive()
        return failed

    def deliver(self, event: TranscriptEvent) -> None:
        """An utterance of this stream's call: sent on the socket."""
        self.core.transcript(event)
        self.drive()

    def lost(self, code) -> None:
        """A client that vanishes mid-stream still gets its last words stored."""
        self.core.connection_lost()
        self.media = None
        self.call.finish()


class DirectStreamFactory(CoreServerFactory):
    """
    @param registry: the L{mgateway.interfaces.ICallRegistry} the streams are
        one-leg calls of; its engine says which languages can be transcribed
        and whether the models are loaded.
    @param force_redaction: the gateway always redacts (C{redaction.always}):
        a C{startStream} for other output gets 4094.
    @param admission: the L{mgateway.interfaces.IAdmission} an upgrade and
        a C{startStream} ask; None: every stream is taken once the models
        are loaded.
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
        #: Without an admission, only the models' readiness is asked.
        self.admission = admission if admission is not None else Admission(
            max_streams=sys.maxsize, in_use=lambda: 0, loaded=lambda: registry.engine.loaded,
            retry_after=NOT_READY_RETRY_SECONDS)
        self.default_language = default_language
        self.force_redaction = force_redaction
        self.tokens = tokens
        self.engine = registry.engine
        self.idle_timeout = idle_timeout
        self.max_duration = max_duration
        self.max_message_bytes = max_message_bytes

    def admit(self, request) -> None:
        """
        A node that is not ready (its models still load: listeners open
        first, so that Genesys probes and SIP are answered at once) refuses
        the upgrade with HTTP 503, as a stream now could only fail; a
        draining or full one answers the C{startStream} in the API's terms.
        """
        super().admit(request)
        refused = self.admission.refusal(1)
        if refused is not None and refused.reason == NOT_READY:
            log.warn("direct stream refused from {peer}: {reason}", peer=request.peer,
                     reason=refused.description)
            raise ConnectionDeny(503, f"Service Unavailable: {refused.description}")

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
        return self.admission.refusal(1)

    def shut_down(self) -> Deferred:
        """Tell every open session the service is going away (5001)."""
        return self.end_sockets(lambda protocol: protocol.core.shutting_down())
