# -*- test-case-name: tests.test_rtp,tests.test_jitter,tests.test_timeline,tests.test_g711,tests.test_g729 -*-
"""
Media cores shared by the ingress adapters: RTP parsing and reordering, the
one timeline every ingress places its audio on (gap filling), codecs (G.711,
G.729) and comfort noise. Pure code: bytes in, PCM out (16-bit
little-endian, 8 kHz mono); the transports live elsewhere.
"""


class MediaError(Exception):
    """Media that cannot be used: a malformed packet, an unusable payload."""
