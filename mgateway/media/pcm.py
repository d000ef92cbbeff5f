# -*- test-case-name: tests.test_call_registry -*-
"""
The one audio format inside the gateway: 16-bit little-endian mono PCM at
8 kHz. Every ingress decodes to it; the call registry, the recognisers and
the summaries count in it.
"""

SAMPLE_RATE = 8000
BYTES_PER_SAMPLE = 2
BYTES_PER_SECOND = SAMPLE_RATE * BYTES_PER_SAMPLE
SAMPLES_PER_MS = SAMPLE_RATE // 1000
#: Bytes of PCM per millisecond.
BYTES_PER_MS = BYTES_PER_SECOND // 1000
