"""G.729 through the system's bcg729: real speech encoded and decoded, SID frames, lost frames."""

import ctypes.util

import numpy as np
import pytest
from twisted.logger import LogLevel, capturedLogs

from mgateway.media import MediaError, g729
from mgateway.media.g729 import G729Decoder, G729Encoder, G729Error, load_bcg729
from tests.support.audio import read_pcm

FRAME_SAMPLES = 80
#: G.729's algorithmic delay: 5 ms of look-ahead.
CODEC_DELAY = 40


def speech() -> np.ndarray:
    """The espeak-ng fixture, cut to whole 10 ms frames."""
    pcm = np.frombuffer(read_pcm("single.wav"), "<i2")
    return pcm[: len(pcm) // FRAME_SAMPLES * FRAME_SAMPLES]


def as_pcm(samples: np.ndarray) -> bytes:
    return samples.astype("<i2").tobytes()


def as_samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, "<i2").astype(float)


def rms(samples) -> float:
    return float(np.sqrt(np.mean(np.asarray(samples, dtype=float) ** 2)))


@pytest.fixture
def fresh_library():
    """load_bcg729 looked up afresh, and again afterwards for the other tests."""
    load_bcg729.cache_clear()
    yield
    load_bcg729.cache_clear()


def test_speech_survives_an_encode_decode_round_trip():
    original = speech()
    frames = G729Encoder().encode(as_pcm(original))
    assert len(frames) == len(original) // FRAME_SAMPLES
    assert {len(frame) for frame in frames} == {10}
    decoded = as_samples(G729Decoder().decode(b"".join(frames)))
    assert len(decoded) == len(original)

    # The decoded signal is the input delayed by the codec's look-ahead...
    lags = range(0, 2 * CODEC_DELAY)
    correlations = [np.corrcoef(original[: len(original) - lag], decoded[lag:])[0, 1] for lag in lags]
    assert int(np.argmax(correlations)) == CODEC_DELAY
    assert max(correlations) > 0.7, max(correlations)
    # ...at the same loudness, 20 ms by 20 ms.
    aligned_in = original[: len(original) - CODEC_DELAY].astype(float)
    aligned_out = decoded[CODEC_DELAY:]
    blocks = len(aligned_in) // 160
    energy_in = [rms(aligned_in[i * 160 : (i + 1) * 160]) + 1 for i in range(blocks)]
    energy_out = [rms(aligned_out[i * 160 : (i + 1) * 160]) + 1 for i in range(blocks)]
    assert np.corrcoef(np.log(energy_in), np.log(energy_out))[0, 1] > 0.9
    assert 0.5 < rms(aligned_out) / rms(aligned_in) < 2


def test_a_packet_of_several_frames_decodes_like_the_frames_one_by_one():
    frames = G729Encoder().encode(as_pcm(speech()[:800]))
    one_by_one = G729Decoder()
    assert G729Decoder().decode(b"".join(frames)) == b"".join(one_by_one.decode(f) for f in frames)


def test_silence_with_vad_becomes_sid_frames_that_decode_to_comfort_noise():
    rng = np.random.default_rng(1)
    quiet = rng.standard_normal(8000) * 100  # a second of line noise, about -50 dBFS
    frames = G729Encoder(vad=True).encode(as_pcm(np.concatenate([speech(), quiet])))
    sizes = [len(frame) for frame in frames]
    assert set(sizes) == {10, 2, 0}, "speech frames, SID frames and untransmitted frames"
    # An RTP payload of a speech frame followed by a SID frame (RFC 3551 4.5.6).
    first_sid = sizes.index(2)
    payload = frames[first_sid - 1] + frames[first_sid]
    decoder = G729Decoder()
    decoder.decode(b"".join(frames[: first_sid - 1]))
    pcm = as_samples(decoder.decode(payload))
    assert len(pcm) == 2 * FRAME_SAMPLES
    comfort = pcm[FRAME_SAMPLES:]
    assert rms(quiet) / 3 < rms(comfort) < rms(quiet) * 3, "comfort noise at about the line's level"


@pytest.mark.parametrize("size", [1, 3, 9, 11, 15, 24])
def test_payloads_that_are_not_whole_frames_are_refused(size):
    with pytest.raises(G729Error, match=f"a {size}-byte payload"):
        G729Decoder().decode(bytes(size))


def test_an_empty_payload_decodes_to_nothing():
    assert G729Decoder().decode(b"") == b""


def test_concealment_continues_the_speech_then_fades():
    original = speech()
    frames = G729Encoder().encode(as_pcm(original))
    loudest = max(range(len(frames)), key=lambda i: rms(original[i * 80 : (i + 1) * 80]))
    decoder = G729Decoder()
    decoder.decode(b"".join(frames[: loudest + 1]))
    concealed = [as_samples(decoder.conceal()) for _ in range(30)]
    assert {len(frame) for frame in concealed} == {FRAME_SAMPLES}
    assert rms(concealed[0]) > 100, "concealment should repeat the voice, not go silent"
    assert rms(concealed[-1]) < rms(concealed[0]) / 4, "a long loss should fade out"


def test_the_encoder_refuses_partial_frames():
    with pytest.raises(G729Error, match="not whole 10 ms frames"):
        G729Encoder().encode(bytes(2 * 79))


def test_a_closed_coder_refuses_work_instead_of_touching_freed_memory():
    decoder, encoder = G729Decoder(), G729Encoder()
    decoder.close()
    encoder.close()
    decoder.close()  # twice is harmless
    with pytest.raises(G729Error, match="closed"):
        decoder.decode(bytes(10))
    with pytest.raises(G729Error, match="closed"):
        decoder.conceal()
    with pytest.raises(G729Error, match="closed"):
        encoder.encode(bytes(160))


def test_the_soname_is_tried_when_the_library_search_finds_nothing(fresh_library, monkeypatch):
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    library = load_bcg729()
    assert library is not None
    assert library._name == g729.SONAME


def test_a_missing_library_is_reported_and_g729_is_unavailable(fresh_library, monkeypatch):
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: "libbcg729-not-here.so.0")
    with capturedLogs() as events:
        assert load_bcg729() is None
    warnings = [e for e in events if e["log_level"] == LogLevel.warn]
    assert [e["library"] for e in warnings] == ["libbcg729-not-here.so.0"]
    assert "libbcg729-not-here.so.0" in warnings[0]["reason"]
    with pytest.raises(G729Error, match="unavailable"):
        G729Decoder()
    assert issubclass(G729Error, MediaError)
