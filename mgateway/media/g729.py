# -*- test-case-name: tests.test_g729 -*-
"""
G.729 (Annex A decoding, Annex B SID frames) through Belledonne's bcg729.

bcg729 is GPL-3+, so it is an optional runtime dependency found at startup
(Debian: C{libbcg729-0}); without it the gateway simply does not offer
G.729. One coder object per stream: both directions keep state between
frames, so frames must go through in order.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import weakref
from typing import Callable

import numpy as np
from twisted.logger import Logger

from mgateway.media import MediaError

log = Logger()

SONAME = "libbcg729.so.0"
#: Octets of one 10 ms speech frame, and of an Annex B SID (comfort noise) frame.
FRAME_BYTES = 10
SID_BYTES = 2
#: Samples of PCM per frame: 10 ms at 8 kHz.
FRAME_SAMPLES = 80


class G729Error(MediaError):
    """A payload that is not whole G.729 frames, or the codec is unavailable."""


@functools.cache
def load_bcg729() -> ctypes.CDLL | None:
    """The bcg729 library with its prototypes declared, or C{None} (logged) if missing."""
    name = ctypes.util.find_library("bcg729") or SONAME
    try:
        library = ctypes.CDLL(name)
        library.initBcg729DecoderChannel
    except (OSError, AttributeError) as e:
        log.warn("G.729 unavailable: cannot load {library}: {reason}", library=name, reason=str(e))
        return None
    library.initBcg729DecoderChannel.argtypes = []
    library.initBcg729DecoderChannel.restype = ctypes.c_void_p
    library.closeBcg729DecoderChannel.argtypes = [ctypes.c_void_p]
    library.closeBcg729DecoderChannel.restype = None
    # ctx, bitStream, bitStreamLength, frameErasureFlag, SIDFrameFlag, rfc3389PayloadFlag, signal[80]
    library.bcg729Decoder.argtypes = [
        ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint8, ctypes.c_uint8, ctypes.c_uint8,
        ctypes.c_uint8, ctypes.c_void_p,
    ]
    library.bcg729Decoder.restype = None
    library.initBcg729EncoderChannel.argtypes = [ctypes.c_uint8]
    library.initBcg729EncoderChannel.restype = ctypes.c_void_p
    library.closeBcg729EncoderChannel.argtypes = [ctypes.c_void_p]
    library.closeBcg729EncoderChannel.restype = None
    # ctx, inputFrame[80], bitStream[10], *bitStreamLength
    library.bcg729Encoder.argtypes = [
        ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint8), ctypes.POINTER(ctypes.c_uint8),
    ]
    library.bcg729Encoder.restype = None
    log.info("G.729 available through {library}", library=name)
    return library


def _require() -> ctypes.CDLL:
    library = load_bcg729()
    if library is None:
        raise G729Error("G.729 is unavailable: libbcg729 is not installed")
    return library


def _pcm(samples: np.ndarray) -> bytes:
    """The coder's native-order int16 samples as little-endian bytes."""
    return samples.astype("<i2", copy=False).tobytes()


class _Channel:
    """The coder state of one stream, freed by L{close} or when collected."""

    def __init__(self, library: ctypes.CDLL, context: int, close: Callable[[int], None]):
        self._library = library
        self._handle = context
        self._finalizer = weakref.finalize(self, close, context)

    @property
    def _context(self) -> int:
        if not self._finalizer.alive:
            raise G729Error("the G.729 coder was closed")
        return self._handle

    def close(self) -> None:
        """Free the codec state now rather than when the object is collected."""
        self._finalizer()


class G729Decoder(_Channel):
    """
    Decodes one stream's RTP payloads (RFC 3551 section 4.5.6: any number of
    10-octet frames, optionally ending with one 2-octet SID frame).
    """

    def __init__(self):
        library = _require()
        super().__init__(library, library.initBcg729DecoderChannel(), library.closeBcg729DecoderChannel)

    def decode(self, payload: bytes) -> bytes:
        """
        16-bit little-endian PCM, 80 samples for each frame, SID included.

        @raise G729Error: the payload is not whole frames.
        """
        frames, rest = divmod(len(payload), FRAME_BYTES)
        if rest not in (0, SID_BYTES):
            raise G729Error(f"a {len(payload)}-byte payload is not whole G.729 frames")
        count = frames + (rest == SID_BYTES)
        signal = np.empty(FRAME_SAMPLES * count, np.int16)
        address = signal.ctypes.data
        decode, context = self._library.bcg729Decoder, self._context
        for i in range(frames):
            frame = payload[i * FRAME_BYTES : (i + 1) * FRAME_BYTES]
            decode(context, frame, FRAME_BYTES, 0, 0, 0, address + 2 * FRAME_SAMPLES * i)
        if rest:
            sid = payload[-SID_BYTES:]
            decode(context, sid, SID_BYTES, 0, 1, 0, address + 2 * FRAME_SAMPLES * frames)
        return _pcm(signal)

    def conceal(self) -> bytes:
        """One frame (80 samples) of concealment for a lost frame."""
        signal = np.empty(FRAME_SAMPLES, np.int16)
        self._library.bcg729Decoder(self._context, None, 0, 1, 0, 0, signal.ctypes.data)
        return _pcm(signal)


class G729Encoder(_Channel):
    """
    Encodes 16-bit little-endian PCM into G.729 frames: test fixtures and the
    test RTP sender. With C{vad}, Annex B voice activity detection turns
    silence into 2-octet SID frames or nothing at all.
    """

    def __init__(self, vad: bool = False):
        library = _require()
        context = library.initBcg729EncoderChannel(int(vad))
        super().__init__(library, context, library.closeBcg729EncoderChannel)

    def encode(self, pcm: bytes) -> list[bytes]:
        """
        One entry per 10 ms of C{pcm}: 10 octets of speech frame, 2 of SID or
        none (with VAD).

        @raise G729Error: C{pcm} is not whole 80-sample frames.
        """
        if len(pcm) % (2 * FRAME_SAMPLES):
            raise G729Error(f"{len(pcm)} bytes of PCM is not whole 10 ms frames")
        samples = np.frombuffer(pcm, "<i2").astype(np.int16)  # native order for the coder
        address = samples.ctypes.data
        bitstream = (ctypes.c_uint8 * FRAME_BYTES)()
        length = ctypes.c_uint8()
        encode, context = self._library.bcg729Encoder, self._context
        frames = []
        for i in range(len(samples) // FRAME_SAMPLES):
            encode(context, address + 2 * FRAME_SAMPLES * i, bitstream, ctypes.byref(length))
            frames.append(bytes(bitstream[: length.value]))
        return frames
