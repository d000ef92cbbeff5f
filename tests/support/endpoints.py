"""Where the gateway's endpointer ends utterances, computed apart from any recogniser."""

from __future__ import annotations

from mgateway.asr.endpointer import SpeechEndpointer
from tests.support.speech import BYTES_PER_MS

#: The recogniser's slice: decisions fall at the end of one.
SLICE_BYTES = 100 * BYTES_PER_MS


def endpointer_decisions(pcm: bytes, silence_ms: int = 500) -> list[int]:
    """Where a stream's endpointer ends utterances (ms of audio), fed the recogniser's 100 ms slices."""
    endpointer = SpeechEndpointer(silence_ms)
    decisions = []
    for start in range(0, len(pcm), SLICE_BYTES):
        endpointer.accept(pcm[start : start + SLICE_BYTES])
        if endpointer.speech_ended:
            decisions.append(min(start + SLICE_BYTES, len(pcm)) // BYTES_PER_MS)
            endpointer.close()
    return decisions
