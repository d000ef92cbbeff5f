"""
The one timeline every ingress places its audio on: gap fill bounded by the
cap and the wall clock, overlaps trimmed or kept (with the slip counted).
"""

import numpy as np
from hypothesis import given, settings, strategies as st
from twisted.internet.task import Clock

from mgateway.media.noise import comfort_noise
from mgateway.media.timeline import Overlap, TrackTimeline

POLICIES = st.sampled_from(Overlap)


def placed(timeline, timestamp, pcm) -> bytes:
    result = timeline.place(timestamp, pcm)
    return result.fill + result.pcm


def audio(position: int, samples: int) -> bytes:
    """Received audio that says where its sender put it: each sample is its position (mod 2**15)."""
    return (np.arange(position, position + samples) % 32768).astype("<i2").tobytes()


def put(timeline, position: int, samples: int) -> bytes:
    """What the timeline gets for a chunk of audio(position, samples): fill, then the audio it keeps."""
    noise, trim = timeline.advance(position, samples)
    return noise + audio(position, samples)[2 * trim:]


@settings(max_examples=50)
@given(st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 40)), min_size=1, max_size=40))
def test_timeline_position_always_follows_the_latest_timestamp(chunks):
    timeline = TrackTimeline(max_gap_ms=1000, overlap=Overlap.TRIM)
    for timestamp, ms in sorted(chunks):
        before = timeline.position_ms
        out = placed(timeline, timestamp, b"\x02\x00" * 8 * ms)
        assert len(out) % 2 == 0
        assert timeline.position_ms == before + len(out) // 16
        assert timeline.position_ms >= min(timestamp + ms, before)


def test_timeline_caps_a_huge_jump_and_reanchors():
    timeline = TrackTimeline(max_gap_ms=100, overlap=Overlap.TRIM)
    timeline.place(0, b"\x02\x00" * 160)
    out = placed(timeline, 3_600_000, b"\x02\x00" * 160)
    assert len(out) == (100 + 20) * 16
    assert len(placed(timeline, 3_600_020, b"\x02\x00" * 160)) == 320


def test_a_timestamp_jump_fills_no_further_than_the_wall_clock_allows():
    """Six frames in 13 s whose timestamps jump a minute each: 13 s of timeline, not five minutes."""
    clock = Clock()
    timeline = TrackTimeline(max_gap_ms=60_000, clock_now=clock.seconds, max_lead_ms=2_000, overlap=Overlap.TRIM)
    frame = b"\x02\x00" * 160
    for i in range(6):
        result = timeline.place(i * 60_000, frame)
        assert result.pcm == frame, "received audio is always kept whole"
        clock.advance(2.6)
    assert timeline.position_ms <= 13_000 + 2_000 + 6 * 20, timeline.position_ms
    assert timeline.refused_ms > 280_000
    # Timestamps that follow the jump go on from where the timeline stands.
    assert timeline.place(5 * 60_000 + 20, frame).fill == b""


def test_late_audio_arriving_in_a_burst_is_placed_at_its_timestamps():
    clock = Clock()
    timeline = TrackTimeline(max_gap_ms=60_000, clock_now=clock.seconds, max_lead_ms=500, overlap=Overlap.TRIM)
    frame = b"\x02\x00" * 160
    timeline.place(0, frame)
    clock.advance(3)  # three seconds lost on the way, then the stream resumes on time
    assert len(timeline.place(3_000, frame).fill) == (3_000 - 20) * 16
    assert timeline.refused_ms == 0


def test_positions_in_samples_fill_gaps_shorter_than_a_millisecond():
    """AudioHook reports gaps to the sample; they are filled exactly, on every channel alike."""
    timeline = TrackTimeline(max_gap_ms=1000, overlap=Overlap.TRIM)
    assert timeline.advance(0, 800) == (b"", 0)
    noise, trim = timeline.advance(805, 0)  # five samples (625 us) discarded
    assert (noise, trim) == (comfort_noise(5, start=800), 0)
    assert timeline.advance(805, 800) == (b"", 0)
    assert timeline.position_samples == 1605
    assert timeline.advance(1600, 10) == (b"", 5), "an overlap is trimmed from the chunk"


def test_kept_overlap_is_placed_whole_after_what_is_there_and_the_slip_counted():
    timeline = TrackTimeline(overlap=Overlap.KEEP)
    assert timeline.advance(0, 160) == (b"", 0)
    assert timeline.advance(100, 160) == (b"", 0), "nothing trimmed"
    assert (timeline.position_samples, timeline.slipped) == (320, 60)
    # The sender's positions are re-anchored: the next chunk in its sequence needs no fill.
    assert timeline.advance(260, 160) == (b"", 0)
    assert timeline.position_samples == 480


def test_after_reanchor_the_next_chunk_continues_where_the_timeline_stands():
    timeline = TrackTimeline(overlap=Overlap.KEEP)
    assert timeline.anchored, "at the sender's 0 to begin with"
    timeline.reanchor()
    assert timeline.advance(5000, 160) == (b"", 0)
    timeline.reanchor()
    assert not timeline.anchored
    assert timeline.advance(3_000_000_000, 160) == (b"", 0), "a new source's numbering, no gap"
    assert timeline.anchored and timeline.position_samples == 320
    assert timeline.advance(3_000_000_320, 160) == (comfort_noise(160, start=320), 0)


def test_an_idle_fill_moves_the_sender_on_so_its_next_chunk_fills_only_the_rest():
    timeline = TrackTimeline(overlap=Overlap.KEEP)
    timeline.advance(0, 160)
    assert timeline.idle(240) == comfort_noise(240, start=160)
    noise, _ = timeline.advance(800, 160)
    assert noise == comfort_noise(800 - 160 - 240, start=400)
    assert (timeline.position_samples, timeline.slipped) == (960, 0)


def test_idle_before_any_chunk_after_a_reanchor_fills_nothing():
    timeline = TrackTimeline(overlap=Overlap.KEEP)
    timeline.reanchor()
    assert timeline.idle(800) == b"" and timeline.position_samples == 0


def test_concealment_opens_a_fill_and_noise_does_the_rest():
    timeline = TrackTimeline(overlap=Overlap.KEEP)
    timeline.advance(0, 160)
    concealment = np.full(100, 7, "<i2").tobytes()
    asked = []

    def conceal(samples):
        asked.append(samples)
        return concealment

    noise, _ = timeline.advance(480, 160, conceal)
    assert asked == [320]
    assert noise == concealment + comfort_noise(220, start=260)
    assert timeline.position_samples == 640


def test_the_wall_clock_holds_idle_fills_too():
    clock = Clock()
    timeline = TrackTimeline(clock_now=clock.seconds, max_lead_ms=100, overlap=Overlap.KEEP)
    timeline.advance(0, 0)
    assert len(timeline.idle(8000)) == 2 * 800, "0 s passed: the 100 ms lead only"
    assert timeline.refused_ms == 900


# A sender's chunks: (gap before it, samples, lost on the way); negative gaps are overlaps.
chunk_lists = st.lists(st.tuples(st.integers(-400, 1200), st.integers(1, 400), st.booleans()),
                       min_size=1, max_size=30)


def sender_positions(chunks):
    position = 0
    for gap, samples, lost in chunks:
        position = max(0, position + gap)
        yield position, samples, lost
        position += samples


@settings(max_examples=200, deadline=None)
@given(chunk_lists, st.lists(st.integers(1, 399), max_size=60), POLICIES)
def test_any_split_of_the_chunks_gives_the_same_timeline(chunks, cuts, policy):
    whole, split = TrackTimeline(max_gap_ms=100, overlap=policy), TrackTimeline(max_gap_ms=100, overlap=policy)
    expected, got = [], []
    cuts = iter(cuts)
    for position, samples, _ in sender_positions(chunks):
        expected.append(put(whole, position, samples))
        done = 0
        while done < samples:
            piece = min(samples - done, next(cuts, samples))
            got.append(put(split, position + done, piece))
            done += piece
    assert b"".join(got) == b"".join(expected)
    assert (split.position_samples, split.slipped, split.skew) == (whole.position_samples, whole.slipped, whole.skew)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 400), st.booleans(), st.floats(0, 0.49)), min_size=1, max_size=40),
       POLICIES)
def test_any_loss_pattern_keeps_the_timeline_as_long_as_the_media_time(chunks, policy):
    """
    Contiguous audio, any chunks lost, each arriving up to just under the
    lead late: the timeline ends where the last chunk received ends, and
    what is not received audio is fill.
    """
    clock = Clock()
    timeline = TrackTimeline(clock_now=clock.seconds, max_lead_ms=500, overlap=policy)
    position = received = filled = end = 0
    for samples, lost, delay in chunks:
        if not lost:
            clock.advance(max(0, position / 8000 + delay - clock.seconds()))
            noise, trim = timeline.advance(position, samples)
            assert trim == 0
            filled += len(noise) // 2
            received += samples
            end = position + samples
        position += samples
    assert timeline.position_samples == end == received + filled
    assert (timeline.refused_ms, timeline.slipped) == (0, 0)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["chunk", "idle"]), st.integers(-50_000, 500_000),
                          st.integers(0, 800), st.integers(0, 3000)), max_size=40),
       POLICIES, st.integers(0, 3000))
def test_fill_never_runs_ahead_of_the_wall_clock(steps, policy, max_lead_ms):
    """Whatever the sender's positions do (jumps, going back) and whenever it goes quiet."""
    clock = Clock()
    timeline = TrackTimeline(clock_now=clock.seconds, max_lead_ms=max_lead_ms, overlap=policy)
    filled = received = 0
    position = 0
    for kind, jump, samples, wait_ms in steps:
        clock.advance(wait_ms / 1000)
        if kind == "idle":
            filled += len(timeline.idle(samples)) // 2
        else:
            position = max(0, position + jump)
            noise, trim = timeline.advance(position, samples)
            filled += len(noise) // 2
            received += samples - trim
        assert filled <= int(clock.seconds() * 1000) * 8 + max_lead_ms * 8
        assert timeline.position_samples == filled + received
