# -*- test-case-name: tests.test_timeline,tests.test_twilio_session,tests.test_jitter,tests.test_rtp_fast_path -*-
"""
Placing audio on one stream's continuous timeline: the one place that
decides how much comfort noise fills a gap and where received audio goes.

Every ingress whose sender says where its audio belongs uses it: Twilio's
millisecond timestamps, AudioHook's sample positions and reported gaps, the
RTP timestamps of a SIPREC stream (through the jitter buffer). Senders lose
and repeat audio, and go quiet; utterance times must still match the call,
so gaps are filled with comfort noise (not digital silence, which defeats
Vosk's endpointing).

A position is the sender's word, so a gap is filled only so far: at most
C{max_gap_ms} at once (hours of hold are not hours of noise) and, with a
clock, only as far as the time passed since the timeline began allows (plus
a tolerance for jitter). What a gap's fill leaves out moves the sender's
positions against the timeline (the skew): the audio that follows continues
where the timeline stands.

Audio that overlaps what is on the timeline already is handled by the
stream's L{Overlap} policy, chosen by each ingress: trimmed (a chunk sent
twice is a repeat), or kept whole and placed after (a packet that comes after
its time was filled is late speech, not a repeat), the slip counted.
"""

from __future__ import annotations

import enum
from typing import Callable

import attrs

from mgateway.media.noise import comfort_noise
from mgateway.media.pcm import SAMPLES_PER_MS


class Overlap(enum.Enum):
    """What becomes of received audio that overlaps what is on the timeline already."""

    #: Dropped: the timeline keeps its length (Twilio, AudioHook).
    TRIM = "trim"
    #: Kept whole and placed after, the sender's positions re-anchored there;
    #: L{TrackTimeline.slipped} counts by how much (RTP).
    KEEP = "keep"


@attrs.frozen
class Placed:
    """What to append for one chunk: comfort noise for a gap before it, then its audio."""

    fill: bytes
    pcm: bytes


class TrackTimeline:
    """
    One stream's timeline, in samples (8 kHz), against the positions its
    sender gives its audio.

    @param overlap: the L{Overlap} policy.
    @param max_gap_ms: the longest gap filled at once; a longer jump (a
        misbehaving sender, hours of hold) is filled only this far and the
        timeline is re-anchored, so memory and recognition time stay bounded.
    @param clock_now: seconds; None: fills are not held to a clock.
    @param max_lead_ms: how far the timeline may run ahead of the wall-clock
        time since it began, by filling gaps (jitter: the first chunk may come
        late, the next ones on time).
    @param noise_dbfs: the RMS level of the comfort noise.

    @ivar position_samples: samples on the timeline: received, and filled.
    @ivar skew: the sender's position where the timeline stands, minus
        C{position_samples}; None until the first chunk after L{reanchor}.
    @ivar slipped: samples by which kept audio was placed later than its
        sender's positions said (L{Overlap.KEEP}: late after a fill, or
        positions going back).
    """

    def __init__(self, max_gap_ms: int = 60_000, clock_now: Callable[[], float] | None = None,
                 max_lead_ms: int = 2_000, *, overlap: Overlap, noise_dbfs: float = -60):
        self._overlap = overlap
        self._max_gap = max_gap_ms * SAMPLES_PER_MS
        self._now = clock_now
        self._began = clock_now() if clock_now is not None else None
        self._max_lead = max_lead_ms * SAMPLES_PER_MS
        self._noise_dbfs = noise_dbfs
        self.skew: int | None = 0
        self.position_samples = 0
        self.slipped = 0
        self._refused = 0

    @property
    def position_ms(self) -> int:
        return self.position_samples // SAMPLES_PER_MS

    @property
    def refused_ms(self) -> int:
        """Gap time the wall clock did not allow to be filled."""
        return self._refused // SAMPLES_PER_MS

    @property
    def anchored(self) -> bool:
        """Whether the sender's positions are tied to the timeline (see L{reanchor})."""
        return self.skew is not None

    def reanchor(self) -> None:
        """
        The next chunk goes where the timeline stands, whatever its position
        says, and sets the sender's positions from there on (a new RTP
        source, with numbering of its own).
        """
        self.skew = None

    def place(self, timestamp_ms: int, pcm: bytes) -> Placed:
        """What to append so that C{pcm} (16-bit PCM) starts at C{timestamp_ms}."""
        fill, trim = self.advance(timestamp_ms * SAMPLES_PER_MS, len(pcm) // 2)
        return Placed(fill, pcm[2 * trim:])

    def advance(self, position: int, samples: int = 0,
                conceal: Callable[[int], bytes] | None = None) -> tuple[bytes, int]:
        """
        A chunk of C{samples} samples that the sender puts at C{position}
        (in samples; C{samples} may be 0, for a gap the sender reports, or
        for audio whose length is known only later, then added with
        L{extend}): the fill to append before it, and how many of its first
        samples to drop (L{Overlap.TRIM}: they overlap what is on the
        timeline already). The timeline then stands after the chunk.

        @param conceal: the codec's loss concealment, for a gap left by lost
            packets: given the gap's length, PCM for at most that many
            samples, which opens the fill; comfort noise does the rest.
        """
        if self.skew is None:
            self.skew = position - self.position_samples
        gap = position - self.skew - self.position_samples
        fill = trim = 0
        if gap > 0:
            capped = min(gap, self._max_gap)
            fill = self._held_to_clock(capped)
            self._refused += capped - fill
            self.skew += gap - fill
        elif gap < 0:
            if self._overlap is Overlap.TRIM:
                trim = min(-gap, samples)
            else:
                self.slipped -= gap
                self.skew += gap
        noise = self._fill(fill, conceal) if fill else b""
        self.position_samples += fill + samples - trim
        return noise, trim

    def extend(self, samples: int) -> None:
        """Received audio that continues where the timeline stands."""
        self.position_samples += samples

    def idle(self, samples: int) -> bytes:
        """
        Comfort noise for time passing with nothing from the sender (a quiet
        sender's silence, filled as it happens): the sender's position moves
        on with it, so the chunk that ends the quiet spell fills only what is
        left of its gap, and audio that was late rather than absent overlaps.
        Held to the wall clock like any fill; nothing while not anchored
        (after L{reanchor}, before the next chunk: the jitter buffer's
        start).
        """
        if self.skew is None:
            return b""
        fill = self._held_to_clock(samples)
        self._refused += samples - fill
        noise = self._fill(fill, None)
        self.position_samples += fill
        return noise

    def _fill(self, samples: int, conceal: Callable[[int], bytes] | None) -> bytes:
        head = conceal(samples)[: 2 * samples] if conceal is not None else b""
        concealed = len(head) // 2
        return head + comfort_noise(samples - concealed, self._noise_dbfs, start=self.position_samples + concealed)

    def _held_to_clock(self, samples: int) -> int:
        """How much of a fill of C{samples} the wall clock allows now (all of it without a clock)."""
        if self._now is None:
            return samples
        elapsed = int((self._now() - self._began) * 1000) * SAMPLES_PER_MS
        return min(samples, max(0, elapsed + self._max_lead - self.position_samples))
