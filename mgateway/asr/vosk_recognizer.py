# -*- test-case-name: tests.test_asr,tests.test_vosk_parity -*-
"""
L{IRecognizer} on a Vosk C{KaldiRecognizer}: PCM in, final results out as
L{Utterance}s with word timings, utterances ended by the stream's own
voice-activity detector (L{mgateway.asr.endpointer}) or by Kaldi's rules,
whichever comes first.
"""

from __future__ import annotations

import json
from typing import Callable

import attrs
import vosk
from prometheus_client import Counter
from twisted.logger import Logger
from zope.interface import implementer

from mgateway.asr.endpointer import SpeechEndpointer
from mgateway.interfaces import IEndpointing, IMemoryRelease, IRecognizer
from mgateway.transcript import Utterance, Word

#: Audio handed to Vosk per C{AcceptWaveform} call. Vosk checks for an
#: endpoint once per call and, when one fires, returns everything decoded so
#: far as one result: a slice holding the end of one sentence and the start of
#: the next would merge them. A fixed size also makes the results independent
#: of how the caller chunks its audio, and Vosk hears the audio exactly as a
#: client feeding it 100 ms chunks (vosk-server's clients) does. Vosk decodes
#: in batches of about 80 ms anyway, so holding back less than one slice adds
#: little latency.
SLICE_MS = 100

#: The longest utterance Vosk is finalised ahead of a decision in (see
#: L{VoskRecognizer}): if speech resumes, it is decoded again, about 0.12 s
#: of CPU a second on the Korean small model, so at most about 1.2 s.
REDECODE_LIMIT_MS = 10_000

log = Logger()

DROPPED = Counter(
    "asapp_mg_recognized_dropped",
    "Vosk results dropped before becoming utterances, by reason (no_speech: the voice-activity detector "
    "heard no speech in the audio the result covers).",
    ["reason"],
)

DECODED_AGAIN = Counter(
    "asapp_mg_asr_decoded_again_audio_seconds",
    "Audio Vosk decoded a second time: speech resumed in a pause after it was finalised ahead of the "
    "endpointer's decision, and the utterance was decoded again from its start.",
)

#: What L{VoskRecognizer} gives back once its stream is done with it:
#: C{(kaldi, samples it decoded in all, endpointer or None)}.
Recycle = Callable[[vosk.KaldiRecognizer, int, "SpeechEndpointer | None"], None]


@implementer(IRecognizer, IEndpointing)
class VoskRecognizer:
    """
    One participant stream's recogniser. Blocking: call it from one worker
    thread at a time, never the reactor thread.

    Times are milliseconds from the first sample of this stream: Vosk's own
    word times count across endpoints from the first sample its recogniser
    ever decoded, less C{samples_before} for a recycled one.

    With an C{endpointer}, the audio goes to it as it comes (Vosk gets it in
    100 ms slices); once it has heard speech followed by its silence, the
    utterance is delivered. It was finalised with C{FinalResult()} on the
    slices Vosk had when the pause ran to
    L{mgateway.asr.endpointer.FINALISE_AHEAD_MS} short of that, so that
    Vosk's 40-170 ms of finalising is done before the silence completes. If
    speech resumes in between, that result is thrown away and the
    utterance's audio is decoded again, from its start, as one: Kaldi's
    language model would otherwise start afresh at the cut, and on the
    Korean model that changed most words of a sentence with such a pause
    (C{bench/finalise_ahead_words.py}). Decoding it again costs about an
    eighth of its length in CPU, so Vosk is finalised ahead only while its
    utterance is at most C{redecode_limit_ms} long; a longer one is
    finalised at the decision. Only that much of its audio is kept.

    C{FinalResult()}, not C{Result()} as Vosk's own endpoint does: in
    mid-stream C{Result()} leaves the frames Kaldi has not decoded yet (the
    utterance's last word or two) to the next utterance, and over a long
    stream of such cuts the decoder drifts into a few long words a sentence,
    their times seconds early (C{tests/test_vosk_long_stream.py}).
    C{FinalResult()} decodes them and starts the feature pipeline afresh for
    the next utterance; Vosk's times go on counting from the first sample it
    was given, audio decoded again included. Neither the rest of the slice
    nor its decoding is waited for: that audio is silence by then, and goes
    to Vosk with the next utterance's. Kaldi's rules stay as the backstop
    (rule 5 cuts an utterance at C{max_utterance_ms}); an endpoint of
    Kaldi's after Vosk was finalised ahead delivers that result with Kaldi's.
    A result whose audio held no speech by the detector (Kaldi guessing a
    word in a long silence, the flush of a silent tail) is dropped, logged
    and counted: silence alone never makes an utterance.

    @ivar model: the shared C{vosk.Model}.
    @param kaldi: a C{KaldiRecognizer} on C{model} with words on whose last
        call was C{FinalResult()} (a spare, L{mgateway.asr.warm}); None: a new one.
    @param samples_before: samples C{kaldi} decoded before: Vosk's times go
        on counting from its first sample ever.
    @param recycle: given C{(kaldi, samples decoded in all, endpointer)}
        once L{finish} is done with them, so that another stream can use them.
    @param endpointer: this stream's voice-activity detector, fresh or
        L{SpeechEndpointer.reset}; None: Kaldi's rules alone end utterances.
    @param release_memory: called once L{finish} has handed back or freed
        the Kaldi recogniser (L{mgateway.memory}).
    @param redecode_limit_ms: the longest utterance Vosk is finalised ahead in.
    @ivar endpoints_ms: where the endpointer ended an utterance, in
        milliseconds of this stream's audio.
    @ivar finalised_ahead_ms: where Vosk was finalised ahead of a decision
        (the end of the whole slices it had), in milliseconds of this
        stream's audio.
    @ivar redecoded_ms: where speech resumed after Vosk was finalised ahead,
        and the utterance was decoded again, in milliseconds of this
        stream's audio.
    """

    def __init__(self, model: vosk.Model, sample_rate: int = 8000, kaldi: vosk.KaldiRecognizer | None = None,
                 samples_before: int = 0, recycle: Recycle | None = None,
                 endpointer: SpeechEndpointer | None = None, release_memory: IMemoryRelease | None = None,
                 redecode_limit_ms: int = REDECODE_LIMIT_MS):
        self.model = model
        self._release_memory = release_memory
        if kaldi is None:
            kaldi = vosk.KaldiRecognizer(model, sample_rate)
            kaldi.SetWords(True)
        self._recognizer = kaldi
        self._samples_before = samples_before
        self._sample_rate = sample_rate
        self._recycle = recycle
        self._bytes_per_ms = sample_rate * 2 / 1000
        self._slice_bytes = int(self._bytes_per_ms * SLICE_MS) // 2 * 2
        self._redecode_limit_bytes = int(self._bytes_per_ms * redecode_limit_ms)
        self._held = bytearray()
        #: This stream's audio Vosk was given, in whole slices.
        self._fed_bytes = 0
        #: Audio Vosk was given again (an utterance decoded again): its times count it.
        self._redecoded_bytes = 0
        #: The audio of Vosk's utterance so far (since its last final result): what would be decoded
        #: again; kept up to the limit (a long silence is not held), counted past it.
        self._utterance_audio = bytearray()
        self._utterance_bytes = 0
        self._segment_start_ms = 0
        self._endpointer = endpointer
        self._ahead: FinalisedAhead | None = None
        self.endpoints_ms: list[int] = []
        self.finalised_ahead_ms: list[int] = []
        self.redecoded_ms: list[int] = []

    def accept(self, pcm: bytes) -> list[Utterance]:
        """
        The endpointer hears the audio as it comes, Vosk in whole slices:
        each piece goes to the endpointer up to the next slice's end, so it
        is never more than a slice ahead of Vosk. When it says to finalise
        ahead, Vosk is finalised at once on what it was fed (whole slices,
        so the same whatever the caller's chunks); the slice that was in
        held only non-speech, and is decoded with the next utterance's
        audio. When it decides, the result finalised ahead is delivered.
        """
        utterances = []
        view = memoryview(pcm)
        while view:
            piece = view[: self._slice_bytes - len(self._held)]
            taken = self._endpointer.accept(piece) if self._endpointer is not None else len(piece)
            self._held += piece[:taken]
            view = view[taken:]
            if len(self._held) == self._slice_bytes:
                utterances += self._feed(bytes(self._held))
                self._held.clear()
            if self._endpointer is not None:
                utterances += self._follow_endpointer()
        return utterances

    def _follow_endpointer(self) -> list[Utterance]:
        endpointer = self._endpointer
        if self._ahead is not None and not endpointer.ahead_taken and not endpointer.speech_ended:
            return self._decode_again()
        if endpointer.finalise_ahead and self._utterance_bytes <= self._redecode_limit_bytes:
            endpointer.take_ahead()
            self.finalised_ahead_ms.append(self._position_ms())
            audio, segment_start_ms = bytes(self._utterance_audio), self._segment_start_ms
            self._ahead = FinalisedAhead(self._final(self._recognizer.FinalResult()), audio, segment_start_ms)
        elif endpointer.speech_ended:
            self.endpoints_ms.append(int((self._fed_bytes + len(self._held)) / self._bytes_per_ms))
            if self._ahead is not None:
                ahead, self._ahead = self._ahead, None
                return self._deliver(ahead.utterance)
            return self._finalise()
        return []

    @property
    def decoded_again_ms(self) -> float:
        """The audio Vosk was given again (L{redecoded_ms}), in all, milliseconds."""
        return self._redecoded_bytes / self._bytes_per_ms

    @property
    def silence_needed_ms(self) -> float | None:
        """L{IEndpointing}: from the endpointer; None without one (Kaldi's rules cannot say)."""
        return self._endpointer.silence_needed_ms if self._endpointer is not None else None

    def finish(self) -> list[Utterance]:
        utterances = self._feed(bytes(self._held)) if self._held else []
        self._held.clear()
        utterances += self._finalise()
        # The Kaldi recogniser leaves this object here, handed back or freed,
        # so that the release below can give its memory back to the system.
        kaldi, self._recognizer = self._recognizer, None
        endpointer, self._endpointer = self._endpointer, None
        if self._recycle is not None:
            if endpointer is not None:
                endpointer.reset()
            self._recycle(kaldi, self._samples_before + (self._fed_bytes + self._redecoded_bytes) // 2, endpointer)
        del kaldi, endpointer
        if self._release_memory is not None:
            self._release_memory.release()
        return utterances

    def _feed(self, pcm: bytes) -> list[Utterance]:
        """Audio the endpointer has heard, to Vosk."""
        self._fed_bytes += len(pcm)
        return self._decode(pcm)

    def _decode(self, pcm: bytes) -> list[Utterance]:
        """Audio to Vosk; Kaldi's own endpoint ends the utterance there."""
        self._utterance_bytes += len(pcm)
        if self._utterance_bytes <= self._redecode_limit_bytes:
            self._utterance_audio += pcm
        if not self._recognizer.AcceptWaveform(pcm):
            return []
        return self._finalise(self._recognizer.Result)

    def _decode_again(self) -> list[Utterance]:
        """
        Speech resumed after Vosk was finalised ahead: what it decoded since
        is let go (C{FinalResult()}, so that its feature pipeline starts
        afresh), and the utterance's audio is decoded again as one.
        """
        ahead, self._ahead = self._ahead, None
        self.redecoded_ms.append(self._position_ms())
        self._recognizer.FinalResult()
        again = ahead.audio + bytes(self._utterance_audio)
        self._redecoded_bytes += len(again)
        DECODED_AGAIN.inc(len(again) / self._bytes_per_ms / 1000)
        self._utterance_audio.clear()
        self._utterance_bytes = 0
        self._segment_start_ms = ahead.segment_start_ms
        utterances = []
        for start in range(0, len(again), self._slice_bytes):
            utterances += self._decode(again[start : start + self._slice_bytes])
        return utterances

    def _finalise(self, result: Callable[[], str] | None = None) -> list[Utterance]:
        """Vosk's final result (C{FinalResult()} unless given), with what was finalised ahead: delivered."""
        utterance = self._final((result or self._recognizer.FinalResult)())
        if self._ahead is not None:
            ahead, self._ahead = self._ahead, None
            utterance = joined([part for part in (ahead.utterance, utterance) if part is not None])
        return self._deliver(utterance)

    def _final(self, result_json: str) -> Utterance | None:
        """The utterance of one of Vosk's final results; its audio is done with."""
        segment_start_ms, self._segment_start_ms = self._segment_start_ms, self._position_ms()
        self._utterance_audio.clear()
        self._utterance_bytes = 0
        time_offset = (self._samples_before + self._redecoded_bytes // 2) / self._sample_rate
        return utterance_from_result(json.loads(result_json), segment_start_ms, self._segment_start_ms, time_offset)

    def _deliver(self, utterance: Utterance | None) -> list[Utterance]:
        """The utterance that ended, unless its audio held no speech; the endpointer waits for new speech."""
        if self._endpointer is not None:
            heard = self._endpointer.heard_speech
            self._endpointer.close()
            if utterance is not None and not heard:
                DROPPED.labels("no_speech").inc()
                log.info(
                    "dropped Vosk's {text!r} ({start_ms}-{end_ms} ms): no speech in its audio",
                    text=utterance.text, start_ms=utterance.start_ms, end_ms=utterance.end_ms,
                )
                return []
        return [utterance] if utterance is not None else []

    def _position_ms(self) -> int:
        return int(self._fed_bytes / self._bytes_per_ms)


@attrs.frozen
class FinalisedAhead:
    """Vosk's result when it was finalised ahead of a decision, and what to decode again if speech resumes."""

    utterance: Utterance | None
    #: The audio of that result (Vosk's utterance up to the cut).
    audio: bytes
    #: Where that audio starts in the stream, ms.
    segment_start_ms: int


def utterance_from_result(result: dict, segment_start_ms: int, segment_end_ms: int,
                          time_offset: float = 0.0) -> Utterance | None:
    """
    The utterance of one Vosk final result (C{Result()} or C{FinalResult()}
    with C{SetWords(True)}), or None when nothing was recognised.

    Its times are those of its first and last words, less C{time_offset} seconds.
    Vosk has been seen to return text without a word list: the segment of
    audio the result covers (fed since the previous result) is then the best
    that is known.
    """
    text = result.get("text", "").strip()
    if not text:
        return None
    words = tuple(
        Word(w["word"], _ms(w["start"] - time_offset), _ms(w["end"] - time_offset), float(w.get("conf", 1.0)))
        for w in result.get("result", ())
    )
    if not words:
        return Utterance(text, segment_start_ms, segment_end_ms)
    return Utterance(text, words[0].start_ms, words[-1].end_ms, words)


def joined(parts: list[Utterance]) -> Utterance | None:
    """The parts of one utterance Vosk finalised apart, as one; None without any."""
    if len(parts) < 2:
        return parts[0] if parts else None
    return Utterance(" ".join(part.text for part in parts), parts[0].start_ms, parts[-1].end_ms,
                     tuple(word for part in parts for word in part.words))


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))
