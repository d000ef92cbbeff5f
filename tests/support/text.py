"""Utterances of English or Spanish words for the text-stage tests, and the parameters they ask for."""

from __future__ import annotations

import attrs

from mgateway.transcript import Utterance, Word

#: Each word of a spoken utterance lasts this long, then a gap of 10 ms.
WORD_MS = 300


@attrs.frozen
class Params:
    """What a direct C{startStream} or a call's C{autotranscribeParams} ask the text stages."""

    language: str = "en-US"
    smart_formatting: bool = True
    redaction_output: str = "redacted"


def spoken(text: str, start_ms: int = 0) -> Utterance:
    """An utterance of lowercase words, as Vosk gives them, each at its own time."""
    words = tuple(
        Word(w, start_ms + i * (WORD_MS + 10), start_ms + i * (WORD_MS + 10) + WORD_MS)
        for i, w in enumerate(text.split())
    )
    end = words[-1].end_ms if words else start_ms
    return Utterance(text, start_ms, end, words)
