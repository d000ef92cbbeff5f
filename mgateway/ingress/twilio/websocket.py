"""
The Twilio Media Streams transport: Autobahn frames into a L{TwilioStream},
decoded audio into the call registry under the Call SID.
"""

from __future__ import annotations

from autobahn.websocket.types import ConnectionDeny
from prometheus_client import Counter
from twisted.logger import Logger

from mgateway.api.tokens import InvalidToken
from mgateway.ingress.twilio.session import (
    POLICY,
    UNSUPPORTED_DATA,
    Audio,
    Dropped,
    Started,
    Stopped,
    StreamError,
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
        self.stream = TwilioStream(factory.max_dropped, factory.max_gap_ms)
        return None

    def onMessage(self, payload: bytes, isBinary: bool):
        if self.stream is None or self.stream.stopped:
            return
        if isBinary:
            return self._fail(StreamError(UNSUPPORTED_DATA, "binary frame on a Twilio stream"))
        try:
            events = self.stream.receive(payload.decode("utf-8", "replace"))
        except StreamError as e:
            return self._fail(e)
        for event in events:
            if isinstance(event, Audio):
                self.media.audio(event.track, event.pcm)
            elif isinstance(event, Started):
                self._started(event)
            elif isinstance(event, Dropped):
                log.warn("twilio call {guid}: dropped a frame: {reason}",
                         guid=self.stream.started.call_sid, reason=event.reason)
            elif isinstance(event, Stopped):
                log.info("twilio call {guid}: stream stopped", guid=self.stream.started.call_sid)
                self._hang_up()
                self.sendClose(code=1000)

    def _started(self, event: Started) -> None:
        try:
            self.media = self.factory.registry.attach("twilio", event.call_sid, event.tracks)
        except ValueError as e:
            return self._fail(StreamError(POLICY, str(e)))
        log.info("twilio call {guid}: stream {stream_sid} started with tracks {tracks}",
                 guid=event.call_sid, stream_sid=event.stream_sid, tracks=list(event.tracks))

    def _fail(self, error: StreamError) -> None:
        started = self.stream.started if self.stream else None
        log.warn("twilio call {guid}: closing the stream: {reason}",
                 guid=started.call_sid if started else "(before start)", reason=error.reason)
        self._hang_up()
        self._count_frames()
        self.stream = None
        self.sendClose(code=error.close_code, reason=error.reason[:120])

    def _hang_up(self) -> None:
        media, self.media = self.media, None
        if media is not None:
            media.hang_up().addErrback(lambda failure: log.failure(
                "twilio call {guid}: the call's last words were lost", failure, guid=media.call.guid))

    def onClose(self, wasClean, code, reason):
        # Twilio may drop the connection without a "stop": the call still ends
        # and its streams are flushed.
        self._hang_up()
        if self.stream is not None and self.stream.started is not None:
            log.info("twilio call {guid}: stream {stream_sid} closed ({code}); frames {counts}",
                     guid=self.stream.started.call_sid, stream_sid=self.stream.started.stream_sid,
                     code=code, counts=dict(self.stream.counts))
        self._count_frames()

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

    def __init__(self, *, tokens, registry, public_url, auth_token: str = "",
                 max_message_bytes: int = 65536, max_gap_ms: int = 60_000,
                 max_dropped: int = 100):
        super().__init__()
        self.tokens = tokens
        self.registry = registry
        self.public_url = public_url.rstrip("/")
        self.auth_token = auth_token
        self.max_dropped = max_dropped
        self.max_gap_ms = max_gap_ms
        # failByDrop=False: a peer that breaks the protocol (an oversized
        # frame: 1009) still gets a closing handshake that says why.
        self.setProtocolOptions(
            maxMessagePayloadSize=max_message_bytes,
            maxFramePayloadSize=max_message_bytes,
            failByDrop=False,
        )

    def signed_url(self, host: str, request_uri: str) -> str:
        """The URL Twilio computed its signature over."""
        base = self.public_url or f"wss://{host}"
        return base + request_uri
