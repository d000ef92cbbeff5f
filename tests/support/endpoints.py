"""Where the gateway's endpointer ends utterances, computed apart from any recogniser."""

from __future__ import annotations

from mgateway.asr.endpointer import SpeechEndpointer
from tests.support.speech import BYTES_PER_MS

#: The recogniser's slice: Vosk is finalised on the whole slices before a decision.
SLICE_BYTES = 100 * BYTES_PER_MS
#: How the audio is fed: 20 ms packets (the decisions do not depend on it).
PACKET_BYTES = 20 * BYTES_PER_MS


def endpointer_decisions(pcm: bytes, silence_ms: int = 500) -> list[int]:
    """Where a stream's endpointer ends utterances (ms of audio: the end of the window that decided)."""
    endpointer = SpeechEndpointer(silence_ms)
    decisions = []
    position = 0
    while position < len(pcm):
        position += endpointer.accept(pcm[position : position + PACKET_BYTES])
        if endpointer.speech_ended:
            decisions.append(position // BYTES_PER_MS)
            endpointer.close()
    return decisions


def finalised_at_bytes(decision_ms: int) -> int:
    """The end of the audio Vosk was fed when the endpointer decided at C{decision_ms}: whole slices."""
    return decision_ms * BYTES_PER_MS // SLICE_BYTES * SLICE_BYTES
