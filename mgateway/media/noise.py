# -*- test-case-name: tests.test_audiohook_session,tests.test_twilio_session -*-
"""
Comfort noise: low-level white noise to stand in for missing audio.

Missing audio must not become digital zeros: Vosk's endpointing never sees
the end of an utterance in exact silence, so two sentences separated by a
gap of zeros come out as one utterance. A faint noise floor, like a real
line's, keeps pauses detectable.
"""

from __future__ import annotations

import functools
import math

import numpy as np

#: Samples in the pre-generated noise texture (one second at 8 kHz).
TEXTURE_SAMPLES = 8000
_SEED = 0x6E6F6973


@functools.lru_cache(maxsize=8)
def _texture(level_dbfs: float) -> bytes:
    """Two periods of the texture, so any window of one period is one slice."""
    rms = 32768 * math.pow(10, level_dbfs / 20)
    noise = np.random.default_rng(_SEED).standard_normal(TEXTURE_SAMPLES) * rms
    samples = np.clip(np.rint(noise), -32768, 32767).astype("<i2")
    return np.tile(samples, 2).tobytes()


def comfort_noise(samples: int, level_dbfs: float = -60, start: int = 0) -> bytes:
    """
    C{samples} samples of Gaussian white noise at an RMS level of
    C{level_dbfs}, as 16-bit little-endian PCM.

    The noise is a fixed one-second texture: the result depends only on the
    arguments. Pass the position of the gap on the stream's timeline as
    C{start} so that consecutive gaps continue the texture instead of
    repeating its beginning.
    """
    if samples < 0:
        raise ValueError(f"cannot make {samples} samples of noise")
    texture = _texture(float(level_dbfs))
    chunks = []
    position = start % TEXTURE_SAMPLES
    while samples:
        count = min(samples, TEXTURE_SAMPLES)
        chunks.append(texture[2 * position : 2 * (position + count)])
        samples -= count
        position = (position + count) % TEXTURE_SAMPLES
    return b"".join(chunks)
