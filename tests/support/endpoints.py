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


def endpointer_cuts(pcm: bytes, silence_ms: int = 500) -> list[tuple[int, bool]]:
    """
    Where a stream's recogniser finalises Vosk (ms of audio: the end of the
    window that said so, ahead of a decision or at one), each with whether
    the utterance ended in that pause (False: speech resumed before the
    silence was complete, and the recogniser decodes the utterance again).
    """
    endpointer = SpeechEndpointer(silence_ms)
    cuts: list[tuple[int, bool]] = []
    position = 0
    while position < len(pcm):
        position += endpointer.accept(pcm[position : position + PACKET_BYTES])
        if endpointer.finalise_ahead:
            endpointer.take_ahead()
            cuts.append((position // BYTES_PER_MS, False))
        elif endpointer.speech_ended:
            if endpointer.ahead_taken:
                cuts[-1] = (cuts[-1][0], True)
            else:
                cuts.append((position // BYTES_PER_MS, True))
            endpointer.close()
    return cuts


def finalised_at_bytes(decision_ms: int) -> int:
    """The end of the audio Vosk was fed when the endpointer said so at C{decision_ms}: whole slices."""
    return decision_ms * BYTES_PER_MS // SLICE_BYTES * SLICE_BYTES
