"""
Where the speech is in a recording with a noise floor: what recognised
utterances are checked against, since the words themselves are not (the
Korean model hears synthetic speech poorly).
"""

from __future__ import annotations

import numpy

from mgateway.media.pcm import BYTES_PER_MS
from mgateway.media.pcm import SAMPLE_RATE as RATE


def duration_ms(pcm: bytes) -> int:
    return len(pcm) // BYTES_PER_MS


def speech_spans(
    pcm: bytes, threshold_dbfs: float = -40.0, frame_ms: int = 20, min_gap_ms: int = 1000
) -> list[tuple[int, int]]:
    """
    The stretches of speech in 8 kHz 16-bit mono PCM, as C{(start_ms,
    end_ms)}: frames louder than C{threshold_dbfs} (well above a noise floor
    of about -50 dBFS), joined across gaps shorter than C{min_gap_ms} (the
    pauses inside a sentence).
    """
    samples = numpy.frombuffer(pcm, dtype="<i2").astype(numpy.float64) / 32768
    frame = frame_ms * RATE // 1000
    frames = samples[: len(samples) // frame * frame].reshape(-1, frame)
    loud = 20 * numpy.log10(numpy.sqrt((frames**2).mean(axis=1)) + 1e-12) > threshold_dbfs
    spans: list[list[int]] = []
    for index in numpy.flatnonzero(loud):
        start, end = int(index) * frame_ms, (int(index) + 1) * frame_ms
        if spans and start - spans[-1][1] < min_gap_ms:
            spans[-1][1] = end
        else:
            spans.append([start, end])
    return [(start, end) for start, end in spans]
