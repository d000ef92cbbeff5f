"""
Kaldi's random generator, for tests that compare two decodes exactly.

Kaldi dithers every frame of audio with noise drawn from the C library's
process-wide C{rand()} (vosk's C{libvosk.so} links it from libc), so the
same audio decodes a little differently depending on what the process
decoded before. Seeding that generator right before each decode, with
nothing else decoding meanwhile, makes two decodes of the same audio draw
the same dither.
"""

from __future__ import annotations

import ctypes

_LIBC = ctypes.CDLL(None)

#: glibc's own seed when a program never calls C{srand}.
SEED = 1


def seed_kaldi_dither(seed: int = SEED) -> None:
    """Reset the generator Kaldi's dither draws from."""
    _LIBC.srand(seed)
