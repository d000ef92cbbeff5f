"""
Twilio Media Streams, as Twilio sends them: JSON text frames whose numbers
(sequenceNumber, chunk, timestamp) are strings, 160-byte mu-law chunks (20 ms)
in base64, C{both_tracks} interleaved with shared chunk counters. Shapes follow
Twilio's "WebSocket Messages" documentation and its recorded sample session.
"""

from __future__ import annotations

import base64
import itertools
import json

from mgateway.media.g711 import ulaw_encode

ACCOUNT_SID = "AC18fbd524d33614fba208030751dffdca"
CHUNK = 160  # mu-law bytes per media message: 20 ms


class TwilioPeer:
    def __init__(self, call_sid: str, stream_sid: str = "MZ18ad3ab5a668481ce02b83e7395059f0",
                 tracks=("inbound", "outbound"), first_timestamp: int = 52):
        self.call_sid = call_sid
        self.stream_sid = stream_sid
        self.tracks = list(tracks)
        self.first_timestamp = first_timestamp
        self._sequence = 0
        self._chunk = 0

    def _next_sequence(self) -> str:
        self._sequence += 1
        return str(self._sequence)

    def connected(self) -> str:
        return json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})

    def start(self, custom_parameters=None) -> str:
        return json.dumps({
            "event": "start",
            "sequenceNumber": self._next_sequence(),
            "start": {
                "accountSid": ACCOUNT_SID,
                "streamSid": self.stream_sid,
                "callSid": self.call_sid,
                "tracks": self.tracks,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": custom_parameters or {},
            },
            "streamSid": self.stream_sid,
        })

    def media(self, track: str, mulaw: bytes, timestamp_ms: int) -> str:
        self._chunk += 1
        return json.dumps({
            "event": "media",
            "sequenceNumber": self._next_sequence(),
            "media": {
                "track": track,
                "chunk": str(self._chunk),
                "timestamp": str(timestamp_ms),
                "payload": base64.b64encode(mulaw).decode("ascii"),
            },
            "streamSid": self.stream_sid,
        })

    def media_frames(self, pcm_by_track: dict[str, bytes], skip=(), swap=()) -> list[str]:
        """
        Media frames for 16-bit PCM per track, the tracks interleaved in time.
        C{skip}: frame indices that are lost; C{swap}: indices whose frame
        arrives after the next one.
        """
        per_track = {}
        for track, pcm in pcm_by_track.items():
            mulaw = ulaw_encode(pcm)
            frames = [(i, mulaw[i * CHUNK : (i + 1) * CHUNK])
                      for i in range(-(-len(mulaw) // CHUNK)) if i not in skip]
            for j in range(len(frames) - 1):
                if frames[j][0] in swap:
                    frames[j], frames[j + 1] = frames[j + 1], frames[j]
            per_track[track] = frames
        out = []
        for row in itertools.zip_longest(*per_track.values()):
            for track, item in zip(per_track, row):
                if item is not None:
                    index, piece = item
                    out.append(self.media(track, piece, self.first_timestamp + index * 20))
        return out

    def dtmf(self, digit: str) -> str:
        return json.dumps({"event": "dtmf", "streamSid": self.stream_sid,
                           "sequenceNumber": self._next_sequence(),
                           "dtmf": {"track": "inbound_track", "digit": digit}})

    def stop(self) -> str:
        return json.dumps({
            "event": "stop",
            "sequenceNumber": self._next_sequence(),
            "stop": {"accountSid": ACCOUNT_SID, "callSid": self.call_sid},
            "streamSid": self.stream_sid,
        })
