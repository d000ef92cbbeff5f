"""
The incremental EBML/Matroska reader of GetMedia bodies, against the sample
files in C{tests/fixtures/kvs} (real KVS GetMedia output, synthetic
Connect-shaped fixtures of another project, and a file laid out byte for byte
like a real Connect fragment dump; see its PROVENANCE.md).
"""

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mgateway.ingress.kvs.mkv import (
    Block, ClusterStarted, FragmentEnded, MkvError, MkvParser, Truncated,
)

SAMPLES = Path(__file__).parent / "fixtures" / "kvs"
FILES = sorted(SAMPLES.glob("*/*.mkv"))
SMALL = [f for f in FILES if f.stat().st_size < 64 * 1024]
CONNECT = SAMPLES / "synthetic_connect_layout" / "connect_like_synthetic.mkv"


def parse(data: bytes, cuts=()) -> list:
    """All events of C{data} fed in pieces split at C{cuts}, then closed."""
    parser = MkvParser()
    events, start = [], 0
    for cut in sorted(set(cuts)) + [len(data)]:
        events += parser.feed(data[start:cut])
        start = cut
    return events + parser.close()


def fragments(events) -> list[FragmentEnded]:
    return [e for e in events if isinstance(e, FragmentEnded)]


def test_every_sample_is_read():
    assert len(FILES) >= 20
    counts = {f.name: len(fragments(parse(f.read_bytes()))) for f in FILES}
    # The numbers of fragments the files' provenance states.
    assert counts["test_mixed_tags.mkv"] == 10
    assert counts["connect_like_synthetic.mkv"] == 7
    assert counts["test_tags_empty_cluster.mkv"] == 1
    assert counts["empty-mkv-with-tags.mkv"] == 1
    assert all(counts.values())


@pytest.mark.parametrize("path", SMALL, ids=lambda p: p.name)
def test_byte_by_byte_gives_the_same_events(path):
    data = path.read_bytes()
    assert parse(data, range(1, len(data))) == parse(data)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(FILES), st.lists(st.floats(0, 1), max_size=60))
def test_any_chunking_gives_the_same_events(path, fractions):
    data = path.read_bytes()
    assert parse(data, [int(f * len(data)) for f in fractions]) == parse(data)


def test_connect_fragment_layout():
    events = parse(CONNECT.read_bytes())
    first = next(e for e in events if isinstance(e, ClusterStarted))
    assert [(t.number, t.name, t.codec_id) for t in first.tracks] == [
        (1, "AUDIO_TO_CUSTOMER", "A_AAC"), (2, "AUDIO_FROM_CUSTOMER", "A_AAC")]
    assert first.tag("MimeType") == "audio/L16;rate=8000;channels=1;"
    assert first.tag("AWS_KINESISVIDEO_CONTINUATION_TOKEN") is None, "it comes after the Cluster"
    ended = fragments(events)[0]
    assert ended.tag("AWS_KINESISVIDEO_CONTINUATION_TOKEN") == ended.tag("AWS_KINESISVIDEO_FRAGMENT_NUMBER")
    assert ended.tag("AWS_KINESISVIDEO_MILLIS_BEHIND_NOW") is not None
    assert (ended.blocks, ended.block_bytes) == (32, 32 * 1024)
    blocks = [e for e in events if isinstance(e, Block)]
    assert {len(b.payload) for b in blocks} == {1024} and {b.track for b in blocks} == {1, 2}


def test_nul_padded_strings_and_tags_after_the_cluster():
    ended = fragments(parse((SAMPLES / "real_kvs_getmedia" / "test_mixed_tags.mkv").read_bytes()))
    assert ended[0].tracks[0].name == "test track"
    names = [name for name, _ in ended[1].tags]
    assert names.index("AWS_KINESISVIDEO_CONTINUATION_TOKEN") > names.index("AWS_KINESISVIDEO_FRAGMENT_NUMBER")


def test_ebml_magic_inside_pcm_is_audio():
    events = parse((SAMPLES / "synthetic_connect_shape" / "false_ebml_magic_in_pcm.mkv").read_bytes())
    assert len(fragments(events)) == 1
    assert any(b"\x1a\x45\xdf\xa3" in e.payload for e in events if isinstance(e, Block))


def test_real_truncated_recording_ends_cleanly():
    data = (SAMPLES / "real_kvs_getmedia" / "output-get-media-equal-timecode.mkv").read_bytes()
    events = parse(data)
    assert len(fragments(events)) == 1 and events[-1] == Truncated(1371)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, CONNECT.stat().st_size - 1))
def test_any_truncation_ends_cleanly(length):
    whole = fragments(parse(CONNECT.read_bytes()))
    events = parse(CONNECT.read_bytes()[:length])
    got = fragments(events)
    # Every fragment before the cut is whole; the one cut is either reported
    # truncated or (cut between elements of its unknown-size Segment) ends early.
    assert isinstance(events[-1], (Truncated, FragmentEnded))
    complete = got if isinstance(events[-1], Truncated) else got[:-1]
    assert complete == whole[: len(complete)]
    assert len(complete) >= length // 34768 - 1  # 34,768 bytes per fragment


def test_an_oversized_element_is_refused_without_buffering_it():
    parser = MkvParser(max_element=1000)
    data = CONNECT.read_bytes()
    with pytest.raises(MkvError, match="limit 1000"):
        parser.feed(data)
    with pytest.raises(MkvError):
        parser.feed(b"more")


@pytest.mark.parametrize("data, message", [
    (b"\x00\x81", "0x00 first byte"),
    (b"\x42\x86\x81\x01", "outside a Segment"),
    (b"\x18\x53\x80\x67\xff\x86\xff", "unknown size is not a master"),
    (b"\x18\x53\x80\x67\x84\x16\x54\xae\x6b\x85", "overruns"),
])
def test_broken_framing_is_an_mkv_error(data, message):
    with pytest.raises(MkvError, match=message):
        MkvParser().feed(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(0, 40), st.integers(0, 400))
def test_fuzzed_input_raises_only_mkv_error(noise, at, offset):
    base = CONNECT.read_bytes()[offset : offset + 1200]
    data = base[:at] + noise + base[at:]
    parser = MkvParser(max_element=4096, max_fragment_bytes=8192)
    try:
        for i in range(0, len(data), 7):
            for event in parser.feed(data[i : i + 7]):
                if isinstance(event, Block):
                    assert len(event.payload) <= 4096
            assert len(parser._buffer) <= 4096 + 16
        parser.close()
    except MkvError:
        pass


def test_the_generator_lays_fragments_out_byte_for_byte_as_the_connect_sample():
    """
    tests/support/connect_mkv.py, given the sample's values and PCM, writes
    exactly the sample's first fragment (whose layout is a real Connect dump's).
    """
    from tests.support.connect_mkv import fragment

    sample = CONNECT.read_bytes()[:34768]
    events = parse(sample)
    ended = fragments(events)[0]
    pcm = {1: b"", 2: b""}
    for event in events:
        if isinstance(event, Block):
            pcm[event.track] += event.payload
    cluster_ms = next(e.timecode for e in events if isinstance(e, Block))
    built = fragment(ended.tag("ContactId"), int(ended.tag("AWS_KINESISVIDEO_FRAGMENT_NUMBER")), cluster_ms,
                     customer=pcm[2], agent=pcm[1],
                     millis_behind_now=int(ended.tag("AWS_KINESISVIDEO_MILLIS_BEHIND_NOW")),
                     server_ms=round(float(ended.tag("AWS_KINESISVIDEO_SERVER_TIMESTAMP")) * 1000),
                     instance_id=ended.tag("InstanceId"))
    assert built.data == sample
