"""The jitter buffer: RTP packets of one stream in any order, contiguous PCM out."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from mgateway.media import MediaError
from mgateway.media.g711 import ulaw_decode, ulaw_encode
from mgateway.media.g729 import G729Decoder, G729Encoder, G729Error
from mgateway.media.jitter import JitterBuffer
from mgateway.media.rtp import RtpPacket

# Payloads are linear PCM ("L16/8000" on a dynamic payload type) decoded as
# is, so each packet's samples say which packet they came from: packet i is
# 160 samples of the value 1000 + i. Comfort noise at -60 dBFS (RMS 33) never
# comes near that.
PT = 96
TELEPHONE_EVENT = 101
FRAME = 160
SSRC = 0x1111
NOISE_CEILING = 500


def packet(i, *, seq0=1000, ts0=5000, ssrc=SSRC, pt=PT, ts=None):
    return RtpPacket(
        payload_type=pt,
        sequence=(seq0 + i) & 0xFFFF,
        timestamp=(ts0 + i * FRAME if ts is None else ts) & 0xFFFFFFFF,
        ssrc=ssrc,
        payload=np.full(FRAME, 1000 + i, "<i2").tobytes(),
    )


def buffer(**options):
    return JitterBuffer(PT, bytes, **options)


def run(jitter, packets):
    return b"".join(jitter.push(p) for p in packets) + jitter.flush()


def samples(pcm):
    return np.frombuffer(pcm, "<i2")


def blocks(pcm):
    """Each 160-sample block as the packet number it holds, or "noise"."""
    out = []
    for block in samples(pcm).reshape(-1, FRAME):
        if np.all(block == block[0]) and block[0] >= 1000:
            out.append(int(block[0]) - 1000)
        else:
            assert np.abs(block).max() < NOISE_CEILING, block
            out.append("noise")
    return out


def assert_comfort_noise(pcm):
    noise = samples(pcm).astype(float)
    assert np.any(noise != 0), "digital silence instead of comfort noise"
    rms_dbfs = 20 * np.log10(np.sqrt(np.mean(noise**2)) / 32768)
    assert -70 < rms_dbfs < -50, rms_dbfs


def test_in_order_packets_pass_straight_through_once_the_start_is_buffered():
    jitter = buffer()
    released = [len(jitter.push(packet(i))) // 2 for i in range(8)]
    # The first packets wait until more than 60 ms queue behind them, in
    # case an earlier packet is still on its way; then nothing waits.
    assert released == [0, 0, 0, 0, 5 * FRAME, FRAME, FRAME, FRAME]
    assert jitter.position == 8 * FRAME
    assert (jitter.received, jitter.lost, jitter.reordered) == (8, 0, 0)


def test_flush_releases_what_is_buffered():
    jitter = buffer()
    jitter.push(packet(0))
    jitter.push(packet(1))
    assert blocks(jitter.flush()) == [0, 1]
    assert jitter.flush() == b""


def test_packets_overtaken_within_the_depth_are_put_back_in_order():
    jitter = buffer()
    out = run(jitter, [packet(i) for i in (0, 2, 1, 3, 6, 4, 5, 7, 10, 9, 8, 11)])
    assert blocks(out) == list(range(12))
    assert (jitter.reordered, jitter.lost, jitter.late) == (5, 0, 0)


def test_a_lost_packet_becomes_comfort_noise_of_its_duration():
    jitter = buffer()
    out = run(jitter, [packet(i) for i in range(10) if i != 4])
    assert blocks(out) == [0, 1, 2, 3, "noise", 5, 6, 7, 8, 9]
    assert_comfort_noise(out[4 * 2 * FRAME : 5 * 2 * FRAME])
    assert (jitter.lost, jitter.position) == (1, 10 * FRAME)


def test_a_missing_packet_is_waited_for_only_while_the_depth_allows():
    jitter = buffer(depth_ms=60)
    for i in range(5):
        jitter.push(packet(i))
    assert jitter.push(packet(6)) == b""
    assert jitter.push(packet(7)) == b""
    assert jitter.push(packet(8)) == b""  # 60 ms behind the hole: still waiting
    out = jitter.push(packet(9))  # more than 60 ms: packet 5 is given up
    assert blocks(out) == ["noise", 6, 7, 8, 9]
    assert jitter.lost == 1


def test_a_packet_arriving_after_its_place_was_given_up_is_dropped_as_late():
    jitter = buffer()
    out = run(jitter, [packet(i) for i in (0, 1, 2, 3, 4, 6, 7, 8, 9, 5, 10)])
    assert blocks(out) == [0, 1, 2, 3, 4, "noise", 6, 7, 8, 9, 10]
    assert (jitter.lost, jitter.late, jitter.duplicates) == (1, 1, 0)


def test_duplicates_are_dropped_whether_still_buffered_or_already_released():
    jitter = buffer()
    out = run(jitter, [packet(i) for i in (0, 0, 1, 2, 3, 4, 5, 2, 6, 6)])
    assert blocks(out) == list(range(7))
    assert (jitter.duplicates, jitter.late, jitter.received) == (3, 0, 10)


def test_sequence_numbers_wrap_from_65535_to_0():
    jitter = buffer()
    sent = [packet(i, seq0=65533) for i in (0, 1, 3, 2, 4, 5, 7, 6, 8)]
    assert [p.sequence for p in sent] == [65533, 65534, 0, 65535, 1, 2, 4, 3, 5]
    assert blocks(run(jitter, sent)) == list(range(9))
    assert (jitter.lost, jitter.late, jitter.reordered) == (0, 0, 2)


def test_timestamps_wrap_at_2_to_the_32():
    jitter = buffer()
    sent = [packet(i, ts0=2**32 - 3 * FRAME) for i in range(10) if i != 5]
    assert [p.timestamp for p in sent][2:5] == [2**32 - FRAME, 0, FRAME]
    # A loss right after the wrap is still filled with exactly one packet's worth.
    assert blocks(run(jitter, sent)) == [0, 1, 2, 3, 4, "noise", 6, 7, 8, 9]


def test_silence_suppression_gaps_are_filled_with_comfort_noise():
    # Contiguous sequence numbers, timestamps 100 ms apart: the sender sent
    # nothing during a pause. Nothing was lost.
    jitter = buffer()
    sent = [packet(i) for i in range(5)] + [packet(i, ts=5000 + (i + 5) * FRAME) for i in range(5, 10)]
    out = run(jitter, sent)
    assert blocks(out) == [0, 1, 2, 3, 4] + ["noise"] * 5 + [5, 6, 7, 8, 9]
    assert_comfort_noise(out[5 * 2 * FRAME : 10 * 2 * FRAME])
    assert jitter.lost == 0


def test_a_timestamp_jump_after_hold_is_filled_only_up_to_the_cap():
    jitter = buffer(max_gap_ms=1000)
    hold = 8000 * 3600  # an hour on hold
    sent = [packet(i) for i in range(5)] + [packet(i, ts=5000 + i * FRAME + hold) for i in range(5, 10)]
    out = run(jitter, sent)
    assert blocks(out) == [0, 1, 2, 3, 4] + ["noise"] * 50 + [5, 6, 7, 8, 9]
    assert jitter.position == 60 * FRAME


def test_timestamps_going_back_continue_the_timeline_without_a_gap():
    jitter = buffer()
    sent = [packet(i) for i in range(5)] + [packet(i, ts=i * FRAME) for i in range(5, 10)]
    assert blocks(run(jitter, sent)) == list(range(10))


def test_a_new_ssrc_continues_the_timeline_where_it_stands():
    jitter = buffer()
    old = [packet(i) for i in range(4)]
    # The new source's numbers are unrelated to the old one's.
    new = [packet(i, ssrc=0x2222, seq0=40000, ts0=3_000_000_000) for i in range(4, 10)]
    out = b"".join(jitter.push(p) for p in old)
    assert out == b""  # all still buffered when the source changes
    out += run(jitter, new)
    assert blocks(out) == list(range(10))
    assert (jitter.resyncs, jitter.lost, jitter.position) == (1, 0, 10 * FRAME)


def test_a_straggler_from_the_replaced_ssrc_is_dropped_as_late():
    jitter = buffer()
    sent = [packet(i) for i in (0, 1, 2, 4)] + [packet(i, ssrc=0x2222) for i in (5, 6)] + [packet(3)]
    sent += [packet(i, ssrc=0x2222) for i in (7, 8)]
    assert blocks(run(jitter, sent)) == [0, 1, 2, "noise", 4, 5, 6, 7, 8]
    assert (jitter.late, jitter.resyncs) == (1, 1)


def test_a_source_that_comes_back_after_another_is_followed():
    jitter = buffer(depth_ms=0)
    sent = [packet(i) for i in range(3)] + [packet(i, ssrc=0x2222) for i in range(3, 6)]
    sent += [packet(i) for i in range(6, 9)]  # the first SSRC again, further on
    assert blocks(run(jitter, sent)) == list(range(9))
    assert (jitter.resyncs, jitter.late) == (2, 0)


def test_renumbered_packets_are_followed_once_two_in_a_row_agree():
    jitter = buffer(depth_ms=0)
    sent = [packet(i) for i in range(5)] + [packet(i, seq0=20000) for i in range(5, 10)]
    out = run(jitter, sent)
    # The first renumbered packet is held until the next one confirms it.
    assert blocks(out) == list(range(10))
    assert (jitter.resyncs, jitter.late, jitter.lost) == (1, 0, 0)


def test_a_single_packet_with_a_wild_sequence_number_is_dropped():
    jitter = buffer(depth_ms=0)
    sent = [packet(i) for i in range(3)] + [packet(3, seq0=20000)] + [packet(i) for i in range(4, 7)]
    out = run(jitter, sent)
    assert blocks(out) == [0, 1, 2, "noise", 4, 5, 6]
    assert (jitter.late, jitter.resyncs, jitter.lost) == (1, 0, 1)


def test_telephone_events_hold_their_place_but_add_no_audio():
    jitter = buffer()
    audio_before = [packet(i) for i in range(4)]
    # Four event packets take sequence numbers 4-7 while the audio pauses.
    events = [packet(i, pt=TELEPHONE_EVENT, ts=5000 + 4 * FRAME) for i in range(4, 8)]
    audio_after = [packet(i) for i in range(8, 12)]
    out = run(jitter, audio_before + events + audio_after)
    assert blocks(out) == [0, 1, 2, 3, "noise", "noise", "noise", "noise", 8, 9, 10, 11]
    assert (jitter.lost, jitter.ignored, jitter.received) == (0, 4, 12)


def test_packets_of_another_payload_type_never_start_a_source():
    jitter = buffer()
    jitter.push(packet(0, pt=TELEPHONE_EVENT, ssrc=0x9999))
    out = run(jitter, [packet(i) for i in range(1, 4)])
    assert blocks(out) == [1, 2, 3]
    assert (jitter.ignored, jitter.resyncs) == (1, 0)


def test_the_codec_conceals_a_short_loss_and_noise_covers_the_rest():
    concealment = np.full(80, 7, "<i2").tobytes()
    jitter = buffer(conceal=lambda: concealment, max_conceal_ms=25)
    out = run(jitter, [packet(i) for i in range(10) if i not in (3, 4)])
    gap = samples(out)[3 * FRAME : 5 * FRAME]
    assert np.all(gap[:200] == 7)  # 25 ms of concealment, the last frame cut short
    assert_comfort_noise(gap[200:].tobytes())
    assert blocks(out)[5:] == [5, 6, 7, 8, 9]


def test_g729_concealment_carries_the_voice_over_a_lost_packet():
    tone = (np.sin(np.arange(FRAME * 20) / 6) * 8000).astype("<i2").tobytes()
    frames = G729Encoder().encode(tone)
    payloads = [frames[2 * i] + frames[2 * i + 1] for i in range(20)]
    sent = [RtpPacket(18, i, i * FRAME, SSRC, payloads[i]) for i in range(20) if i != 10]
    decoder = G729Decoder()
    jitter = JitterBuffer(18, decoder.decode, conceal=decoder.conceal)
    out = samples(run(jitter, sent))
    assert len(out) == 20 * FRAME
    lost = out[10 * FRAME : 11 * FRAME].astype(float)
    assert np.sqrt(np.mean(lost**2)) > 1000, "the lost 20 ms should sound like the tone, not like noise"
    assert jitter.lost == 1


def test_separate_gaps_get_different_stretches_of_noise():
    out = run(buffer(), [packet(i) for i in range(10) if i not in (2, 6)])
    assert blocks(out) == [0, 1, "noise", 3, 4, 5, "noise", 7, 8, 9]
    assert out[2 * 2 * FRAME : 3 * 2 * FRAME] != out[6 * 2 * FRAME : 7 * 2 * FRAME]


def test_concealment_is_not_used_where_nothing_was_lost():
    jitter = buffer(conceal=lambda: pytest.fail("concealment without a loss"))
    sent = [packet(i) for i in range(5)] + [packet(i, ts=5000 + (i + 1) * FRAME) for i in range(5, 8)]
    assert blocks(run(jitter, sent)) == [0, 1, 2, 3, 4, "noise", 5, 6, 7]


def test_a_payload_the_codec_rejects_becomes_comfort_noise():
    decoder = G729Decoder()
    speech = np.sin(np.arange(1600) / 5) * 8000
    frames = G729Encoder().encode(speech.astype("<i2").tobytes())
    payloads = [frames[i] + frames[i + 1] for i in range(0, 20, 2)]
    payloads[3] = payloads[3][:7]  # not whole frames
    sent = [RtpPacket(18, i, i * FRAME, SSRC, payload) for i, payload in enumerate(payloads)]
    with pytest.raises(G729Error):
        G729Decoder().decode(payloads[3])
    jitter = JitterBuffer(18, decoder.decode)
    out = run(jitter, sent)
    assert len(out) == 10 * 2 * FRAME
    assert_comfort_noise(out[3 * 2 * FRAME : 4 * 2 * FRAME])
    assert (jitter.undecodable, jitter.lost) == (1, 0)


def test_a_g711_stream_with_loss_decodes_to_the_full_timeline():
    tone = (np.sin(np.arange(FRAME * 20) / 3) * 10000).astype("<i2").tobytes()
    payload = ulaw_encode(tone)
    payloads = [payload[i * FRAME : (i + 1) * FRAME] for i in range(20)]
    sent = [RtpPacket(0, 7 + i, 99 + i * FRAME, SSRC, payloads[i]) for i in range(20)]
    jitter = JitterBuffer(0, ulaw_decode)
    out = run(jitter, sent[:8] + sent[9:])
    assert len(out) == len(tone)
    assert out[: 8 * 2 * FRAME] == ulaw_decode(payload[: 8 * FRAME])
    assert out[9 * 2 * FRAME :] == ulaw_decode(payload[9 * FRAME :])
    assert_comfort_noise(out[8 * 2 * FRAME : 9 * 2 * FRAME])


@given(
    st.lists(st.integers(0, 4), min_size=1, max_size=40),
    st.sets(st.integers(0, 39), max_size=8),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFFFFFF),
)
def test_any_arrival_order_within_the_depth_gives_the_same_pcm(delays, dropped, seq0, ts0):
    # Packet i is overtaken only by packets sent less than 4 x 20 ms after
    # it: later packets spanning no more than the 60 ms depth.
    count = len(delays)
    kept = [i for i in range(count) if i not in dropped]
    arrival = sorted(kept, key=lambda i: (i + delays[i], i))
    in_order, shuffled = buffer(), buffer()
    expected = run(in_order, [packet(i, seq0=seq0, ts0=ts0) for i in kept])
    assert run(shuffled, [packet(i, seq0=seq0, ts0=ts0) for i in arrival]) == expected
    assert (shuffled.lost, shuffled.late, shuffled.duplicates) == (in_order.lost, 0, 0)
    if kept:
        assert len(expected) == 2 * FRAME * (kept[-1] - kept[0] + 1)


def levels(pcm: bytes) -> np.ndarray:
    """Per 160-sample frame: the packet number whose samples it holds, or -1 for noise."""
    frames = np.frombuffer(pcm, "<i2").reshape(-1, FRAME)
    return np.where(np.abs(frames).max(axis=1) < NOISE_CEILING, -1, frames[:, 0] - 1000)


def test_a_quiet_sender_gets_noise_now_and_the_next_packet_fills_only_the_rest():
    jitter = buffer()
    heard = run_without_flush(jitter, [packet(i) for i in range(4)]) + jitter.flush()
    quiet = jitter.idle(3 * FRAME)
    assert len(quiet) == 2 * 3 * FRAME and levels(quiet).tolist() == [-1, -1, -1]
    # Silence suppression: the sender resumes 5 frames after its last packet.
    resumed = jitter.push(packet(4, ts=5000 + 9 * FRAME)) + jitter.flush()
    assert levels(heard + quiet + resumed).tolist() == [0, 1, 2, 3, -1, -1, -1, -1, -1, 4]
    assert jitter.position == 10 * FRAME


def test_late_packets_after_a_quiet_spell_are_kept_whole_and_the_slip_counted():
    jitter = buffer()
    heard = run_without_flush(jitter, [packet(i) for i in range(4)]) + jitter.flush()
    quiet = jitter.idle(FRAME + FRAME // 2)
    late = jitter.push(packet(4)) + jitter.push(packet(5)) + jitter.flush()
    assert levels(late).tolist() == [4, 5], "no speech is lost"
    assert len(heard + quiet + late) == 2 * (6 * FRAME + FRAME + FRAME // 2)
    assert jitter.slipped == FRAME + FRAME // 2


def test_idle_releases_a_start_still_buffered():
    jitter = buffer()
    assert jitter.push(packet(0)) == b"", "the start is buffered"
    released = jitter.idle(FRAME)
    assert levels(released).tolist() == [0, -1]


def test_idle_before_the_first_packet_adds_nothing():
    jitter = buffer()
    assert jitter.idle(FRAME) == b"" and jitter.position == 0


def run_without_flush(jitter, packets):
    return b"".join(jitter.push(p) for p in packets)


def test_a_payload_the_codec_rejects_after_a_gap_does_not_fill_the_gap_twice():
    def decode(payload):
        if payload == b"bad!":
            raise MediaError("not a payload")
        return payload

    jitter = JitterBuffer(PT, decode)
    sent = [packet(i) for i in range(4)]
    # Silence suppression for 5 frames, then an undecodable packet, then speech again.
    rejected = packet(4, ts=5000 + 9 * FRAME)
    sent += [RtpPacket(PT, rejected.sequence, rejected.timestamp, SSRC, b"bad!")]
    sent += [packet(i, ts=5000 + (i + 5) * FRAME) for i in range(5, 8)]
    out = run(jitter, sent)
    assert blocks(out) == [0, 1, 2, 3] + ["noise"] * 6 + [5, 6, 7]
    assert (jitter.undecodable, jitter.position) == (1, 13 * FRAME)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.integers(0, 4), min_size=1, max_size=40),
    st.sets(st.integers(0, 39), max_size=8),
    st.dictionaries(st.integers(0, 39), st.tuples(st.integers(1, 5), st.integers(-2, 5)), max_size=4),
)
def test_no_loss_or_quiet_spell_loses_a_packet_that_is_not_late(delays, dropped, quiet):
    """
    Packets lost, reordered within the depth, quiet spells filled as they
    pass, after which the sender's timestamps jump ahead or back (it was
    silent, or stalled): every packet not given up on comes out whole, in
    order, and the timeline is that audio and the fills.
    """
    count = len(delays)
    kept = [i for i in range(count) if i not in dropped]
    arrival = sorted(kept, key=lambda i: (i + delays[i], i))
    shift = np.cumsum([quiet[i][1] * FRAME if i in quiet else 0 for i in range(count)])
    jitter = buffer()
    out = b""
    for i in arrival:
        if i in quiet:
            out += jitter.idle(quiet[i][0] * FRAME)
        out += jitter.push(packet(i, ts=5000 + i * FRAME + int(shift[i])))
    out += jitter.flush()
    released = [level for level in levels(out).tolist() if level >= 0]
    assert released == sorted(set(released)), "whole packets, in order, none twice"
    assert len(released) + jitter.late == len(kept), "each received packet released, or counted late"
    assert len(out) == 2 * jitter.position
