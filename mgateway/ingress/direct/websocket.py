"""
The direct WebSocket API's transport: Autobahn moves frames in and out of a
L{DirectSession}; a recogniser transcribes the audio; every utterance is sent
back on the socket and stored under the conversation's C{externalId}.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from typing import Callable

from autobahn.websocket.types import ConnectionDeny
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.logger import Logger

from mgateway.api.tokens import InvalidToken, TokenSigner
from mgateway.ingress.direct.session import (
    Audio,
    Close,
    DirectSession,
    Flush,
    Send,
    Started,
)
from mgateway.ingress.wsserver import GatewayServerFactory, GatewayServerProtocol
from mgateway.transcript import Sender, TranscriptEvent, Utterance

log = Logger()

TOKEN_AUDIENCE = "direct"


def close_code(status_code: int) -> int:
    """
    WebSocket close codes 4000-4999 are the application's own: the spec's 4xxx
    status codes are used as they are. Others (1000, 5000, 5001) close
    normally (1000); the finalResponse sent just before says why.
    """
    return status_code if 4000 <= status_code <= 4999 else 1000


class DirectStreamProtocol(GatewayServerProtocol):
    session: DirectSession | None = None
    _transcriber = None

    def onConnect(self, request):
        factory = self.factory
        if not factory.engine.loaded:
            # Listeners open before the models load (so that Genesys probes
            # and SIP are answered at once); a session now could only fail.
            log.warn("direct stream refused from {peer}: the models are still loading", peer=request.peer)
            raise ConnectionDeny(503, "Service Unavailable: models are loading")
        token = (request.params.get("token") or [""])[0]
        try:
            claims = factory.tokens.verify(token, TOKEN_AUDIENCE)
        except InvalidToken as e:
            log.warn("direct stream refused from {peer}: {reason}", peer=request.peer, reason=str(e))
            raise ConnectionDeny(401, "1008 Invalid or expired access token")
        stream_id = str(uuid.uuid4())
        self.conversation_id = claims.get("ext") or stream_id
        self.session = DirectSession(
            stream_id,
            factory.engine.canonical,
            factory.clock.seconds,
            max_message_bytes=factory.max_message_bytes,
            default_language=factory.default_language,
        )
        self._timers = {}
        return None

    def onOpen(self):
        factory = self.factory
        factory.sessions.add(self)
        self._timers["idle"] = factory.clock.callLater(
            factory.idle_timeout, self._run_later, self.session.idle_timeout
        )
        self._timers["duration"] = factory.clock.callLater(
            factory.max_duration, self._run_later, self.session.duration_exceeded
        )
        log.info("direct stream {stream_id} opened for {conversation}",
                 stream_id=self.session.stream_id, conversation=self.conversation_id)

    def onMessage(self, payload: bytes, isBinary: bool):
        idle = self._timers.get("idle")
        if idle is not None and idle.active():
            idle.reset(self.factory.idle_timeout)
        if isBinary:
            events = self.session.receive_bytes(payload)
        else:
            try:
                text = payload.decode("utf-8")
            except UnicodeDecodeError:
                text = ""
            events = self.session.receive_text(text)
        self._carry_out(events)

    def _run_later(self, step: Callable[[], list]) -> None:
        self._carry_out(step())

    def _carry_out(self, events: list) -> None:
        for event in events:
            if isinstance(event, Send):
                if self.state == self.STATE_OPEN:
                    self.sendMessage(json.dumps(event.message).encode("utf-8"), isBinary=False)
            elif isinstance(event, Audio):
                self._transcriber.feed(event.pcm)
            elif isinstance(event, Started):
                self._start(event)
            elif isinstance(event, Flush):
                self._flush().addBoth(lambda _: self._carry_out(self.session.flushed()))
            elif isinstance(event, Close):
                self._cancel_timers()
                log.info("direct stream {stream_id} ends with {code}",
                         stream_id=self.session.stream_id, code=event.code)
                self.sendClose(code=close_code(event.code))

    def _start(self, event: Started) -> None:
        self.params = event.params
        self.started_wall = self.factory.now()
        self._transcriber = self.factory.engine.transcriber(event.params.language, self._utterance)

    def _flush(self) -> Deferred:
        transcriber, self._transcriber = self._transcriber, None
        return transcriber.finish() if transcriber is not None else succeed(None)

    def _utterance(self, utterance: Utterance) -> None:
        event = TranscriptEvent(
            namespace="direct",
            conversation_id=self.conversation_id,
            stream_id=self.session.stream_id,
            sender=Sender(self.params.role, self.params.external_id),
            utterance=utterance,
            created=self.factory.now(),
            spoken=self.started_wall + timedelta(milliseconds=utterance.end_ms),
            detailed_tokens=self.params.detailed_token,
            language=self.params.language,
        )
        self.factory.sink.deliver(event)
        self._carry_out(self.session.utterance(utterance))

    def _cancel_timers(self) -> None:
        for timer in self._timers.values():
            if timer.active():
                timer.cancel()

    def onClose(self, wasClean, code, reason):
        if self.session is None:
            return
        self._cancel_timers()
        self.factory.sessions.discard(self)
        # A client that vanishes mid-stream still gets its last words stored.
        self._flush()


class DirectStreamFactory(GatewayServerFactory):
    protocol = DirectStreamProtocol

    def __init__(
        self,
        *,
        tokens: TokenSigner,
        engine,
        sink,
        clock,
        idle_timeout: float,
        max_duration: float,
        max_message_bytes: int,
        default_language: str = "en-US",
        now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ):
        super().__init__()
        self.default_language = default_language
        self.tokens = tokens
        self.engine = engine
        self.sink = sink
        self.clock = clock
        self.idle_timeout = idle_timeout
        self.max_duration = max_duration
        self.max_message_bytes = max_message_bytes
        self.now = now
        self.sessions: set[DirectStreamProtocol] = set()
        # The session enforces max_message_bytes with the spec's 4040; the
        # transport's hard limit is only a backstop against huge frames.
        self.setProtocolOptions(
            maxMessagePayloadSize=4 * max_message_bytes,
            maxFramePayloadSize=4 * max_message_bytes,
            failByDrop=False,
        )

    def shut_down(self) -> Deferred:
        """Tell every open session the service is going away (5001)."""
        closing = []
        for protocol in list(self.sessions):
            closing.append(protocol.is_closed)
            protocol._carry_out(protocol.session.shutting_down())
        return DeferredList(closing, consumeErrors=True)
