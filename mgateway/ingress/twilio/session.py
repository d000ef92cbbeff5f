# -*- test-case-name: tests.test_twilio_session -*-
"""
One Twilio Media Streams WebSocket, as a sans-I/O state machine.

Twilio sends JSON text frames: C{connected}, C{start}, then C{media} (base64
mu-law, 8 kHz, with a millisecond C{timestamp} per chunk), C{dtmf}, C{mark},
and C{stop}. Numbers such as C{sequenceNumber}, C{chunk} and C{timestamp} are
JSON strings. A fork stream is one-way: nothing is ever sent back.

The shape of every ingress core (L{mgateway.ingress.events}): feed frames
with L{TwilioStream.receive_text} / L{TwilioStream.receive_bytes} and the
clock with L{TwilioStream.handle_timer}, read L{TwilioStream.events}. A
stream that cannot go on ends with a L{Terminated} event carrying the
WebSocket close code; nothing raises.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import Counter
from typing import Callable

import attrs

from mgateway.ingress.events import IngressError, LegAudio, Terminated
from mgateway.media.g711 import ulaw_decode
from mgateway.media.timeline import Overlap, TrackTimeline

TRACKS = ("inbound", "outbound")


#: WebSocket close codes for a stream that cannot go on. Servers may only
#: choose codes of the 4000-4999 range for their own reasons; these mirror the
#: RFC 6455 codes they stand for (1003, 1007, 1008) plus 3000.
UNSUPPORTED_DATA = 4003
MALFORMED = 4007
POLICY = 4008
#: A newer stream for the same call took this one's tracks over (1001, going away).
SUPERSEDED = 4001
#: No media for too long (the direct API's code for an idle connection).
IDLE = 4083


class StreamError(IngressError):
    """The socket cannot continue; C{close_code} is the WebSocket close code."""


@attrs.frozen
class Started:
    call_sid: str
    stream_sid: str
    tracks: tuple[str, ...]
    custom_parameters: dict


@attrs.frozen
class Stopped:
    pass


@attrs.frozen
class Dropped:
    """A frame that was malformed and dropped; the stream goes on."""

    reason: str


class TwilioStream:
    """
    @param max_dropped: malformed frames tolerated before the socket is
        closed: a sender that only sends garbage is cut off.
    @param max_gap_ms, max_lead_ms: see L{TrackTimeline}.
    @param clock_now: seconds: holds timestamps to the wall clock and times
        the media inactivity limit.
    @param media_timeout: seconds without a C{media} frame (or, before the
        first, since the socket opened) after which L{handle_timer} gives up
        on the stream (a stalled or half-open connection); None: never.
    """

    def __init__(self, max_dropped: int = 100, max_gap_ms: int = 60_000,
                 clock_now: Callable[[], float] | None = None, max_lead_ms: int = 2_000,
                 media_timeout: float | None = None):
        self._max_dropped = max_dropped
        self._max_gap_ms = max_gap_ms
        self._now = clock_now
        self._max_lead_ms = max_lead_ms
        self._media_timeout = media_timeout if clock_now is not None else None
        self._last_media_at = clock_now() if clock_now is not None else None
        self.started: Started | None = None
        self.stopped = False
        self.terminated: Terminated | None = None
        self.timelines: dict[str, TrackTimeline] = {}
        self.counts: Counter = Counter()
        self._events: list = []

    def events(self) -> list:
        """What the input so far caused, oldest first; each call empties the list."""
        events, self._events = self._events, []
        return events

    def data_to_send(self) -> list:
        """Nothing, ever: a fork stream is one-way (the shape every core has)."""
        return []

    def receive_text(self, text: str) -> None:
        """One text frame (after C{stop} or the end, frames are ignored)."""
        if self.terminated is None and not self.stopped:
            try:
                self._events += self._receive(text)
            except StreamError as e:
                self._terminate(e)

    def receive_bytes(self, data: bytes) -> None:
        """Twilio sends only text: a binary frame ends the stream."""
        if self.terminated is None and not self.stopped:
            self._terminate(StreamError(UNSUPPORTED_DATA, "binary frame on a Twilio stream"))

    def terminate(self, close_code: int, reason: str) -> None:
        """
        The gateway gives up on the stream (its tracks are fed elsewhere, a
        newer stream took them): it ends as if the sender had broken it.
        """
        if self.terminated is None and not self.stopped:
            self._terminate(StreamError(close_code, reason))

    def _terminate(self, error: StreamError) -> None:
        self.terminated = Terminated(error.close_code, error.reason)
        self._events.append(self.terminated)

    def get_timer(self) -> float | None:
        """When L{handle_timer} is next due (seconds), or None."""
        if self._media_timeout is None or self.stopped or self.terminated is not None:
            return None
        return self._last_media_at + self._media_timeout

    def handle_timer(self, now: float) -> None:
        """Terminates the stream (L{IDLE}) once no media came for the timeout."""
        deadline = self.get_timer()
        if deadline is not None and now >= deadline:
            self._terminate(StreamError(IDLE, f"no media for {self._media_timeout:g} s"))

    def _receive(self, text: str) -> list:
        """Events for one text frame; raises L{StreamError} when the socket must close."""
        try:
            frame = json.loads(text)
        except ValueError:
            raise StreamError(MALFORMED, "frame is not JSON") from None
        if not isinstance(frame, dict) or not isinstance(frame.get("event"), str):
            raise StreamError(MALFORMED, "frame is not a JSON object with an \"event\"")
        event = frame["event"]
        self.counts[event] += 1
        try:
            if event == "connected":
                return []
            if event == "start":
                return [self._start(frame)]
            if self.started is None:
                raise StreamError(POLICY, f"{json.dumps(event)} before \"start\"")
            if event == "media":
                return self._media(frame)
            if event == "stop":
                self.stopped = True
                return [Stopped()]
            # dtmf and mark carry nothing to transcribe; unknown events are
            # counted, so a protocol change shows up in the metrics.
            return []
        except _Malformed as e:
            self.counts["dropped"] += 1
            if self.counts["dropped"] > self._max_dropped:
                raise StreamError(MALFORMED, f"more than {self._max_dropped} malformed frames") from None
            return [Dropped(f"{event}: {e}")]

    def _start(self, frame: dict) -> Started:
        if self.started is not None:
            raise StreamError(POLICY, "second \"start\" on one stream")
        start = frame.get("start")
        if not isinstance(start, dict):
            raise StreamError(POLICY, "\"start\" without its start object")
        call_sid, stream_sid = start.get("callSid"), start.get("streamSid") or frame.get("streamSid")
        if not isinstance(call_sid, str) or not call_sid:
            raise StreamError(POLICY, "\"start\" without callSid")
        tracks = start.get("tracks", ["inbound"])
        if not isinstance(tracks, list) or not tracks or any(t not in TRACKS for t in tracks):
            raise StreamError(POLICY, f"unsupported tracks {json.dumps(tracks)}")
        media_format = start.get("mediaFormat") or {}
        if (media_format.get("encoding", "audio/x-mulaw"), media_format.get("sampleRate", 8000),
                media_format.get("channels", 1)) != ("audio/x-mulaw", 8000, 1):
            raise StreamError(POLICY, f"unsupported media format {json.dumps(media_format)}")
        parameters = start.get("customParameters") or {}
        self.started = Started(call_sid, str(stream_sid), tuple(dict.fromkeys(tracks)),
                               dict(parameters) if isinstance(parameters, dict) else {})
        # A chunk whose time is on the timeline already was sent twice: trimmed.
        self.timelines = {track: TrackTimeline(self._max_gap_ms, self._now, self._max_lead_ms, overlap=Overlap.TRIM)
                          for track in self.started.tracks}
        return self.started

    def _media(self, frame: dict) -> list:
        media = frame.get("media")
        if not isinstance(media, dict):
            raise _Malformed("no media object")
        track = media.get("track", "inbound")
        timeline = self.timelines.get(track)
        if timeline is None:
            raise _Malformed(f"track {track!r} was not announced in start")
        try:
            timestamp = int(media["timestamp"])
            payload = base64.b64decode(media["payload"], validate=True)
        except (KeyError, TypeError, ValueError, binascii.Error) as e:
            raise _Malformed(f"bad timestamp or payload ({e.__class__.__name__})") from None
        if timestamp < 0:
            raise _Malformed("negative timestamp")
        if self._now is not None:
            self._last_media_at = self._now()
        placed = timeline.place(timestamp, ulaw_decode(payload))
        return ([LegAudio(track, placed.fill, filled=True)] if placed.fill else []) + \
            ([LegAudio(track, placed.pcm)] if placed.pcm else [])


class _Malformed(Exception):
    pass
