"""
One Twilio Media Streams WebSocket, as a sans-I/O state machine.

Twilio sends JSON text frames: C{connected}, C{start}, then C{media} (base64
mu-law, 8 kHz, with a millisecond C{timestamp} per chunk), C{dtmf}, C{mark},
and C{stop}. Numbers such as C{sequenceNumber}, C{chunk} and C{timestamp} are
JSON strings. A fork stream is one-way: nothing is ever sent back.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import Counter

import attrs

from mgateway.media.g711 import ulaw_decode
from mgateway.media.timeline import TrackTimeline

TRACKS = ("inbound", "outbound")


#: WebSocket close codes for a stream that cannot go on. Servers may only
#: choose codes of the 4000-4999 range for their own reasons; these mirror the
#: RFC 6455 codes they stand for (1003, 1007, 1008) plus 3000.
UNSUPPORTED_DATA = 4003
MALFORMED = 4007
POLICY = 4008


class StreamError(Exception):
    """The socket cannot continue; C{close_code} is the WebSocket close code."""

    def __init__(self, close_code: int, reason: str):
        super().__init__(reason)
        self.close_code = close_code
        self.reason = reason


@attrs.frozen
class Started:
    call_sid: str
    stream_sid: str
    tracks: tuple[str, ...]
    custom_parameters: dict


@attrs.frozen
class Audio:
    track: str
    pcm: bytes


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
    @param max_gap_ms: see L{TrackTimeline}.
    """

    def __init__(self, max_dropped: int = 100, max_gap_ms: int = 60_000):
        self._max_dropped = max_dropped
        self._max_gap_ms = max_gap_ms
        self.started: Started | None = None
        self.stopped = False
        self.timelines: dict[str, TrackTimeline] = {}
        self.counts: Counter = Counter()

    def receive(self, text: str) -> list:
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
                raise StreamError(POLICY, f"{event!r} before \"start\"")
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
            raise StreamError(POLICY, f"unsupported tracks {tracks!r}")
        media_format = start.get("mediaFormat") or {}
        if (media_format.get("encoding", "audio/x-mulaw"), media_format.get("sampleRate", 8000),
                media_format.get("channels", 1)) != ("audio/x-mulaw", 8000, 1):
            raise StreamError(POLICY, f"unsupported media format {media_format!r}")
        parameters = start.get("customParameters") or {}
        self.started = Started(call_sid, str(stream_sid), tuple(dict.fromkeys(tracks)),
                               dict(parameters) if isinstance(parameters, dict) else {})
        self.timelines = {track: TrackTimeline(self._max_gap_ms) for track in self.started.tracks}
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
        pcm = timeline.place(timestamp, ulaw_decode(payload))
        return [Audio(track, pcm)] if pcm else []


class _Malformed(Exception):
    pass
