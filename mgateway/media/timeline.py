"""
Placing timestamped chunks of audio on one continuous timeline.

Transports that carry a media timestamp with each chunk (Twilio media
messages, MKV blocks) can lose or repeat chunks. Utterance times must still
match the call, so gaps are filled with comfort noise (not digital silence,
which defeats Vosk's endpointing) and overlaps are trimmed.

A timestamp is the sender's word, so it is held to the wall clock: a gap is
filled only as far as the time that has passed since the timeline began
allows (plus a tolerance for jitter), never by whatever a jump in the
timestamps asks. Audio that was received is always kept whole.
"""

from __future__ import annotations

from typing import Callable

import attrs

from mgateway.media.noise import comfort_noise

#: Bytes of 16-bit PCM per millisecond at 8 kHz.
BYTES_PER_MS = 16


@attrs.frozen
class Placed:
    """What to append for one chunk: comfort noise for a gap before it, then its audio."""

    fill: bytes
    pcm: bytes


class TrackTimeline:
    """
    @param max_gap_ms: the longest gap filled at once; a longer jump (a
        misbehaving sender, hours of hold) is filled only this far and the
        timeline is re-anchored, so memory and recognition time stay bounded.
    @param clock_now: seconds; None: timestamps are not held to a clock.
    @param max_lead_ms: how far the timeline may run ahead of the wall-clock
        time since it began, by filling gaps (jitter: the first chunk may come
        late, the next ones on time).
    """

    def __init__(self, max_gap_ms: int = 60_000, clock_now: Callable[[], float] | None = None,
                 max_lead_ms: int = 2_000):
        self._max_gap_ms = max_gap_ms
        self._now = clock_now
        self._began = clock_now() if clock_now is not None else None
        self._max_lead_ms = max_lead_ms
        self._skew_ms = 0
        self.written_bytes = 0
        self.filled_ms = 0
        self.trimmed_ms = 0
        #: Gap time the wall clock did not allow to be filled.
        self.refused_ms = 0

    @property
    def position_ms(self) -> int:
        return self.written_bytes // BYTES_PER_MS

    def place(self, timestamp_ms: int, pcm: bytes) -> Placed:
        """What to append so that C{pcm} starts at C{timestamp_ms}."""
        target = timestamp_ms - self._skew_ms
        gap = target - self.position_ms
        fill = b""
        if gap > 0:
            capped = min(gap, self._max_gap_ms)
            allowed = min(capped, self._wall_allowance_ms())
            self.refused_ms += capped - allowed
            self._skew_ms += gap - allowed
            self.filled_ms += allowed
            fill = comfort_noise(allowed * BYTES_PER_MS // 2, start=self.written_bytes // 2)
        elif gap < 0:
            overlap = min(-gap * BYTES_PER_MS, len(pcm))
            self.trimmed_ms += overlap // BYTES_PER_MS
            pcm = pcm[overlap:]
        self.written_bytes += len(fill) + len(pcm)
        return Placed(fill, pcm)

    def _wall_allowance_ms(self) -> int:
        """How far a gap may move the timeline ahead now (unbounded without a clock)."""
        if self._now is None:
            return self._max_gap_ms
        elapsed_ms = int((self._now() - self._began) * 1000)
        return max(0, elapsed_ms + self._max_lead_ms - self.position_ms)
