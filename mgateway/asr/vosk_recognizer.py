"""
L{IRecognizer} on a Vosk C{KaldiRecognizer}: PCM in, final results out as
L{Utterance}s with word timings.
"""

from __future__ import annotations

import json

import vosk
from zope.interface import implementer

from mgateway.interfaces import IRecognizer
from mgateway.transcript import Utterance, Word

#: Audio handed to Vosk per C{AcceptWaveform} call. Vosk checks for an
#: endpoint once per call and, when one fires, returns everything decoded so
#: far as one result: a slice holding the end of one sentence and the start of
#: the next would merge them. A fixed size also makes the results independent
#: of how the caller chunks its audio (decoding is deterministic through the
#: model overlay, which turns dithering off). Vosk decodes in batches of about
#: 80 ms anyway, so holding back less than one slice adds little latency.
SLICE_MS = 100


@implementer(IRecognizer)
class VoskRecognizer:
    """
    One participant stream's recogniser. Blocking: call it from one worker
    thread at a time, never the reactor thread.

    Times are milliseconds from the first sample given to this recogniser
    (Vosk's own word times already count from there, across endpoints).

    @ivar model: the shared C{vosk.Model}.
    """

    def __init__(self, model: vosk.Model, sample_rate: int = 8000):
        self.model = model
        self._recognizer = vosk.KaldiRecognizer(model, sample_rate)
        self._recognizer.SetWords(True)
        self._bytes_per_ms = sample_rate * 2 / 1000
        self._slice_bytes = int(self._bytes_per_ms * SLICE_MS) // 2 * 2
        self._held = bytearray()
        self._fed_bytes = 0
        self._segment_start_ms = 0

    def accept(self, pcm: bytes) -> list[Utterance]:
        self._held += pcm
        whole = len(self._held) - len(self._held) % self._slice_bytes
        utterances = []
        for start in range(0, whole, self._slice_bytes):
            utterances += self._feed(bytes(self._held[start : start + self._slice_bytes]))
        del self._held[:whole]
        return utterances

    def finish(self) -> list[Utterance]:
        utterances = self._feed(bytes(self._held)) if self._held else []
        self._held.clear()
        utterances += self._parse(self._recognizer.FinalResult())
        return utterances

    def _feed(self, pcm: bytes) -> list[Utterance]:
        endpoint = self._recognizer.AcceptWaveform(pcm)
        self._fed_bytes += len(pcm)
        return self._parse(self._recognizer.Result()) if endpoint else []

    def _parse(self, result_json: str) -> list[Utterance]:
        segment_start_ms, self._segment_start_ms = self._segment_start_ms, self._position_ms()
        utterance = utterance_from_result(json.loads(result_json), segment_start_ms, self._segment_start_ms)
        return [utterance] if utterance is not None else []

    def _position_ms(self) -> int:
        return int(self._fed_bytes / self._bytes_per_ms)


def utterance_from_result(result: dict, segment_start_ms: int, segment_end_ms: int) -> Utterance | None:
    """
    The utterance of one Vosk final result (C{Result()} or C{FinalResult()}
    with C{SetWords(True)}), or None when nothing was recognised.

    Its times are those of its first and last words. Vosk has been seen to
    return text without a word list: the segment of audio the result covers
    (fed since the previous result) is then the best that is known.
    """
    text = result.get("text", "").strip()
    if not text:
        return None
    words = tuple(
        Word(w["word"], _ms(w["start"]), _ms(w["end"]), float(w.get("conf", 1.0)))
        for w in result.get("result", ())
    )
    if not words:
        return Utterance(text, segment_start_ms, segment_end_ms)
    return Utterance(text, words[0].start_ms, words[-1].end_ms, words)


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))
