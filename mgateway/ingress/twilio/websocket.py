# -*- test-case-name: tests.test_twilio_api,tests.test_twilio_restart -*-
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
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from mgateway.calls.errors import LegBusy
from mgateway.calls.namespaces import TWILIO
from mgateway.ingress.events import Terminated
from mgateway.ingress.twilio.feeds import CallFeeds
from mgateway.ingress.twilio.session import IDLE, POLICY, SUPERSEDED, Dropped, Started, Stopped, TwilioStream
from mgateway.ingress.twilio.signature import UpgradeSignature
from mgateway.ingress.wscore import CoreServerFactory, CoreServerProtocol
from mgateway.paths import TWILIO_STREAM_PATH
from mgateway.tokens import TWILIO_AUDIENCE, InvalidToken

log = Logger()

#: Twilio's events, and "dropped" (malformed frames): the metric's labels. Any
#: other event is counted as "unknown", so a protocol change shows up.
KNOWN_EVENTS = ("connected", "start", "media", "dtmf", "mark", "stop", "dropped")
FRAMES = Counter("asapp_mg_twilio_frames", "Twilio Media Streams frames received, by event.", ["event"])

#: Twilio does not pass query strings on Stream URLs, so the token is the last
#: segment of the path; C{?token=} is accepted too.
PATH_PREFIX = TWILIO_STREAM_PATH + "/"


def token_from(path: str, params: dict) -> str:
    if path.startswith(PATH_PREFIX) and len(path) > len(PATH_PREFIX):
        return path[len(PATH_PREFIX):].strip("/")
    return (params.get("token") or [""])[0]


class TwilioStreamProtocol(CoreServerProtocol):
    """
    @ivar guid: the Call SID this socket feeds (from its C{start}), kept
        after the socket is gone while it waits for a restart.
    """

    namespace = TWILIO
    core: TwilioStream | None = None

    def accept(self, request):
        factory = self.factory
        try:
            factory.tokens.verify(token_from(request.path, request.params), TWILIO_AUDIENCE)
        except InvalidToken as e:
            log.warn("twilio stream refused from {peer}: {reason}", peer=request.peer, reason=str(e))
            raise ConnectionDeny(401, "Invalid or expired access token")
        url = factory.signature.refused_url(request.headers, self.http_request_uri)
        if url is not None:
            log.warn("twilio stream refused from {peer}: bad X-Twilio-Signature for {url}",
                     peer=request.peer, url=url)
            raise ConnectionDeny(403, "Invalid X-Twilio-Signature")
        self.core = factory.new_stream()
        return None

    def _started(self, event: Started) -> None:
        feeds = self.factory.feeds
        superseded = feeds.take_over(event.call_sid, event.tracks)
        try:
            self.attach(event.call_sid, event.tracks)
        except LegBusy:
            # Only another ingress could feed a leg of namespace "twilio".
            self.core.terminate(POLICY, f"tracks of call {event.call_sid} are fed elsewhere")
        else:
            feeds.add(event.call_sid, self)
            log.info("twilio call {guid}: stream {stream_sid} started with tracks {tracks}",
                     guid=event.call_sid, stream_sid=event.stream_sid, tracks=list(event.tracks))
        for old in superseded:
            old.superseded(event.stream_sid)

    def _dropped(self, event: Dropped) -> None:
        log.warn("twilio call {guid}: dropped a frame: {reason}", guid=self.core.started.call_sid,
                 reason=event.reason)

    def _stopped(self, event: Stopped) -> None:
        log.info("twilio call {guid}: stream stopped", guid=self.core.started.call_sid)
        self.hang_up()
        self.sendClose(code=1000)

    handlers = {Started: _started, Dropped: _dropped, Stopped: _stopped}

    def superseded(self, by_stream_sid: str) -> None:
        """A newer stream of the call took this one's tracks: let go of the call, close if still open."""
        log.warn("twilio call {guid}: stream {stream_sid} superseded by stream {new_stream_sid}",
                 guid=self.guid, stream_sid=self.core.started.stream_sid, new_stream_sid=by_stream_sid)
        self.hang_up()
        if self.state != self.STATE_CLOSED:
            self.core.terminate(SUPERSEDED, f"superseded by stream {by_stream_sid}")
            self.drive()

    def terminated(self, event: Terminated) -> None:
        """
        A stalled stream (L{IDLE}) keeps its call for the restart, as a lost
        one does; any other failure ends it.
        """
        if event.close_code != IDLE:
            self.hang_up()
        super().terminated(event)

    def hang_up(self) -> Deferred:
        """Let go of the call now: it ends, flushed, unless another stream feeds it."""
        if self.media is not None:
            self.factory.feeds.forget(self.guid, self)
        return super().hang_up()

    def lost(self, code) -> None:
        started = self.core.started
        if started is not None:
            log.info("twilio call {guid}: stream {stream_sid} closed ({code}); frames {counts}; "
                     "gaps not filled, the timestamps running ahead of the clock (ms): {refused}",
                     guid=started.call_sid, stream_sid=started.stream_sid, code=code,
                     counts=dict(self.core.counts),
                     refused={track: t.refused_ms for track, t in self.core.timelines.items()})
        for event, count in self.core.counts.items():
            FRAMES.labels(event if event in KNOWN_EVENTS else "unknown").inc(count)
        if self.media is not None:
            self.factory.feeds.lost(self.guid, self)


class TwilioStreamFactory(CoreServerFactory):
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
        # Autobahn pings every ping_interval and drops a socket whose pong
        # does not come within ping_timeout (a half-open connection).
        super().__init__(registry=registry, clock=clock, max_frame_bytes=max_message_bytes,
                         autoPingInterval=ping_interval, autoPingTimeout=ping_timeout)
        self.tokens = tokens
        self.signature = UpgradeSignature(auth_token, public_url)
        self.max_dropped = max_dropped
        self.max_gap_ms = max_gap_ms
        self.max_lead_ms = max_lead_ms
        self.media_timeout = media_timeout
        #: The sockets feeding each call now, or waiting for its restart.
        self.feeds = CallFeeds(clock, reconnect_grace)

    def new_stream(self) -> TwilioStream:
        return TwilioStream(self.max_dropped, self.max_gap_ms, self.clock.seconds, self.max_lead_ms,
                            self.media_timeout)

    def shut_down(self) -> Deferred:
        """End the calls that wait for a restarted stream (flushed; the registry flushes the rest)."""
        return self.feeds.end_waiting()
