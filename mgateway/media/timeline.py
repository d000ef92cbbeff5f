# -*- test-case-name: tests.test_twilio_session -*-
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
from mgateway.media.pcm import SAMPLES_PER_MS


@attrs.frozen
class Placed:
    """What to append for one chunk: comfort noise for a gap before it, then its audio."""

    fill: bytes
    pcm: bytes


class TrackTimeline:
    """
    One stream's timeline, in samples, against the positions its sender
    gives its chunks (Twilio's millisecond timestamps, AudioHook's sample
    positions and reported gaps).

    @param max_gap_ms: the longest gap filled at once; a longer jump (a
        misbehaving sender, hours of hold) is filled only this far and the
        timeline is re-anchored, so memory and recognition time stay bounded.
    @param clock_now: seconds; None: positions are not held to a clock.
    @param max_lead_ms: how far the timeline may run ahead of the wall-clock
        time since it began, by filling gaps (jitter: the first chunk may come
        late, the next ones on time).
    """

    def __init__(self, max_gap_ms: int = 60_000, clock_now: Callable[[], float] | None = None,
                 max_lead_ms: int = 2_000):
        self._max_gap = max_gap_ms * SAMPLES_PER_MS
        self._now = clock_now
        self._began = clock_now() if clock_now is not None else None
        self._max_lead = max_lead_ms * SAMPLES_PER_MS
        self._skew = 0
        #: Samples on the timeline: received, and filled.
        self.position_samples = 0
        self._refused = 0

    @property
    def position_ms(self) -> int:
        return self.position_samples // SAMPLES_PER_MS

    @property
    def refused_ms(self) -> int:
        """Gap time the wall clock did not allow to be filled."""
        return self._refused // SAMPLES_PER_MS

    def place(self, timestamp_ms: int, pcm: bytes) -> Placed:
        """What to append so that C{pcm} (16-bit PCM) starts at C{timestamp_ms}."""
        fill, trim = self.advance(timestamp_ms * SAMPLES_PER_MS, len(pcm) // 2)
        return Placed(fill, pcm[2 * trim:])

    def advance(self, position: int, samples: int) -> tuple[bytes, int]:
        """
        A chunk of C{samples} samples that the sender puts at C{position}
        (in samples; C{samples} may be 0, for a gap the sender reports): the
        comfort noise to append before it, and how many of its first samples
        to drop (they overlap what is on the timeline already). The timeline
        then stands after the chunk.
        """
        gap = position - self._skew - self.position_samples
        fill = trim = 0
        if gap > 0:
            capped = min(gap, self._max_gap)
            fill = min(capped, self._wall_allowance())
            self._refused += capped - fill
            self._skew += gap - fill
        elif gap < 0:
            trim = min(-gap, samples)
        noise = comfort_noise(fill, start=self.position_samples)
        self.position_samples += fill + samples - trim
        return noise, trim

    def _wall_allowance(self) -> int:
        """How far a gap may move the timeline ahead now, in samples (unbounded without a clock)."""
        if self._now is None:
            return self._max_gap
        elapsed = int((self._now() - self._began) * 1000) * SAMPLES_PER_MS
        return max(0, elapsed + self._max_lead - self.position_samples)
