# -*- test-case-name: tests.test_g711 -*-
"""
G.711 mu-law and A-law (ITU-T G.711) to and from 16-bit little-endian PCM.

Decoding is a 256-entry table lookup and encoding a 65536-entry one, both
built once with numpy from the standard's segment rules (the same rules as
the classic Sun reference code that C{audioop} also follows).
"""

from __future__ import annotations

import numpy as np

_PCM = np.dtype("<i2")
_ALL_CODES = np.arange(256, dtype=np.int32)
# Every 16-bit sample, in the order of its unsigned 16-bit pattern, so that
# the encoding tables can be indexed by the PCM viewed as uint16.
_ALL_SAMPLES = np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32)


def _ulaw_to_linear() -> np.ndarray:
    code = ~_ALL_CODES & 0xFF
    exponent = (code >> 4) & 0x07
    magnitude = (((code & 0x0F) << 3) + 0x84 << exponent) - 0x84
    return np.where(code & 0x80, -magnitude, magnitude).astype(_PCM)


def _alaw_to_linear() -> np.ndarray:
    code = _ALL_CODES ^ 0x55
    exponent = (code >> 4) & 0x07
    mantissa = code & 0x0F
    magnitude = np.where(
        exponent == 0,
        (mantissa << 4) + 8,
        ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0),
    )
    return np.where(code & 0x80, magnitude, -magnitude).astype(_PCM)


def _linear_to_ulaw() -> np.ndarray:
    value = _ALL_SAMPLES >> 2  # 14-bit
    mask = np.where(value < 0, 0x7F, 0xFF)
    value = np.minimum(np.abs(value), 8159) + 33  # clip, then add the bias
    segment_ends = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
    segment = np.searchsorted(segment_ends, value)
    code = (segment << 4) | ((value >> (segment + 1)) & 0x0F)
    code = np.where(segment == 8, 0x7F, code)  # past the last segment: the loudest code
    return (code ^ mask).astype(np.uint8)


def _linear_to_alaw() -> np.ndarray:
    value = _ALL_SAMPLES >> 3  # 13-bit
    mask = np.where(value >= 0, 0xD5, 0x55)
    value = np.where(value >= 0, value, -value - 1)
    segment_ends = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])
    segment = np.searchsorted(segment_ends, value)  # never 8: 13-bit magnitudes stay <= 0xFFF
    mantissa = np.where(segment < 2, value >> 1, value >> np.maximum(segment, 1)) & 0x0F
    return ((segment << 4 | mantissa) ^ mask).astype(np.uint8)


_ULAW_DECODE = _ulaw_to_linear()
_ALAW_DECODE = _alaw_to_linear()
_ULAW_ENCODE = _linear_to_ulaw()
_ALAW_ENCODE = _linear_to_alaw()


def ulaw_decode(payload: bytes) -> bytes:
    """mu-law octets to 16-bit little-endian PCM, one sample per octet."""
    return _ULAW_DECODE.take(np.frombuffer(payload, np.uint8)).tobytes()


def alaw_decode(payload: bytes) -> bytes:
    """A-law octets to 16-bit little-endian PCM, one sample per octet."""
    return _ALAW_DECODE.take(np.frombuffer(payload, np.uint8)).tobytes()


def ulaw_encode(pcm: bytes) -> bytes:
    """16-bit little-endian PCM to mu-law, one octet per sample."""
    return _ULAW_ENCODE.take(np.frombuffer(pcm, "<u2")).tobytes()


def alaw_encode(pcm: bytes) -> bytes:
    """16-bit little-endian PCM to A-law, one octet per sample."""
    return _ALAW_ENCODE.take(np.frombuffer(pcm, "<u2")).tobytes()
