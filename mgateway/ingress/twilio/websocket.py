"""
The Twilio Media Streams transport: Autobahn frames into a L{TwilioStream},
decoded audio into the call registry under the Call SID.

A stream can fail mid-call (Twilio's "Handling Failures"): the customer then
starts a new stream for the same Call SID. The new stream takes the call's
tracks over, whatever state the old socket is in: a stalled or half-open old
socket is closed with L{SUPERSEDED}. A socket lost without Twilio's C{stop}
(dropped, no pong to our WebSocket pings, no media for C{media_timeout})
keeps its call for C{reconnect_grace} seconds, so the restarted stream feeds
the same participant streams, on the same timeline; a C{stop} ends the call
at once.
"""

from __future__ import annotations

from autobahn.websocket.types import ConnectionDeny
from prometheus_client import Counter
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.logger import Logger

from mgateway.tokens import InvalidToken
from mgateway.ingress.events import LegAudio, Terminated
from mgateway.ingress.twilio.session import (
    IDLE,
    POLICY,
    SUPERSEDED,
    Dropped,
    Started,
    Stopped,
    TwilioStream,
)
from mgateway.ingress.twilio.signature import valid_signature
from mgateway.ingress.wsserver import GatewayServerFactory, GatewayServerProtocol
from mgateway.paths import TWILIO_STREAM_PATH

log = Logger()

#: Twilio's events, and "dropped" (malformed frames): the metric's labels. Any
#: other event is counted as "unknown", so a protocol change shows up.
KNOWN_EVENTS = ("connected", "start", "media", "dtmf", "mark", "stop", "dropped")
FRAMES = Counter("asapp_mg_twilio_frames", "Twilio Media Streams frames received, by event.", ["event"])

TOKEN_AUDIENCE = "twilio"
#: Twilio does not pass query strings on Stream URLs, so the token is the last
#: segment of the path; C{?token=} is accepted too.
PATH_PREFIX = TWILIO_STREAM_PATH + "/"


def token_from(path: str, params: dict) -> str:
    if path.startswith(PATH_PREFIX) and len(path) > len(PATH_PREFIX):
        return path[len(PATH_PREFIX):].strip("/")
    return (params.get("token") or [""])[0]


class TwilioStreamProtocol(GatewayServerProtocol):
    stream: TwilioStream | None = None
    media = None
    #: The call this socket feeds (from its C{start}), kept after the socket
    #: is gone while it waits for a restart.
    call_sid: str | None = None
    _timer = None
    _linger = None

    def onConnect(self, request):
        factory = self.factory
        try:
            factory.tokens.verify(token_from(request.path, request.params), TOKEN_AUDIENCE)
        except InvalidToken as e:
            log.warn("twilio stream refused from {peer}: {reason}", peer=request.peer, reason=str(e))
            raise ConnectionDeny(401, "Invalid or expired access token")
        if factory.auth_token:
            url = factory.signed_url(request.headers.get("host", ""), self.http_request_uri)
            if not valid_signature(factory.auth_token, url, request.headers.get("x-twilio-signature")):
                log.warn("twilio stream refused from {peer}: bad X-Twilio-Signature for {url}",
                         peer=request.peer, url=url)
                raise ConnectionDeny(403, "Invalid X-Twilio-Signature")
        self.stream = TwilioStream(factory.max_dropped, factory.max_gap_ms, factory.clock.seconds,
                                   factory.max_lead_ms, factory.media_timeout)
        self._schedule()
        return None

    def _schedule(self) -> None:
        """Arm the core's next timer (media inactivity) on the factory's clock."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        deadline = self.stream.get_timer() if self.stream is not None else None
        if deadline is not None:
            clock = self.factory.clock
            self._timer = clock.callLater(max(0.0, deadline - clock.seconds()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.stream is not None:
            self.stream.handle_timer(self.factory.clock.seconds())
            self._handle(self.stream.events())

    def onMessage(self, payload: bytes, isBinary: bool):
        if self.stream is None:
            return
        if isBinary:
            self.stream.receive_bytes(payload)
        else:
            self.stream.receive_text(payload.decode("utf-8", "replace"))
        self._handle(self.stream.events())

    def _handle(self, events: list) -> None:
        for event in events:
            if isinstance(event, LegAudio):
                if self.media is not None:
                    self.media.audio(event.leg, event.pcm, filled=event.filled)
            elif isinstance(event, Started):
                self._started(event)
            elif isinstance(event, Dropped):
                log.warn("twilio call {guid}: dropped a frame: {reason}",
                         guid=self.stream.started.call_sid, reason=event.reason)
            elif isinstance(event, Stopped):
                log.info("twilio call {guid}: stream stopped", guid=self.stream.started.call_sid)
                self._hang_up()
                self.sendClose(code=1000)
            elif isinstance(event, Terminated):
                self._fail(event.close_code, event.reason)
        self._schedule()

    def _started(self, event: Started) -> None:
        factory = self.factory
        # Earlier streams of this call carrying any of these tracks (stalled,
        # half-open, or lost and waiting for this restart) give their legs up
        # first, so that the call never loses its last feed in between.
        superseded = [old for old in factory.feeds.get(event.call_sid, ())
                      if set(old.media.legs) & set(event.tracks)]
        for old in superseded:
            for leg in old.media.legs:
                old.media.release(leg)
        try:
            self.media = factory.registry.attach("twilio", event.call_sid, event.tracks)
        except ValueError:
            # Only another ingress could feed a leg of namespace "twilio".
            self._fail(POLICY, f"tracks of call {event.call_sid} are fed elsewhere")
        else:
            self.call_sid = event.call_sid
            factory.feeds.setdefault(event.call_sid, []).append(self)
            log.info("twilio call {guid}: stream {stream_sid} started with tracks {tracks}",
                     guid=event.call_sid, stream_sid=event.stream_sid, tracks=list(event.tracks))
        for old in superseded:
            old.superseded(event.stream_sid)

    def superseded(self, by_stream_sid: str) -> None:
        """A newer stream of the call took this one's tracks: let go of the call, close if still open."""
        log.warn("twilio call {guid}: stream {stream_sid} superseded by stream {new_stream_sid}",
                 guid=self.call_sid, stream_sid=self._stream_sid(), new_stream_sid=by_stream_sid)
        self._hang_up()
        if self.stream is not None and self.state != self.STATE_CLOSED:
            self._fail(SUPERSEDED, f"superseded by stream {by_stream_sid}")

    def _stream_sid(self) -> str:
        started = self.stream.started if self.stream else None
        return started.stream_sid if started else "(gone)"

    def _fail(self, close_code: int, reason: str) -> None:
        """
        Close the socket with C{close_code}. A stalled stream (L{IDLE}) keeps
        its call for the restart, as a lost one does; any other failure ends it.
        """
        started = self.stream.started if self.stream else None
        log.warn("twilio call {guid}: closing the stream ({code}): {reason}",
                 guid=started.call_sid if started else "(before start)", code=close_code, reason=reason)
        if close_code != IDLE:
            self._hang_up()
        self._count_frames()
        self.stream = None
        self._schedule()
        self.sendClose(code=close_code, reason=reason[:120])

    def _hang_up(self) -> Deferred:
        """Let go of the call now: it ends, flushed, unless another stream feeds it."""
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        self._linger = None
        media, self.media = self.media, None
        if media is None:
            return succeed(None)
        self.factory.forget(self)
        return media.hang_up().addErrback(lambda failure: log.failure(
            "twilio call {guid}: the call's last words were lost", failure, guid=media.call.guid))

    def onClose(self, wasClean, code, reason):
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        if self.stream is not None and self.stream.started is not None:
            log.info("twilio call {guid}: stream {stream_sid} closed ({code}); frames {counts}; "
                     "gaps not filled, the timestamps running ahead of the clock (ms): {refused}",
                     guid=self.stream.started.call_sid, stream_sid=self.stream.started.stream_sid,
                     code=code, counts=dict(self.stream.counts),
                     refused={track: t.refused_ms for track, t in self.stream.timelines.items()})
        self._count_frames()
        if self.media is None:
            return
        grace = self.factory.reconnect_grace
        if grace <= 0:
            self._hang_up()
            return
        # Lost without a "stop" (Twilio always sends one when a stream or call
        # ends): the customer restarts the stream, so the call waits for it.
        log.warn("twilio call {guid}: stream lost without a stop ({code}); the call waits {grace} s "
                 "for a restarted stream", guid=self.call_sid, code=code, grace=grace)
        self._linger = self.factory.clock.callLater(grace, self._restart_missed)

    @property
    def waiting_for_restart(self) -> bool:
        """Lost without a C{stop}, its call held for a restarted stream."""
        return self._linger is not None

    def _restart_missed(self) -> None:
        self._linger = None
        log.warn("twilio call {guid}: no stream restarted within {grace} s: the call ends",
                 guid=self.call_sid, grace=self.factory.reconnect_grace)
        self._hang_up()

    def _count_frames(self) -> None:
        """Add this stream's frames to the metric (once: the stream is let go after)."""
        if self.stream is not None:
            for event, count in self.stream.counts.items():
                FRAMES.labels(event if event in KNOWN_EVENTS else "unknown").inc(count)
            self.stream.counts.clear()


class TwilioStreamFactory(GatewayServerFactory):
    """
    @param public_url: the gateway's public base URL; Twilio signs the URL it
        was given, so behind a proxy this must be set. Empty: C{wss://} and the
        Host header (Twilio only opens C{wss} streams).
    @param auth_token: the Twilio account's auth token; empty: signatures are
        not checked.
    """

    protocol = TwilioStreamProtocol

    def __init__(self, *, tokens, registry, public_url, clock, auth_token: str = "",
                 max_message_bytes: int = 65536, max_gap_ms: int = 60_000,
                 max_dropped: int = 100, max_lead_ms: int = 2_000,
                 media_timeout: float | None = 30.0, reconnect_grace: float = 30.0,
                 ping_interval: float = 10.0, ping_timeout: float = 10.0):
        super().__init__()
        self.tokens = tokens
        self.registry = registry
        self.clock = clock
        self.public_url = public_url.rstrip("/")
        self.auth_token = auth_token
        self.max_dropped = max_dropped
        self.max_gap_ms = max_gap_ms
        self.max_lead_ms = max_lead_ms
        self.media_timeout = media_timeout
        self.reconnect_grace = reconnect_grace
        #: Call SID -> the sockets feeding it now or waiting for its restart.
        self.feeds: dict[str, list[TwilioStreamProtocol]] = {}
        # failByDrop=False: a peer that breaks the protocol (an oversized
        # frame: 1009) still gets a closing handshake that says why. Autobahn
        # pings every ping_interval and drops a socket whose pong does not
        # come within ping_timeout (a half-open connection).
        self.setProtocolOptions(
            maxMessagePayloadSize=max_message_bytes,
            maxFramePayloadSize=max_message_bytes,
            failByDrop=False,
            autoPingInterval=ping_interval,
            autoPingTimeout=ping_timeout,
        )

    def forget(self, protocol: TwilioStreamProtocol) -> None:
        """The socket no longer feeds its call."""
        feeds = self.feeds.get(protocol.call_sid, [])
        if protocol in feeds:
            feeds.remove(protocol)
        if not feeds:
            self.feeds.pop(protocol.call_sid, None)

    def shut_down(self) -> Deferred:
        """End the calls that wait for a restarted stream (flushed; the registry flushes the rest)."""
        waiting = [p for feeds in self.feeds.values() for p in feeds if p.waiting_for_restart]
        return DeferredList([protocol._hang_up() for protocol in waiting], consumeErrors=True)

    def signed_url(self, host: str, request_uri: str) -> str:
        """The URL Twilio computed its signature over."""
        base = self.public_url or f"wss://{host}"
        return base + request_uri
