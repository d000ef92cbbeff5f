"""Twilio Media Streams frames through the sans-I/O stream state machine."""

import json

import pytest
from hypothesis import given, settings, strategies as st
from twisted.internet.task import Clock

from mgateway.ingress.events import LegAudio, Terminated
from mgateway.ingress.twilio.session import Dropped, Started, Stopped, TwilioStream
from mgateway.ingress.twilio.signature import UpgradeSignature, twilio_signature, valid_signature
from mgateway.media.g711 import ulaw_decode, ulaw_encode
from mgateway.media.noise import comfort_noise
from tests.support.twilio_peer import TwilioPeer


def tone(ms: int, value: int = 1000) -> bytes:
    return value.to_bytes(2, "little", signed=True) * (8 * ms)


def feed(stream, frames):
    events = []
    for frame in frames:
        stream.receive_text(frame)
        events += stream.events()
    return events


def audio_of(events, track):
    """The track's timeline: filled gaps and received audio, in order."""
    return b"".join(e.pcm for e in events if isinstance(e, LegAudio) and e.leg == track)


def terminated(stream, frame) -> Terminated:
    """The stream ends on this frame, as its last event."""
    events = feed(stream, [frame])
    assert isinstance(events[-1], Terminated), events
    assert stream.events() == [] and feed(stream, [frame]) == [], "nothing after the end"
    return events[-1]


def test_documented_session_yields_start_audio_per_track_and_stop():
    peer = TwilioPeer("CA5b040e075515c424391012acc5a870cf")
    stream = TwilioStream()
    pcm = {"inbound": tone(200, 1000), "outbound": tone(200, -1000)}
    events = feed(stream, [peer.connected(), peer.start({"FirstName": "Jane"}),
                           *peer.media_frames(pcm), peer.dtmf("1"), peer.stop()])
    started = events[0]
    assert started == Started("CA5b040e075515c424391012acc5a870cf", peer.stream_sid,
                              ("inbound", "outbound"), {"FirstName": "Jane"})
    for track in ("inbound", "outbound"):
        out = audio_of(events, track)
        # The first timestamp is 52 ms: the timeline starts at the stream's 0.
        assert out[: 52 * 16] == comfort_noise(52 * 8)
        assert out[52 * 16 :] == ulaw_decode(ulaw_encode(pcm[track]))
    assert isinstance(events[-1], Stopped)
    assert stream.counts["dtmf"] == 1


def test_lost_and_reordered_frames_do_not_shift_later_audio():
    peer = TwilioPeer("CA1", tracks=["inbound"], first_timestamp=0)
    pcm = b"".join(i.to_bytes(2, "little", signed=True) * 160 for i in range(50))  # 50 frames, each distinct
    clean = TwilioStream()
    expected = audio_of(feed(clean, [peer.start(), *peer.media_frames({"inbound": pcm})]), "inbound")
    lossy = TwilioStream()
    peer2 = TwilioPeer("CA1", tracks=["inbound"], first_timestamp=0)
    events = feed(lossy, [peer2.start(), *peer2.media_frames({"inbound": pcm}, skip={5, 6, 20}, swap={30})])
    out = audio_of(events, "inbound")
    frame = 320
    assert len(out) >= len(expected) - frame, "the timeline keeps its length"
    # Lost frames became noise; the reordered frame's late copy was trimmed;
    # everything after lines up sample for sample.
    assert out[5 * frame : 7 * frame] == comfort_noise(2 * 160, start=5 * 160)
    assert out[32 * frame : 50 * frame] == expected[32 * frame : 50 * frame]
    assert out[:5 * frame] == expected[:5 * frame]


def test_media_before_start_closes_only_with_a_policy_error():
    peer = TwilioPeer("CA1")
    assert terminated(TwilioStream(), peer.media("inbound", b"\xff" * 160, 0)) == \
        Terminated(4008, '"media" before "start"')


@pytest.mark.parametrize("frame", ["not json", "[1,2]", '{"no": "event"}'])
def test_non_json_frames_close_the_socket(frame):
    assert terminated(TwilioStream(), frame).close_code == 4007


def test_the_gateway_ends_a_stream_once_and_later_frames_are_ignored():
    peer = TwilioPeer("CA1")
    stream = TwilioStream()
    feed(stream, [peer.connected(), peer.start()])
    stream.terminate(4001, "superseded by stream MZ2")
    stream.terminate(4008, "again")
    assert stream.events() == [Terminated(4001, "superseded by stream MZ2")]
    assert feed(stream, [peer.media("inbound", b"\xff" * 160, 0)]) == []


def test_a_stopped_stream_is_not_ended_again():
    peer = TwilioPeer("CA1")
    stream = TwilioStream()
    feed(stream, [peer.connected(), peer.start(), peer.stop()])
    stream.terminate(4001, "superseded by stream MZ2")
    assert stream.events() == []


def test_a_binary_frame_closes_the_socket_with_4003():
    stream = TwilioStream()
    stream.receive_bytes(b"\xff" * 160)
    assert stream.events() == [Terminated(4003, "binary frame on a Twilio stream")]
    assert stream.data_to_send() == [], "a fork stream sends nothing back"


def test_malformed_media_is_dropped_and_the_stream_goes_on():
    peer = TwilioPeer("CA1", tracks=["inbound"], first_timestamp=0)
    stream = TwilioStream(max_dropped=2)
    feed(stream, [peer.start()])
    bad = json.loads(peer.media("inbound", b"\xff" * 160, 0))
    bad["media"]["payload"] = "***not base64***"
    assert [type(e) for e in feed(stream, [json.dumps(bad)])] == [Dropped]
    missing = json.loads(peer.media("inbound", b"\xff" * 160, 0))
    del missing["media"]["timestamp"]
    assert [type(e) for e in feed(stream, [json.dumps(missing)])] == [Dropped]
    assert audio_of(feed(stream, [peer.media("inbound", b"\xff" * 160, 0)]), "inbound")
    assert terminated(stream, json.dumps(bad)) == Terminated(4007, "more than 2 malformed frames")


def test_unknown_events_and_marks_are_counted_not_fatal():
    peer = TwilioPeer("CA1")
    stream = TwilioStream()
    feed(stream, [peer.start()])
    assert feed(stream, [json.dumps({"event": "mark", "mark": {"name": "x"}})]) == []
    assert feed(stream, [json.dumps({"event": "brand-new"})]) == []
    assert stream.counts["brand-new"] == 1


def test_unsupported_media_format_is_refused():
    peer = TwilioPeer("CA1")
    start = json.loads(peer.start())
    start["start"]["mediaFormat"]["sampleRate"] = 16000
    assert terminated(TwilioStream(), json.dumps(start)) == Terminated(
        4008, 'unsupported media format {"encoding": "audio/x-mulaw", "sampleRate": 16000, "channels": 1}')


def test_no_media_for_the_timeout_gives_up_on_the_stream_with_4083():
    clock = Clock()
    peer = TwilioPeer("CA1", tracks=["inbound"], first_timestamp=0)
    stream = TwilioStream(clock_now=clock.seconds, media_timeout=10)
    assert stream.get_timer() == 10, "runs from the socket's opening, before any media"
    feed(stream, [peer.start()])
    clock.advance(4)
    feed(stream, [peer.media("inbound", b"\xff" * 160, 0)])
    assert stream.get_timer() == 14
    clock.advance(9.9)
    stream.handle_timer(clock.seconds())
    assert stream.events() == []
    clock.advance(0.1)
    stream.handle_timer(clock.seconds())
    assert stream.events() == [Terminated(4083, "no media for 10 s")]
    assert stream.get_timer() is None, "an ended stream has no timer"


def test_a_stopped_stream_has_no_timer_and_takes_no_more_frames():
    clock = Clock()
    peer = TwilioPeer("CA1", tracks=["inbound"], first_timestamp=0)
    stream = TwilioStream(clock_now=clock.seconds, media_timeout=10)
    assert isinstance(feed(stream, [peer.start(), peer.stop()])[-1], Stopped)
    assert stream.get_timer() is None
    assert feed(stream, [peer.media("inbound", b"\xff" * 160, 0)]) == []


def test_signature_matches_twilio_algorithm_with_and_without_default_port():
    token, url = "12345", "wss://gw.example.com/mg-twilio-autotranscribe/twilio-media/abc"
    signature = twilio_signature(token, url)
    assert valid_signature(token, url, signature)
    assert valid_signature(token, "wss://gw.example.com:443/mg-twilio-autotranscribe/twilio-media/abc",
                           signature)
    assert not valid_signature(token, url + "x", signature)
    assert not valid_signature("other", url, signature)
    assert not valid_signature(token, url, None)


def test_an_upgrade_passes_with_the_signature_of_its_public_or_host_url_and_without_a_token():
    uri = "/mg-twilio-autotranscribe/twilio-media/abc"
    behind_proxy = UpgradeSignature("12345", "wss://gw.example.com:8443/mg/")
    signed = twilio_signature("12345", "wss://gw.example.com:8443/mg" + uri)
    assert behind_proxy.refused_url({"host": "10.0.0.5", "x-twilio-signature": signed}, uri) is None
    assert behind_proxy.refused_url({"host": "10.0.0.5"}, uri) == "wss://gw.example.com:8443/mg" + uri
    direct = UpgradeSignature("12345")
    by_host = {"host": "gw.example.com",
               "x-twilio-signature": twilio_signature("12345", "wss://gw.example.com" + uri)}
    assert direct.refused_url(by_host, uri) is None
    assert direct.refused_url({**by_host, "host": "other.example.com"}, uri) == "wss://other.example.com" + uri
    assert UpgradeSignature("").refused_url({}, uri) is None, "no auth token: not checked"


def test_signature_matches_the_vector_published_with_twilios_libraries():
    params = {"CallSid": "CA1234567890ABCDE", "Caller": "+14158675309", "Digits": "1234",
              "From": "+14158675309", "To": "+18005551212"}
    assert twilio_signature("12345", "https://mycompany.com/myapp.php?foo=1&bar=2", params) == \
        "RSOYDt4T1cUTdK1PDd93/VVr8B8="


_PEER = TwilioPeer("CA1", first_timestamp=0)
_FRAMES = [_PEER.connected(), _PEER.start(), _PEER.media("inbound", b"\xff" * 160, 0),
           _PEER.media("outbound", b"\x7f" * 160, 20), _PEER.dtmf("5"), _PEER.stop(),
           '{"event": "media", "media": {"track": "inbound", "timestamp": "-5", "payload": ""}}', "{", "[]"]


@settings(max_examples=200)
@given(st.lists(st.one_of(st.sampled_from(_FRAMES), st.text(max_size=40)), max_size=30))
def test_no_sequence_of_frames_makes_the_stream_raise(frames):
    stream = TwilioStream(max_dropped=3)
    events = feed(stream, frames)
    ends = [i for i, e in enumerate(events) if isinstance(e, Terminated)]
    assert ends in ([], [len(events) - 1]), "at most one end, and nothing after it"
