"""
Placing timestamped chunks of audio on one continuous timeline.

Transports that carry a media timestamp with each chunk (Twilio media
messages, MKV blocks) can lose or repeat chunks. Utterance times must still
match the call, so gaps are filled with comfort noise (not digital silence,
which defeats Vosk's endpointing) and overlaps are trimmed.
"""

from __future__ import annotations

from mgateway.media.noise import comfort_noise
from mgateway.media.pcm import BYTES_PER_MS


class TrackTimeline:
    """
    @param max_gap_ms: the longest gap filled at once; a longer jump (a
        misbehaving sender, hours of hold) is filled only this far and the
        timeline is re-anchored, so memory and recognition time stay bounded.
    """

    def __init__(self, max_gap_ms: int = 60_000):
        self._max_gap_ms = max_gap_ms
        self._skew_ms = 0
        self.written_bytes = 0
        self.filled_ms = 0
        self.trimmed_ms = 0

    @property
    def position_ms(self) -> int:
        return self.written_bytes // BYTES_PER_MS

    def place(self, timestamp_ms: int, pcm: bytes) -> bytes:
        """The PCM to append so that C{pcm} starts at C{timestamp_ms}."""
        target = timestamp_ms - self._skew_ms
        gap = target - self.position_ms
        out = b""
        if gap > 0:
            fill = min(gap, self._max_gap_ms)
            self._skew_ms += gap - fill
            self.filled_ms += fill
            out = comfort_noise(fill * BYTES_PER_MS // 2, start=self.written_bytes // 2)
        elif gap < 0:
            overlap = min(-gap * BYTES_PER_MS, len(pcm))
            self.trimmed_ms += overlap // BYTES_PER_MS
            pcm = pcm[overlap:]
        out += pcm
        self.written_bytes += len(out)
        return out
