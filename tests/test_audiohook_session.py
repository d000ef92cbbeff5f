"""An AudioHook Monitor session driven message by message by a Genesys-like client."""

import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from twisted.internet.task import Clock

from mgateway.ingress.audiohook.messages import NS_PER_SECOND, ProtocolError, format_duration, parse_duration
from mgateway.ingress.audiohook.events import (Closed, Declined, Discarded, Disconnected, Error, Media, Opened,
                                               Participant, Paused, Probed, Resumed, TimedOut, Updated)
from mgateway.ingress.audiohook.session import AudioHookSession, SessionPolicy, State, select_media
from mgateway.ingress.events import LegAudio
from mgateway.media.g711 import ulaw_encode
from mgateway.media.noise import comfort_noise
from tests.support.audiohook_client import (
    CONVERSATION_ID,
    EXTERNAL,
    INTERNAL,
    ORGANIZATION_ID,
    PARTICIPANT,
    SESSION_ID,
    STEREO,
    AudioHookClient,
    ServerViolation,
    interleave,
)

L16_STEREO = {"type": "audio", "format": "L16", "channels": ["external", "internal"], "rate": 8000}
REVERSED = {"type": "audio", "format": "PCMU", "channels": ["internal", "external"], "rate": 8000}
LANGUAGES = ("en-US", "ko-KR")


class Call:
    """A session and a client wired back to back, as the transport would."""

    def __init__(self, client=None, policy=SessionPolicy(supported_languages=LANGUAGES), **session_kwargs):
        self.clock = Clock()
        self.client = client or AudioHookClient()
        session_kwargs.setdefault("session_id", self.client.session_id)
        session_kwargs.setdefault("organization_id", self.client.organization_id)
        self.session = AudioHookSession(self.clock.seconds, policy, **session_kwargs)
        self.events = []
        self.replies = []

    def text(self, text: str) -> list:
        self.session.receive_text(text)
        return self._settle(self.session.events())

    def binary(self, frame: bytes) -> list:
        self.session.receive_bytes(frame)
        return self._settle(self.session.events())

    def raw(self, text: str) -> list:
        """A text the client did not produce: the replies are kept but not checked by the client."""
        self.session.receive_text(text)
        events = self.session.events()
        self.events += events
        self.replies += self.session.data_to_send()
        return events

    def _settle(self, events):
        self.events += events
        if any(isinstance(event, Closed) for event in events):
            self.session.flushed()  # the call's last words delivered at once
        for reply in self.session.data_to_send():
            self.replies.append(reply)
            self.client.receive(reply)
        return events

    def open(self, **kwargs) -> list:
        return self.text(self.client.open(**kwargs))

    @property
    def last(self) -> dict:
        return json.loads(self.replies[-1])


def tone(hz: float, ms: int, amplitude: int = 8000) -> bytes:
    t = np.arange(8 * ms) / 8000
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes()


def pcm_of(events, channel: str) -> bytes:
    """The audio received on one channel (gaps the session filled left out)."""
    return b"".join(e.pcm for e in events if isinstance(e, LegAudio) and e.leg == channel and not e.filled)


def assert_close_to_mulaw_quantisation(decoded: bytes, original: bytes):
    """mu-law keeps about 4 bits of mantissa: the error is below 1/16 of the magnitude, plus a little."""
    out, ref = np.frombuffer(decoded, "<i2").astype(int), np.frombuffer(original, "<i2").astype(int)
    assert out.shape == ref.shape
    assert (np.abs(out - ref) <= np.abs(ref) // 16 + 8).all(), np.abs(out - ref).max()


# --- documented messages, byte for byte ----------------------------------------------------------


def test_documented_open_message_is_produced_byte_for_byte():
    client = AudioHookClient(session_id="9ed63d0d-1a2a-4711-a4df-b4a8c182a742",
                             organization_id="b55bf4ee-20af-434f-ac59-4078e0723d73")
    assert client.open() == (
        '{"version":"2","type":"open","id":"9ed63d0d-1a2a-4711-a4df-b4a8c182a742","seq":1,"serverseq":0,'
        '"position":"PT0S","parameters":{"organizationId":"b55bf4ee-20af-434f-ac59-4078e0723d73",'
        '"conversationId":"56f79392-2922-4e68-803b-b0c8aee0d63c","participant":{"id":"bc90c400-6661-4839-b2b3-'
        '71cc9fff5207","ani":"+1-555-555-1234","aniName":"John Doe","dnis":"+1-800-555-6789"},"media":[{"type":'
        '"audio","format":"PCMU","channels":["external","internal"],"rate":8000},{"type":"audio","format":"PCMU",'
        '"channels":["external"],"rate":8000},{"type":"audio","format":"PCMU","channels":["internal"],"rate":8000}],'
        '"language":"en-US","supportedLanguages":true,"customConfig":{"foo":"bar"}}}')


def test_open_is_answered_with_the_stereo_offer_verbatim():
    call = Call()
    events = call.open()
    assert call.replies == [
        '{"version":"2","type":"opened","id":"30b0e395-84d3-4570-ac13-9a62d8f514c0","seq":1,"clientseq":1,'
        '"parameters":{"media":[{"type":"audio","format":"PCMU","channels":["external","internal"],"rate":8000}],'
        '"startPaused":false,"supportedLanguages":["en-US","ko-KR"]}}']
    assert events == [Opened(
        session_id=SESSION_ID, organization_id=ORGANIZATION_ID, conversation_id=CONVERSATION_ID,
        participant=Participant(PARTICIPANT["id"], "+1-555-555-1234", "John Doe", "+1-800-555-6789"),
        media=Media("PCMU", ("external", "internal"), 8000), language="en-US", custom_config={"foo": "bar"})]
    assert call.session.state is State.ACTIVE


def test_supported_languages_are_listed_only_when_asked():
    call = Call()
    call.open(supported_languages=None)
    assert call.last["parameters"] == {"media": [STEREO], "startPaused": False}


def test_documented_ping_gets_the_documented_pong():
    call = Call(AudioHookClient(session_id="9ed63d0d-1a2a-4711-a4df-b4a8c182a742"))
    call.open()
    call.text(call.client.ping())
    call.binary(call.client.audio(bytes(2 * 9600)))  # 1.2 s of stereo
    ping = call.client.ping(rtt_ns=2470497)
    assert ping == ('{"version":"2","type":"ping","id":"9ed63d0d-1a2a-4711-a4df-b4a8c182a742","seq":3,"serverseq":2,'
                    '"position":"PT1.2S","parameters":{"rtt":"PT0.002470497S"}}')
    call.text(ping)
    assert call.replies[-1] == ('{"version":"2","type":"pong","id":"9ed63d0d-1a2a-4711-a4df-b4a8c182a742","seq":3,'
                                '"clientseq":3,"parameters":{}}')
    assert call.session.rtt_ns == 2470497


def test_every_ping_is_answered_at_once_with_its_own_seq():
    call = Call()
    call.open()
    for i in range(5):
        call.text(call.client.ping())
        call.binary(call.client.audio(bytes(1600)))
        assert (call.last["type"], call.last["clientseq"], call.last["seq"]) == ("pong", 2 + i, 2 + i)


def test_close_is_answered_with_closed():
    call = Call()
    call.open()
    call.text(call.client.ping())
    events = call.text(call.client.close())
    assert call.replies[-1] == ('{"version":"2","type":"closed","id":"30b0e395-84d3-4570-ac13-9a62d8f514c0",'
                                '"seq":3,"clientseq":3,"parameters":{}}')
    assert events == [Closed("end")]
    assert call.session.state is State.CLOSED


# --- media selection ----------------------------------------------------------------------------


@pytest.mark.parametrize("offers, chosen", [
    ([EXTERNAL, INTERNAL, STEREO], STEREO),
    ([INTERNAL, EXTERNAL], EXTERNAL),
    ([REVERSED, EXTERNAL], REVERSED),
    ([EXTERNAL, REVERSED, STEREO], STEREO),
    ([{"type": "audio", "format": "PCMU", "channels": ["external", "internal"], "rate": 16000}, EXTERNAL], EXTERNAL),
    ([{"type": "video"}, "junk", EXTERNAL], EXTERNAL),
    ([INTERNAL], INTERNAL),
    ([{"type": "audio", "format": "PCMU", "channels": ["internal", "external"], "rate": 8000}, INTERNAL, EXTERNAL],
     REVERSED),
])
def test_media_preference(offers, chosen):
    assert select_media(offers) is offers[offers.index(chosen)]


def test_l16_is_chosen_only_when_the_policy_allows_it():
    assert select_media([L16_STEREO]) is None
    assert select_media([L16_STEREO, EXTERNAL], allow_l16=True) is EXTERNAL
    assert select_media([L16_STEREO], allow_l16=True) is L16_STEREO


def test_no_acceptable_media_disconnects_with_an_error_then_closes():
    call = Call()
    events = call.open(offers=[L16_STEREO, {**INTERNAL, "rate": 16000}])
    assert [e.reason for e in events] == ["error"] and "No acceptable media" in events[0].info
    assert call.last["type"] == "disconnect" and call.last["parameters"]["reason"] == "error"
    assert all(json.loads(r)["type"] != "opened" for r in call.replies)
    assert call.text(call.client.close("disconnect")) == [Closed("disconnect")]
    assert call.last["type"] == "closed"


def test_an_internal_only_offer_is_opened_and_yields_the_agents_audio():
    """The compliance suite's single-channel internal test: the reference server answers opened."""
    call = Call()
    events = call.open(offers=[INTERNAL])
    assert call.last["type"] == "opened" and call.last["parameters"]["media"] == [INTERNAL]
    assert events[0].media == Media("PCMU", ("internal",), 8000)
    frames = call.binary(call.client.audio(ulaw_encode(tone(300, 100))))
    assert [e.leg for e in frames] == ["internal"]


def test_a_declined_open_gets_a_disconnect_in_place_of_its_opened():
    call = Call()
    call.session.receive_text(call.client.open())
    call.session.events()
    call.session.decline("Conversation X is already streamed by AudioHook session Y")
    assert call.session.events() == [Disconnected("error", "Conversation X is already streamed by AudioHook session Y")]
    for reply in call.session.data_to_send():
        call.replies.append(reply)
        call.client.receive(reply)  # seq 1: the disconnect takes the opened's place
    assert [json.loads(r)["type"] for r in call.replies] == ["disconnect"]
    assert call.last["parameters"]["info"] == "Conversation X is already streamed by AudioHook session Y"
    assert call.binary(bytes(1600)) == [], "audio sent anyway is dropped"
    assert call.text(call.client.close("disconnect")) == [Closed("disconnect")]


def test_a_client_told_to_go_has_the_grace_period_to_close_its_socket():
    call = Call(policy=SessionPolicy(close_grace_seconds=10))
    call.open()
    assert call.session.get_timer() is None, "an open session has no deadline"
    call.clock.advance(100)
    call.raw("{not json")  # a protocol error: disconnect(error)
    assert call.session.get_timer() == 110
    call.clock.advance(9.9)
    call.session.handle_timer(call.clock.seconds())
    assert call.session.events() == []
    call.clock.advance(0.1)
    call.session.handle_timer(call.clock.seconds())
    assert call.session.events() == [TimedOut("disconnect sent")]
    assert call.session.get_timer() is None and call.session.state is State.CLOSED


def test_after_closed_the_client_has_the_grace_period_to_close_its_socket():
    call = Call(policy=SessionPolicy(close_grace_seconds=10))
    call.open()
    call.text(call.client.close())
    assert call.session.get_timer() == 10
    call.session.handle_timer(10)
    assert call.session.events() == [TimedOut("closed")]


def test_closed_waits_for_the_calls_flush_at_most_its_limit():
    call = Call(policy=SessionPolicy(close_grace_seconds=10, close_flush_seconds=5))
    call.open()
    call.session.receive_text(call.client.close())
    assert call.session.events() == [Closed("end")]
    assert call.session.data_to_send() == [], "held until the call's last words are delivered"
    assert call.session.get_timer() == 5
    call.session.handle_timer(4.9)
    assert call.session.data_to_send() == []
    call.session.handle_timer(5)
    assert [json.loads(frame)["type"] for frame in call.session.data_to_send()] == ["closed"]
    assert call.session.get_timer() == 10, "then the client's own grace runs on"


def test_closed_goes_as_soon_as_the_call_is_flushed():
    call = Call(policy=SessionPolicy(close_grace_seconds=10, close_flush_seconds=5))
    call.open()
    call.session.receive_text(call.client.close())
    call.clock.advance(1)
    call.session.flushed()
    assert [json.loads(frame)["type"] for frame in call.session.data_to_send()] == ["closed"]
    assert call.session.get_timer() == 10


def test_a_shut_down_shortens_the_time_a_client_told_to_go_has_to_close():
    call = Call(policy=SessionPolicy(close_grace_seconds=10))
    call.open()
    call.session.close_within(3)
    assert call.session.get_timer() is None, "only a client told to go has a deadline"
    assert call.session.disconnect("completed")
    call.session.close_within(30)
    assert call.session.get_timer() == 10, "never lengthened"
    call.clock.advance(1)
    call.session.close_within(3)
    assert call.session.get_timer() == 4
    call.session.handle_timer(4)
    assert call.session.events() == [TimedOut("disconnect sent")]


def test_an_open_for_a_conversation_another_session_streams_is_declined():
    client = AudioHookClient()
    streams = {client.conversation_id: "3bd7f4b0-0000-4000-8000-000000000001"}
    call = Call(client, streaming=streams.get)
    info = (f"Conversation {client.conversation_id} is already streamed by AudioHook session "
            f"3bd7f4b0-0000-4000-8000-000000000001; a conversation is transcribed from one session at a time")
    assert call.open() == [Declined(info)]
    assert [json.loads(r)["type"] for r in call.replies] == ["disconnect"]
    assert call.last["parameters"] == {"reason": "error", "info": info}
    assert call.binary(bytes(1600)) == [], "audio sent anyway is dropped"
    assert call.text(call.client.close("disconnect")) == [Closed("disconnect")]


@pytest.mark.parametrize("parameters, info", [
    ({"code": "408", "message": None}, """Invalid 'error' parameters: {"code":"408","message":null}"""),
    ({"code": 408, "message": "x", "retryAfter": "2 s"}, '"2 s" is not a duration of the form PT<seconds>S'),
])
def test_disconnect_info_is_plain_text_with_the_clients_values_as_json(parameters, info):
    call = Call()
    call.open()
    events = call.raw(call.client.message("error", parameters))
    assert events == [Disconnected("error", info)]
    assert call.last["parameters"]["info"] == info


def test_no_acceptable_media_names_the_offers_as_json():
    call = Call()
    offers = [L16_STEREO, {"type": "audio", "format": "PCMA", "channels": ["external"], "rate": 8000}]
    call.open(offers=offers)
    info = call.last["parameters"]["info"]
    prefix = "No acceptable media offered (PCMU 8000 Hz, channels external and/or internal): "
    assert info.startswith(prefix) and json.loads(info[len(prefix):]) == offers, info


# --- audio ------------------------------------------------------------------------------------


def test_stereo_frames_of_varying_sizes_split_into_the_two_participants():
    call = Call()
    call.open()
    customer, agent = tone(440, 1000), tone(1000, 1000, amplitude=-12000)
    frames = call.client.pcmu_frames({"external": customer, "internal": agent}, samples_per_frame=(800, 160, 1, 1333))
    events = [e for frame in frames for e in call.binary(frame)]
    assert len(pcm_of(events, "external")) == len(customer) == 16000
    assert_close_to_mulaw_quantisation(pcm_of(events, "external"), customer)
    assert_close_to_mulaw_quantisation(pcm_of(events, "internal"), agent)
    assert [e.leg for e in events] == ["external", "internal"] * len(frames), "one per channel, no gap"
    assert call.session.position_ns == call.client.position_ns == NS_PER_SECOND


def test_pcmu_decoding_follows_g711():
    call = Call()
    call.open()
    codes = bytes(range(256))
    external, internal = call.binary(call.client.audio(interleave(codes, codes[::-1])))
    samples = np.frombuffer(external.pcm, "<i2")
    assert [samples[c] for c in (0x00, 0x80, 0xFF, 0x7F, 0xFE, 0xF0)] == [-32124, 32124, 0, 0, 8, 120]
    # Re-encoding every decoded value gives its code back (0x7F is "negative zero", encoded as 0xFF).
    assert ulaw_encode(external.pcm) == codes.replace(b"\x7f", b"\xff")
    assert ulaw_encode(internal.pcm) == codes[::-1].replace(b"\x7f", b"\xff")


def test_interleaving_follows_the_selected_channel_order():
    call = Call()
    call.open(offers=[REVERSED])
    customer, agent = tone(300, 100), tone(700, 100)
    frames = call.client.pcmu_frames({"external": customer, "internal": agent})
    assert frames[0][:2] == bytes([ulaw_encode(agent)[0], ulaw_encode(customer)[0]])
    events = [e for frame in frames for e in call.binary(frame)]
    assert_close_to_mulaw_quantisation(pcm_of(events, "external"), customer)
    assert_close_to_mulaw_quantisation(pcm_of(events, "internal"), agent)


def test_mono_external_yields_only_the_customer():
    call = Call()
    call.open(offers=[EXTERNAL])
    customer = tone(440, 200)
    events = [e for f in call.client.pcmu_frames({"external": customer}) for e in call.binary(f)]
    assert {e.leg for e in events} == {"external"}
    assert_close_to_mulaw_quantisation(pcm_of(events, "external"), customer)


def test_l16_frames_are_little_endian_pcm_when_allowed():
    call = Call(policy=SessionPolicy(allow_l16=True))
    call.open(offers=[L16_STEREO])
    customer, agent = tone(440, 20), tone(880, 20)
    frame = np.stack([np.frombuffer(customer, "<i2"), np.frombuffer(agent, "<i2")], axis=1).tobytes()
    assert call.binary(call.client.audio(frame)) == [LegAudio("external", customer), LegAudio("internal", agent)]
    assert call.session.position_ns == 20_000_000


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=1200), min_size=1, max_size=12))
def test_any_frame_sizes_give_the_same_per_channel_pcm(samples_per_frame):
    customer, agent = tone(440, 250), tone(1000, 250, amplitude=5000)
    outputs = []
    for sizes in ((800,), tuple(samples_per_frame)):
        call = Call()
        call.open()
        for frame in call.client.pcmu_frames({"external": customer, "internal": agent}, sizes):
            call.binary(frame)
        outputs.append((pcm_of(call.events, "external"), pcm_of(call.events, "internal"), call.session.position_ns))
    assert outputs[0] == outputs[1]
    assert outputs[1][2] == 250 * 1_000_000


# --- pause, resume, discarded, update, error ---------------------------------------------------


def test_pause_resume_and_discarded_keep_the_timeline():
    call = Call()
    call.open()
    call.binary(call.client.audio(bytes(2 * 8000)))  # 1 s
    assert call.text(call.client.paused()) == [Paused(NS_PER_SECOND)]
    # The two seconds the client discarded are filled, on both channels, before the audio goes on.
    noise = comfort_noise(2 * 8000, start=8000)
    assert call.text(call.client.resumed(discarded_ns=2 * NS_PER_SECOND)) == [
        Resumed(NS_PER_SECOND, 2 * NS_PER_SECOND),
        LegAudio("external", noise, filled=True), LegAudio("internal", noise, filled=True)]
    assert [e.filled for e in call.binary(call.client.audio(bytes(2 * 4000)))] == [False, False]
    events = call.text(call.client.discarded(300_000_000))
    assert events[0] == Discarded(3_500_000_000, 300_000_000)
    assert [(e.leg, len(e.pcm), e.filled) for e in events[1:]] == [("external", 4800, True),
                                                                     ("internal", 4800, True)]
    call.binary(call.client.audio(bytes(2 * 80)))
    assert call.session.position_ns == call.client.position_ns == 3_810_000_000


def test_resumed_without_discarded_audio_leaves_the_timeline_as_it_was():
    call = Call()
    call.open()
    call.binary(call.client.audio(bytes(1600)))
    call.text(call.client.paused())
    assert call.text(call.client.resumed()) == [Resumed(100_000_000, 0)], "nothing to fill"
    assert [e.filled for e in call.binary(call.client.audio(bytes(1600)))] == [False, False]


def test_pause_and_resume_requests_are_sent_and_answered():
    call = Call()
    call.open()
    call.session.pause()
    call._settle([])
    assert (call.last["type"], call.last["parameters"]) == ("pause", {})
    call.text(call.client.paused())
    call.session.resume()
    call._settle([])
    assert call.last["type"] == "resume"
    call.text(call.client.resumed())
    assert call.session.state is State.ACTIVE


def test_pause_before_open_starts_the_session_paused():
    call = Call()
    call.session.pause()
    call.open()
    assert call.last["parameters"]["startPaused"] is True
    assert call.session.state is State.PAUSED


def test_language_update_is_acknowledged():
    call = Call()
    call.open()
    assert call.text(call.client.update("es-ES")) == [Updated("es-ES")]
    assert (call.last["type"], call.last["parameters"]) == ("updated", {})


def test_client_error_is_reported_without_reply():
    call = Call()
    call.open()
    replies = len(call.replies)
    assert call.text(call.client.error(408, "Timeout waiting for pong")) == [Error(408, "Timeout waiting for pong",
                                                                                   None)]
    assert len(call.replies) == replies
    assert call.text(call.client.close("error")) == [Closed("error")]


# --- probe and server-initiated disconnect -----------------------------------------------------


def test_connection_probe_is_opened_then_closed_without_a_call():
    call = Call(AudioHookClient.probe())
    assert call.open() == [Probed(SESSION_ID, ORGANIZATION_ID)]
    assert call.last["type"] == "opened" and call.last["parameters"]["media"] == [STEREO]
    assert call.binary(call.client.audio(bytes(1600))) == []
    assert call.text(call.client.close()) == [Closed("end")]
    assert [json.loads(r)["type"] for r in call.replies] == ["opened", "closed"]


def test_server_disconnect_is_followed_by_the_clients_close():
    call = Call()
    call.open()
    assert call.session.disconnect("completed", "transcription finished") is True
    call._settle([])
    assert call.replies[-1] == ('{"version":"2","type":"disconnect","id":"30b0e395-84d3-4570-ac13-9a62d8f514c0",'
                                '"seq":2,"clientseq":1,"parameters":{"reason":"completed",'
                                '"info":"transcription finished"}}')
    assert call.session.disconnect("error") is False
    assert call.binary(bytes(1600)) == [] and call.session.dropped_frames == 1
    call.text(call.client.ping())
    assert call.last["type"] == "pong"
    assert call.text(call.client.close("disconnect")) == [Closed("disconnect")]


def test_disconnect_reason_outside_the_protocol_is_a_programming_error():
    with pytest.raises(ValueError):
        Call().session.disconnect("bored")


def test_organization_other_than_the_header_is_unauthorized():
    call = Call(organization_id="b55bf4ee-20af-434f-ac59-4078e0723d73")
    [event] = call.open()
    assert isinstance(event, Disconnected) and event.reason == "unauthorized"
    assert call.last["parameters"]["reason"] == "unauthorized"
    assert call.text(call.client.close("disconnect")) == [Closed("disconnect")]


# --- bad input --------------------------------------------------------------------------------


def assert_error_disconnect(call, events, fragment):
    assert [type(e) for e in events] == [Disconnected], events
    assert events[0].reason == "error" and fragment in events[0].info, events[0].info
    assert call.last["type"] == "disconnect"
    assert call.last["parameters"] == {"reason": "error", "info": events[0].info}


def test_audio_before_opened_is_an_error():
    call = Call()
    assert_error_disconnect(call, call.binary(bytes(160)), "Received audio in state awaiting open")
    assert call.text(call.client.close("disconnect")) == [Closed("disconnect")]


def test_audio_while_paused_is_an_error():
    call = Call()
    call.open()
    call.text(call.client.paused())
    assert_error_disconnect(call, call.binary(bytes(160)), "Received audio in state paused")


def test_stereo_frame_with_half_a_sample_is_an_error():
    call = Call()
    call.open()
    assert_error_disconnect(call, call.binary(bytes(161)), "not a whole number of 2-channel PCMU samples")


@pytest.mark.parametrize("text, fragment", [
    ("x" * 65536, "Text message too large"),
    ("{not json", "not valid JSON"),
    ("[" * 60_000, "not valid JSON"),
    ('{"version":"1","type":"ping","id":"30b0e395-84d3-4570-ac13-9a62d8f514c0","seq":1,"serverseq":0,'
     '"position":"PT0S","parameters":{}}', "not a well-formed client message"),
    ('{"version":"2","type":"ping","id":"30b0e395-84d3-4570-ac13-9a62d8f514c0","seq":1,"serverseq":0,'
     '"position":"PT0S"}', "not a well-formed client message"),
    ('{"version":"2","type":"ping","id":"30b0e395-84d3-4570-ac13-9a62d8f514c0","seq":1,"serverseq":0,'
     '"position":"PT1M2S","parameters":{}}', "not a duration"),
    ('{"version":"2","type":"dance","id":"30b0e395-84d3-4570-ac13-9a62d8f514c0","seq":1,"serverseq":0,'
     '"position":"PT0S","parameters":{}}', '"dance" is not a supported client message'),
    ('{"version":"2","type":"ping","id":"9ed63d0d-1a2a-4711-a4df-b4a8c182a742","seq":1,"serverseq":0,'
     '"position":"PT0S","parameters":{}}', "Session identifier mismatch"),
    ('{"version":"2","type":"ping","id":"30b0e395-84d3-4570-ac13-9a62d8f514c0","seq":1,"serverseq":5,'
     '"position":"PT0S","parameters":{}}', "Invalid serverseq value 5"),
    ('{"version":"2","type":"update","id":"30b0e395-84d3-4570-ac13-9a62d8f514c0","seq":1,"serverseq":0,'
     '"position":"PT0S","parameters":{"language":"es-ES"}}', "Unexpected 'update' before 'open'"),
], ids=["oversized", "bad-json", "deep-nesting", "version", "no-parameters", "minutes",
        "unknown-type", "other-session", "serverseq", "update-before-open"])
def test_bad_text_message_disconnects_with_an_error(text, fragment):
    call = Call()
    assert_error_disconnect(call, call.raw(text), fragment)


@pytest.mark.parametrize("change, fragment", [
    (lambda p: p.pop("conversationId"), "conversationId"),
    (lambda p: p["participant"].pop("ani"), "participant"),
    (lambda p: p.update(language="English"), "language"),
    (lambda p: p.update(media={}), "media"),
])
def test_open_with_bad_parameters_disconnects_with_an_error(change, fragment):
    call = Call()
    message = json.loads(call.client.open())
    message["parameters"]["participant"] = dict(message["parameters"]["participant"])
    change(message["parameters"])
    assert_error_disconnect(call, call.raw(json.dumps(message)), f"Invalid 'open' parameters: {fragment}")


def test_seq_gap_disconnects_but_the_close_still_gets_closed():
    call = Call()
    call.open()
    call.client.seq += 1  # a message lost
    assert_error_disconnect(call, call.text(call.client.ping()), "Invalid seq value 3 (expected 2)")
    call.client._pending_ping = None
    assert call.text(call.client.close("disconnect")) == [Closed("disconnect")]
    assert (call.last["type"], call.last["clientseq"]) == ("closed", 4)


def test_the_disconnect_after_a_seq_gap_acknowledges_the_last_good_message():
    call = Call()
    call.open()
    call.client.seq += 5
    call.raw(call.client.ping())
    assert (call.last["type"], call.last["clientseq"]) == ("disconnect", 1)


def test_a_refused_session_answers_its_open_with_an_unauthorized_disconnect():
    call = Call()
    call.session.refuse()
    assert call.text(call.client.open()) == [Disconnected("unauthorized", None)]
    assert (call.last["type"], call.last["clientseq"], call.last["parameters"]) == (
        "disconnect", 1, {"reason": "unauthorized"})
    assert call.text(call.client.close("disconnect")) == [Closed("disconnect")]
    assert call.last["type"] == "closed"


def test_second_open_is_an_error():
    call = Call()
    call.open()
    assert_error_disconnect(call, call.text(call.client.open()), "Unexpected 'open' in state active")


def test_only_one_disconnect_is_sent_however_many_errors_follow():
    call = Call()
    call.binary(bytes(10))
    call.text("{broken")
    call.binary(bytes(10))
    assert [json.loads(r)["type"] for r in call.replies] == ["disconnect"]
    assert call.text(call.client.close("disconnect")) == [Closed("disconnect")]


def test_messages_after_closed_are_ignored():
    call = Call()
    call.open()
    call.text(call.client.close())
    sent = len(call.replies)
    assert call.text(call.client.ping()) == [] and call.binary(bytes(2)) == []
    assert len(call.replies) == sent


def test_last_received_at_follows_the_clock():
    call = Call()
    call.clock.advance(12.5)
    call.open()
    assert call.session.last_received_at == 12.5


def test_client_rejects_a_pong_for_another_ping():
    client = AudioHookClient()
    client.open()
    client.receive('{"version":"2","type":"opened","id":"30b0e395-84d3-4570-ac13-9a62d8f514c0","seq":1,'
                   '"clientseq":1,"parameters":{"media":[],"startPaused":false}}')
    client.ping()
    with pytest.raises(ServerViolation):
        client.receive('{"version":"2","type":"pong","id":"30b0e395-84d3-4570-ac13-9a62d8f514c0","seq":2,'
                       '"clientseq":1,"parameters":{}}')


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                   max_size=4), max_leaves=12)
_envelope = st.fixed_dictionaries({
    "version": st.sampled_from(["2", "1", 2]),
    "type": st.sampled_from(["open", "close", "ping", "paused", "resumed", "discarded", "update", "error", "x"]),
    "id": st.sampled_from([SESSION_ID, "00000000-0000-0000-0000-000000000000", "nope"]),
    "seq": st.integers(min_value=-1, max_value=4),
    "serverseq": st.integers(min_value=-1, max_value=3),
    "position": st.sampled_from(["PT0S", "PT1.25S", "PT.5S", "1s", "PT1e3S"]),
    "parameters": st.dictionaries(st.sampled_from(["media", "reason", "start", "discarded", "language", "code",
                                                   "message", "rtt", "organizationId", "participant"]), _json,
                                  max_size=4),
})


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(_envelope.map(json.dumps), st.text(max_size=40), st.binary(max_size=40)), max_size=8))
def test_no_input_makes_the_session_raise_or_misbehave(inputs):
    session = AudioHookSession(Clock().seconds, SessionPolicy(), session_id=SESSION_ID)
    sent = []
    for item in inputs:
        session.receive_bytes(item) if isinstance(item, bytes) else session.receive_text(item)
        session.events()
        sent += [json.loads(text) for text in session.data_to_send()]
    assert [m["seq"] for m in sent] == list(range(1, len(sent) + 1))
    assert sum(m["type"] == "disconnect" for m in sent) <= 1
    assert sum(m["type"] == "closed" for m in sent) <= 1
    assert all(set(m) == {"version", "type", "id", "seq", "clientseq", "parameters"} for m in sent)


# --- durations ---------------------------------------------------------------------------------


@pytest.mark.parametrize("text, ns", [("PT0S", 0), ("PT1.5S", 1_500_000_000), ("PT.5S", 500_000_000),
                                      ("PT13.05525S", 13_055_250_000), ("PT0.002470497S", 2_470_497),
                                      ("PT0.0000000004S", 0), ("PT0.0000000006S", 1)])
def test_durations_parse_to_nanoseconds(text, ns):
    assert parse_duration(text) == ns


@pytest.mark.parametrize("text", ["PT1M2S", "PT1.S", "P1S", "PT-1S", "PT1e3S", "PT1,5S", " PT1S", "PT1S\n", 1.5, None,
                                  "PT99999999999999S"])
def test_durations_outside_the_protocol_are_rejected(text):
    with pytest.raises(ProtocolError):
        parse_duration(text)


@given(st.integers(min_value=0, max_value=2**53 - 1))
def test_durations_format_without_exponent_and_parse_back(ns):
    text = format_duration(ns)
    assert "e" not in text and parse_duration(text) == ns


def test_durations_format_like_the_reference_client():
    assert [format_duration(n) for n in (0, 1_200_000_000, 3 * NS_PER_SECOND, 125_000)] == [
        "PT0S", "PT1.2S", "PT3S", "PT0.000125S"]


def test_without_the_header_the_first_message_names_the_session():
    client = AudioHookClient(session_id="9ed63d0d-1a2a-4711-a4df-b4a8c182a742")
    call = Call(client, session_id=None, organization_id=None)
    [opened] = call.open()
    assert opened.session_id == call.session.session_id == "9ed63d0d-1a2a-4711-a4df-b4a8c182a742"
    assert call.last["id"] == "9ed63d0d-1a2a-4711-a4df-b4a8c182a742"
