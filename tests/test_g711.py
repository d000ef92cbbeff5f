"""G.711 mu-law and A-law tables, checked exhaustively against the stdlib's reference codec."""

import warnings

import numpy as np
from hypothesis import given, strategies as st

from mgateway.media.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # the oracle: deprecated, still in Python 3.11 and 3.12

EVERY_CODE = bytes(range(256))
EVERY_SAMPLE = np.arange(-32768, 32768, dtype="<i2").tobytes()


def le16(*samples: int) -> bytes:
    return np.array(samples, dtype="<i2").tobytes()


def test_every_mu_law_code_decodes_as_the_reference_does():
    assert ulaw_decode(EVERY_CODE) == audioop.ulaw2lin(EVERY_CODE, 2)


def test_every_a_law_code_decodes_as_the_reference_does():
    assert alaw_decode(EVERY_CODE) == audioop.alaw2lin(EVERY_CODE, 2)


def test_every_16_bit_sample_encodes_to_mu_law_as_the_reference_does():
    assert ulaw_encode(EVERY_SAMPLE) == audioop.lin2ulaw(EVERY_SAMPLE, 2)


def test_every_16_bit_sample_encodes_to_a_law_as_the_reference_does():
    assert alaw_encode(EVERY_SAMPLE) == audioop.lin2alaw(EVERY_SAMPLE, 2)


def test_decoded_samples_are_little_endian_with_the_standard_extremes():
    # mu-law 0x00 / 0x80 are the loudest negative / positive codes, 0xFF is zero;
    # A-law 0x2A / 0xAA are the loudest, 0xD5 the smallest positive step.
    assert ulaw_decode(b"\x00\x80\xff") == le16(-32124, 32124, 0)
    assert alaw_decode(b"\x2a\xaa\xd5") == le16(-32256, 32256, 8)


def test_a_law_codes_survive_a_decode_encode_round_trip():
    assert alaw_encode(alaw_decode(EVERY_CODE)) == EVERY_CODE


def test_mu_law_codes_survive_a_round_trip_except_negative_zero():
    back = ulaw_encode(ulaw_decode(EVERY_CODE))
    assert back == EVERY_CODE[:0x7F] + b"\xff" + EVERY_CODE[0x80:]


@given(
    st.sampled_from([(ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)]),
    st.lists(st.integers(-32768, 32767), max_size=400),
)
def test_companding_error_grows_with_the_amplitude(codec, samples):
    encode, decode = codec
    pcm = np.array(samples, dtype=np.int32)
    back = np.frombuffer(decode(encode(le16(*samples))), "<i2").astype(np.int32)
    # 8-bit logarithmic coding: the error stays within about 1/16 of the value
    # (the mantissa step), plus the finest step near zero and the clipping above 32124.
    limit = np.abs(pcm) / 16 + 16 + np.maximum(np.abs(pcm) - 32124, 0)
    assert np.all(np.abs(back - pcm) <= limit)


def test_empty_input_gives_empty_output():
    assert ulaw_decode(b"") == alaw_decode(b"") == ulaw_encode(b"") == alaw_encode(b"") == b""
