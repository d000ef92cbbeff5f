# -*- test-case-name: tests.test_audiohook_api -*-
"""
The Genesys Cloud AudioHook Monitor transport: the upgrade request is
authenticated (API key and HTTP message signature), then Autobahn frames go
in and out of an L{AudioHookSession}, and each channel's audio goes into the
call registry under the Genesys conversation id (namespace
C{genesysaudiohook}: C{external} is the customer, C{internal} the agent).

Everything the client sends is answered synchronously, before anything else
runs: C{opened} and C{pong} never wait on the ASR pool or the store, so
Genesys' 5 s open timeout and ping deadline hold under load.

Closing the socket is left to Genesys, which closes it after our C{closed}.
To end a session from our side (shut-down, a refused session, a protocol
error) we send C{disconnect} and answer the C{close} that follows; only a
client that does not close in time is dropped (the session's timer, on the
factory's clock).

One conversation is streamed by one session at a time (the session
declines the C{open} of a second one, the factory says which sessions stream
what); the first session goes on undisturbed.
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping

from autobahn.websocket.types import ConnectionDeny
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.logger import Logger

from mgateway.calls.errors import LegBusy
from mgateway.calls.namespaces import GENESYS_AUDIOHOOK
from mgateway.ingress.audiohook.events import (
    Closed,
    Declined,
    Discarded,
    Disconnected,
    Error,
    Opened,
    Paused,
    Probed,
    Resumed,
    TimedOut,
    Updated,
)
from mgateway.ingress.audiohook.messages import NULL_UUID, format_duration
from mgateway.ingress.audiohook.session import ON_STOP, AudioHookSession, SessionPolicy
from mgateway.ingress.audiohook.upgrade import Refusal, UpgradeGate
from mgateway.ingress.wscore import CoreServerFactory, CoreServerProtocol

log = Logger()

NAMESPACE = GENESYS_AUDIOHOOK


class AudioHookProtocol(CoreServerProtocol):
    namespace = NAMESPACE
    core: AudioHookSession | None = None
    #: For the logs: what C{open} named (until then, a placeholder).
    conversation_id = "(not opened)"

    def accept(self, request):
        factory = self.factory
        client = factory.gate.decide(request.headers, self.http_request_uri, factory.clock.seconds())
        if isinstance(client, Refusal):
            log.warn("audiohook session {session_id} from {peer} refused: {reason}",
                     session_id=client.session_id or "(none)", peer=request.peer, reason=client.reason)
            return deferLater(factory.clock, max(0.0, client.answer_at - factory.clock.seconds()),
                              self._refuse, client)
        self.core = factory.new_session(client.session_id, client.organization_id)
        log.info("audiohook session {session_id} connected from {peer} (organization {organization_id}, "
                 "correlation {correlation_id}, key {api_key})", session_id=client.session_id,
                 peer=request.peer, organization_id=client.organization_id,
                 correlation_id=client.correlation_id, api_key=client.api_key)
        return None

    def _refuse(self, refusal: Refusal) -> None:
        """HTTP 401, or (C{disconnect} policy) a socket that is only told it is unauthorized."""
        if not refusal.disconnect or self.state == self.STATE_CLOSED:
            raise ConnectionDeny(401, "Unauthorized")
        self.core = self.factory.new_session(refusal.session_id, None)
        # Its open gets disconnect(unauthorized); it has the grace period to close.
        self.core.refuse()

    def disconnect(self, reason: str) -> None:
        """Ask the client to end the session (it answers with C{close})."""
        if self.core.disconnect(reason):
            log.info("audiohook session {session_id}: disconnecting ({reason})",
                     session_id=self.core.session_id, reason=reason)
            self.drive()

    def drop(self, state: str) -> None:
        """The client did not close after our C{disconnect} (or C{closed}): cut it off."""
        if self.state != self.STATE_CLOSED:
            log.warn("audiohook session {session_id} of conversation {conversation_id} did not close in "
                     "time ({state}): dropped", session_id=self.core.session_id,
                     conversation_id=self.conversation_id, state=state)
            self.dropConnection(abort=True)

    def _opened(self, event: Opened) -> None:
        self.conversation_id = event.conversation_id
        on_stop = self._call_stopped if self.factory.on_stop == "disconnect" else None
        try:
            self.attach(event.conversation_id, event.media.channels, on_stop=on_stop)
        except LegBusy:
            # Its channels are fed by another ingress's leg of the same id.
            info = f"Conversation {event.conversation_id} is already being received"
            self.core.decline(info)
            return self._refused(info)
        log.info("audiohook session {session_id} opened for conversation {conversation_id}: {media_format} "
                 "{channels}, participant {participant}, language {language}",
                 session_id=event.session_id, conversation_id=event.conversation_id,
                 media_format=event.media.format, channels=list(event.media.channels),
                 participant=event.participant.id, language=event.language)

    def _closed(self, event: Closed) -> None:
        log.info("audiohook session {session_id} of conversation {conversation_id} closed ({reason}) "
                 "at {position}", session_id=self.core.session_id, conversation_id=self.conversation_id,
                 reason=event.reason, position=format_duration(self.core.position_ns))
        # The session holds its closed back until the call's last words are delivered.
        self.after_flush(self.hang_up(), lambda _: self.core.flushed())

    def _probed(self, event: Probed) -> None:
        self.conversation_id = NULL_UUID
        log.info("audiohook session {session_id}: connection probe of organization {organization_id}",
                 session_id=self.core.session_id, organization_id=event.organization_id)

    def _timed_out(self, event: TimedOut) -> None:
        self.drop(event.state)

    def _noted(self, event) -> None:
        log.info("audiohook session {session_id}: {event}", session_id=self.core.session_id, event=event)

    def _warned(self, event) -> None:
        log.warn("audiohook session {session_id} of conversation {conversation_id}: {event}",
                 session_id=self.core.session_id, conversation_id=self.conversation_id, event=event)

    def _declined(self, event: Declined) -> None:
        self._refused(event.info)

    def _refused(self, info: str) -> None:
        """The open was answered with a disconnect (reason error) that says why, instead of opened."""
        log.warn("audiohook session {session_id} refused: {info}", session_id=self.core.session_id, info=info)

    handlers = {
        Opened: _opened, Declined: _declined, Closed: _closed, Probed: _probed, TimedOut: _timed_out,
        Paused: _noted, Resumed: _noted, Discarded: _noted, Updated: _noted,
        Disconnected: _warned, Error: _warned,
    }

    def _call_stopped(self) -> None:
        """stop-streaming stopped the call, and the policy is to end the session then."""
        self.disconnect("completed")

    def lost(self, code) -> None:
        if self.media is not None:
            # The socket went away without a close transaction: the call still
            # ends and its streams are flushed.
            log.warn("audiohook session {session_id} of conversation {conversation_id} lost ({code})",
                     session_id=self.core.session_id, conversation_id=self.conversation_id, code=code)
            self.hang_up()


class AudioHookFactory(CoreServerFactory):
    """
    @param keys: API key -> base64 client secret (empty: that key may connect
        unsigned). No keys: every session is refused.
    @param auth_failure: C{"reject"} (HTTP 401 at the upgrade) or
        C{"disconnect"} (accept, then C{disconnect} with reason
        C{unauthorized}, which is what Genesys expects).
    @param languages: the languages listed in C{opened} when C{open} asks.
    """

    protocol = AudioHookProtocol

    def __init__(
        self,
        *,
        registry,
        clock,
        keys: Mapping[str, str],
        auth_failure: str = "disconnect",
        max_message_bytes: int = 65536,
        allow_l16: bool = False,
        on_stop: str = "keep",
        languages: Callable[[], Iterable[str]] = tuple,
    ):
        if on_stop not in ON_STOP:
            raise ValueError(f"on_stop must be one of {ON_STOP}, not {on_stop!r}")
        super().__init__(registry=registry, clock=clock, max_frame_bytes=max_message_bytes)
        self.on_stop = on_stop
        self.gate = UpgradeGate(keys, auth_failure)
        self.allow_l16 = allow_l16
        self.languages = languages
        if not self.gate.keys:
            log.warn("AudioHook refuses every session: no API key is configured ([audiohook.keys])")

    def new_session(self, session_id: str, organization_id: str | None) -> AudioHookSession:
        policy = SessionPolicy(allow_l16=self.allow_l16, supported_languages=tuple(sorted(self.languages())))
        return AudioHookSession(self.clock.seconds, policy, session_id=session_id,
                                organization_id=organization_id, streaming=self.streaming)

    def streaming(self, conversation_id: str) -> str | None:
        """The id of the session that feeds this conversation's call now, if any."""
        return next((protocol.core.session_id for protocol in self.sockets
                     if protocol.media is not None and protocol.guid == conversation_id), None)

    def shut_down(self, grace: float) -> Deferred:
        """
        Ask every open session to end (C{disconnect}, reason C{completed}) and
        wait for the clients to close their sockets; those still open after
        C{grace} seconds are dropped.
        """
        def end(protocol: AudioHookProtocol) -> None:
            protocol.disconnect("completed")
            protocol.core.close_within(grace)

        return self.end_sockets(end)
