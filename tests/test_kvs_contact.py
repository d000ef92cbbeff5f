"""
One contact's audio out of a KVS stream: tracks by name, the ContactId filter
and switch, no byte twice when a fragment is replayed. Checked against the
synthetic Connect-shaped fixtures of another project (their README.json states
what each file holds) and fragments from tests/support/connect_mkv.py.
"""

import json
from pathlib import Path

import pytest

from mgateway.ingress.kvs.contact import Audio, ContactEnded, ContactMedia, StreamError, connect_roles
from mgateway.ingress.kvs.mkv import Block, ClusterStarted, FragmentEnded, MkvParser
from tests.support.connect_mkv import contact_fragments, error_fragment
from tests.support.speech import RATE

SHAPES = Path(__file__).parent / "fixtures" / "kvs" / "synthetic_connect_shape"
DESCRIBED = json.loads((SHAPES / "README.json").read_text())["fixtures"]


def events_of(data: bytes) -> list:
    parser = MkvParser()
    return parser.feed(data) + parser.close()


def audio(actions) -> dict:
    out = {}
    for action in actions:
        if isinstance(action, Audio):
            out[action.leg] = out.get(action.leg, b"") + action.pcm
    return out


@pytest.mark.parametrize("name", sorted(DESCRIBED))
def test_fixtures_hold_what_their_authors_describe(name):
    described = DESCRIBED[name]
    events = events_of((SHAPES / f"{name}.mkv").read_bytes())
    ended = [e for e in events if isinstance(e, FragmentEnded)]
    assert len(ended) == described["segments"]
    assert sum(isinstance(e, ClusterStarted) for e in events) == described["clusters"]
    assert sum(isinstance(e, Block) for e in events) == described["simple_blocks"]
    # Their list is per fragment for files with tagless fragments, else each contact once.
    ours = [e.tag("ContactId") or "" for e in ended]
    assert described["contact_ids"] in (ours, list(dict.fromkeys(ours)))


def test_stream_reuse_later_contact_skips_earlier_and_earlier_ends_at_switch():
    events = events_of((SHAPES / "stream_reuse.mkv").read_bytes())
    ids = [e.tag("ContactId") for e in events if isinstance(e, FragmentEnded)]
    first, second = ids[0], ids[-1]
    assert first != second
    blocks_of = {}
    contact = None
    for event in events:
        if isinstance(event, ClusterStarted):
            contact = event.tag("ContactId")
        elif isinstance(event, Block):
            blocks_of[contact] = blocks_of.get(contact, 0) + len(event.payload)

    early = ContactMedia(first)
    actions = early.receive(events)
    assert actions[-1] == ContactEnded(second) and early.ended
    assert sum(len(a.pcm) for a in actions if isinstance(a, Audio)) == blocks_of[first]
    late = ContactMedia(second)
    actions = late.receive(events)
    assert not late.ended and sum(len(a.pcm) for a in actions if isinstance(a, Audio)) == blocks_of[second]


def test_tracks_by_name_whatever_their_numbers():
    events = events_of((SHAPES / "track_order_swapped.mkv").read_bytes())
    cluster = next(e for e in events if isinstance(e, ClusterStarted))
    numbers = {t.name: t.number for t in cluster.tracks}
    expected = {"AUDIO_FROM_CUSTOMER": b"", "AUDIO_TO_CUSTOMER": b""}
    for event in events:
        if isinstance(event, Block):
            leg = next(name for name, number in numbers.items() if number == event.track)
            expected[leg] += event.payload
    assert audio(ContactMedia(cluster.tag("ContactId")).receive(events)) == expected
    assert connect_roles(None, list(expected)) == {"AUDIO_FROM_CUSTOMER": "customer", "AUDIO_TO_CUSTOMER": "agent"}


def test_replayed_fragment_gives_only_what_was_not_delivered():
    pcm = bytes(range(256)) * (RATE * 2 * 3 // 256)
    fragments = contact_fragments("c", pcm, pcm[::-1])
    stream = b"".join(f.data for f in fragments)
    media = ContactMedia("c")
    cut = len(fragments[0].data) + 20_000
    parser = MkvParser()
    got = audio(media.receive(parser.feed(stream[:cut])))
    assert media.last_fragment == fragments[0].number
    # A resume after the token of fragment 0 starts again at fragment 1.
    again = audio(media.receive(events_of(stream[len(fragments[0].data):])))
    for leg, whole in (("AUDIO_FROM_CUSTOMER", pcm), ("AUDIO_TO_CUSTOMER", pcm[::-1])):
        assert got.get(leg, b"") + again.get(leg, b"") == whole
    # Fragments at or before the last whole one are dropped entirely.
    assert audio(media.receive(events_of(stream))) == {}


def test_error_tags_and_foreign_media_are_reported():
    assert ContactMedia("c").receive(events_of(error_fragment("ACCESS_DENIED", 4500))) == [
        StreamError("ACCESS_DENIED", "4500")]
    data = contact_fragments("c", b"\x00" * 2048, b"")[0].data.replace(b"rate=8000", b"rate=9000")
    media = ContactMedia("c")
    actions = media.receive(events_of(data))
    assert isinstance(actions[0], StreamError) and media.ended and not audio(actions)
