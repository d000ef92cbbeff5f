"""
Two sentences with a pause between them, the pause of each kind a call can
carry once its ingress has turned it into 16-bit PCM: the line's own noise,
the comfort noise that fills missing packets and timestamp gaps, and digital
silence in each codec.
"""

from __future__ import annotations

import numpy as np

from mgateway.media.g711 import alaw_decode, ulaw_decode
from mgateway.media.noise import comfort_noise
from tests.support.audio import read_pcm
from tests.support.speech import BYTES_PER_MS, RATE

#: The two sentences of customer.wav, each with a little of the noise around it.
FIRST_SENTENCE_MS = (0, 2600)
SECOND_SENTENCE_MS = (4600, 7100)
PAUSE_MS = 3000

_LINE_NOISE_SEED = 0x70617573


def line_noise(samples: int, level_dbfs: float = -50, seed: int = _LINE_NOISE_SEED) -> bytes:
    """White noise like the fixtures' floor (another seed)."""
    rms = 32768 * 10 ** (level_dbfs / 20)
    noise = np.random.default_rng(seed).standard_normal(samples) * rms
    return np.clip(np.rint(noise), -32768, 32767).astype("<i2").tobytes()


#: Each kind of pause, as C{samples -> PCM}.
PAUSES = {
    "line noise": line_noise,
    "comfort noise (lost packets, gaps)": lambda samples: comfort_noise(samples),
    "zero L16": lambda samples: bytes(2 * samples),
    "0xFF mu-law": lambda samples: ulaw_decode(b"\xff" * samples),
    "0xD5 A-law": lambda samples: alaw_decode(b"\xd5" * samples),
}


def _span(pcm: bytes, span_ms: tuple[int, int]) -> bytes:
    return pcm[span_ms[0] * BYTES_PER_MS : span_ms[1] * BYTES_PER_MS]


def sentences() -> tuple[bytes, bytes]:
    customer = read_pcm("customer.wav")
    return _span(customer, FIRST_SENTENCE_MS), _span(customer, SECOND_SENTENCE_MS)


def two_sentences(kind: str, pause_ms: int = PAUSE_MS) -> tuple[bytes, bytes, bytes]:
    """C{(first sentence, pause of C{kind}, second sentence followed by the same pause)} as PCM."""
    first, second = sentences()
    pause = PAUSES[kind](pause_ms * RATE // 1000)
    return first, pause, second + pause
