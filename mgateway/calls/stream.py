# -*- test-case-name: tests.test_call_registry,tests.test_direct_session -*-
"""One participant's stream within a call, and its per-period summary."""

from __future__ import annotations

import math
import uuid
from typing import Callable

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from mgateway.media.pcm import BYTES_PER_MS
from mgateway.transcript import Utterance

log = Logger()


@attrs.frozen
class StreamSummary:
    """
    The spec's C{summary}: what one started period of a stream received.

    C{total_audio_bytes} and C{audio_duration_ms} count only the audio the
    ingress received; gaps it filled with comfort noise to keep the timeline
    (lost chunks, reported pauses) are counted apart, in C{filled_audio_ms}
    (C{filledAudioMs}, beside the spec's fields).
    """

    total_audio_bytes: int
    audio_duration_ms: int
    streaming_seconds: int
    transcripts: int
    filled_audio_ms: int = 0

    def to_json(self, *, filled: bool = True) -> dict:
        """
        The spec's summary object; C{filled}: with C{filledAudioMs} (the
        direct API, whose client sends every byte itself, leaves it out).
        """
        summary = {
            "totalAudioBytes": self.total_audio_bytes,
            "audioDurationMs": self.audio_duration_ms,
            "streamingSeconds": self.streaming_seconds,
            "transcripts": self.transcripts,
        }
        if filled:
            summary["filledAudioMs"] = self.filled_audio_ms
        return summary


@attrs.define
class _Period:
    """Counters of one start..stop period."""

    started_at: float
    audio_bytes: int = 0
    filled_bytes: int = 0
    transcripts: int = 0

    def summary(self, now: float) -> StreamSummary:
        return StreamSummary(
            total_audio_bytes=self.audio_bytes,
            audio_duration_ms=self.audio_bytes // BYTES_PER_MS,
            streaming_seconds=math.ceil(max(0.0, now - self.started_at)),
            transcripts=self.transcripts,
            filled_audio_ms=self.filled_bytes // BYTES_PER_MS,
        )


class ParticipantStream:
    """
    The customer's or the agent's stream of one call.

    Its C{stream_id} stays the same for the whole call, across start/stop
    periods, so that webhook consumers can correlate utterances. Summaries
    are per period: each stop reports what was received since the matching
    start, so the summaries of a call add up to its total.

    A recogniser exists only while the stream is started and has received
    audio: it is created on the first audio after a start (so its timeline
    offset is the leg's position at that moment) and flushed on stop.
    """

    def __init__(self, role: str, engine, clock, on_utterance: Callable,
                 stream_id: str | None = None, on_failure: Callable | None = None):
        self.role = role
        self.stream_id = stream_id or str(uuid.uuid4())
        self._engine = engine
        self._clock = clock
        self._on_utterance = on_utterance
        self._on_failure = on_failure
        self._period: _Period | None = None
        self._transcriber = None
        self.language: str | None = None
        self.sender_id: str | None = None
        self.detailed_tokens = False
        #: Makes the recording of a period (None: no consent to record).
        self._recorder: Callable | None = None
        self._recording = None

    @property
    def started(self) -> bool:
        return self._period is not None

    def start(self, language: str, sender_id: str, detailed_tokens: bool,
              recorder: Callable | None = None) -> None:
        """@param recorder: with consent to record, makes each period's L{Recording}."""
        self._recorder = recorder
        self.language = language
        self.sender_id = sender_id
        self.detailed_tokens = detailed_tokens
        self._period = _Period(started_at=self._clock.seconds())

    def feed(self, pcm: bytes, position_ms: int, filled: bool = False) -> None:
        """
        Audio of the leg carrying this participant, which starts at
        C{position_ms}; C{filled}: comfort noise the ingress put in a gap.
        """
        period = self._period
        if period is None:
            return
        if self._transcriber is None:
            self._transcriber = self._engine.transcriber(
                self.language,
                lambda utterance: self._deliver(period, utterance),
                offset_ms=position_ms,
                on_failure=self._failed,
                name=self.stream_id,
            )
            self._recording = self._recorder() if self._recorder is not None else None
        if filled:
            period.filled_bytes += len(pcm)
        else:
            period.audio_bytes += len(pcm)
        self._transcriber.feed(pcm)
        if self._recording is not None:
            self._recording.write(pcm)

    def _deliver(self, period: _Period, utterance: Utterance) -> None:
        period.transcripts += 1
        self._on_utterance(self, utterance)

    def _failed(self, failure) -> None:
        if self._on_failure is not None:
            self._on_failure(self, failure)

    def stop(self) -> Deferred:
        """
        End the current period: flush the recogniser so the last words are
        delivered, then fire with the period's L{StreamSummary}.
        """
        period, transcriber = self._period, self._transcriber
        self._period = self._transcriber = None
        if self._recording is not None:
            self._recording.close()
            self._recording = None
        if period is None:
            return succeed(None)
        stopped_at = self._clock.seconds()
        flushed = transcriber.finish() if transcriber is not None else succeed(None)
        return flushed.addCallback(lambda _: period.summary(stopped_at))
