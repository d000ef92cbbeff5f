"""The Start/Stop state machine of calls, with scripted transcribers."""

from datetime import datetime, timedelta, timezone

import pytest
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock

from mgateway.calls.errors import ApiError, LegBusy
from mgateway.calls.registry import CallRegistry
from mgateway.calls.requests import StartRequest, StopRequest, TranscribeParams, parse_start
from mgateway.calls.roles import channel_roles, media_line_roles, sender_roles, track_roles
from mgateway.sip.callid import decode_metadata_ucid
from mgateway.transcript import Utterance
from tests.support.scripted_engine import ScriptedEngine

GUID = "00002542391662063156"


class Collect:
    def __init__(self):
        self.events = []

    def deliver(self, event):
        self.events.append(event)


def start_body(**over):
    body = {"namespace": "siprec", "guid": GUID, "customerId": "TT9833237",
            "agentId": "RE223444211993"}
    body.update(over)
    return parse_start(body, "en-US")


STOP = StopRequest("siprec", GUID)
RAW_WORDS = {"smartFormatting": False, "redactionOutput": "unredacted"}


def make(flush_at_once=True):
    engine = ScriptedEngine(flush_at_once=flush_at_once)
    sink = Collect()
    clock = Clock()
    mappers = {"siprec": media_line_roles(), "twilio": track_roles, "genesysaudiohook": channel_roles}
    registry = CallRegistry(engine, {namespace: [sink] for namespace in mappers}, clock, mappers)
    return registry, engine, sink, clock


def run(coro):
    """Run a coroutine that completes synchronously with scripted parts."""
    d = ensureDeferred(coro)
    results = []
    d.addBoth(results.append)
    assert results, "did not complete synchronously"
    if isinstance(results[0], Exception) or hasattr(results[0], "raiseException"):
        results[0].raiseException()
    return results[0]


def code_of(coro):
    with pytest.raises(ApiError) as e:
        run(coro)
    return e.value.code


def test_start_for_unknown_guid_is_400_203():
    registry, *_ = make()
    assert code_of(registry.start(start_body())) == "400-203"
    assert code_of(registry.stop(STOP)) == "400-203"


def test_a_siprec_call_filed_under_a_decimal_ucid_is_found_by_its_hex_form_too():
    """Oracle's bare hex UCID and the guide's decimal form name one call."""
    engine = ScriptedEngine()
    mappers = {"siprec": media_line_roles()}
    registry = CallRegistry(engine, {"siprec": [Collect()]}, Clock(), mappers,
                            guid_forms={"siprec": decode_metadata_ucid})
    registry.attach("siprec", "00057060001633546133", ["0", "1"])
    streams = run(registry.start(start_body(guid="00391770615DEF95")))
    assert set(streams) == {"customer", "agent"}
    assert run(registry.stop(StopRequest("siprec", "00391770615def95")))
    assert code_of(registry.start(start_body(guid="00391770615DEF96"))) == "400-203"


def test_audio_before_start_is_neither_transcribed_nor_counted():
    registry, engine, sink, clock = make()
    media = registry.attach("siprec", GUID, ["0", "1"])
    media.audio("0", b"\x01\x00" * 800)  # 100 ms of IVR
    streams = run(registry.start(start_body()))
    assert set(streams) == {"customer", "agent"}
    assert engine.transcribers == []
    media.audio("0", b"\x02\x00" * 1600)
    (customer,) = engine.transcribers
    assert customer.offset_ms == 100, "utterance times count from the start of the leg's audio"
    assert bytes(customer.fed) == b"\x02\x00" * 1600
    clock.advance(2.2)
    stopped = run(registry.stop(STOP))
    assert stopped["customer"][1].to_json() == {
        "totalAudioBytes": 3200, "audioDurationMs": 200, "streamingSeconds": 3, "transcripts": 0,
        "filledAudioMs": 0}
    assert stopped["agent"][1].total_audio_bytes == 0


def test_media_line_order_maps_the_top_m_line():
    registry, engine, sink, _ = make()
    media = registry.attach("siprec", GUID, ["0", "1"])
    run(registry.start(start_body(siprecParams={"mediaLineOrder": "AGENT_FIRST"})))
    media.audio("0", b"\x00\x00" * 160)
    engine.transcribers[0].say(Utterance("hello", 0, 500))
    assert sink.events[0].sender.role == "agent"
    assert sink.events[0].sender.external_id == "RE223444211993"


def test_utterances_reach_sinks_with_stream_ids_from_the_start_response():
    registry, engine, sink, _ = make()
    media = registry.attach("siprec", GUID, ["0", "1"])
    streams = run(registry.start(start_body()))
    media.audio("0", b"\x00\x00" * 160)
    media.audio("1", b"\x00\x00" * 160)
    customer, agent = engine.transcribers
    customer.say(Utterance("I need help", 400, 3968))
    agent.say(Utterance("Thank you", 4744, 8031))
    assert [(e.sender.role, e.stream_id, e.conversation_id, e.namespace) for e in sink.events] == [
        ("customer", streams["customer"].stream_id, GUID, "siprec"),
        ("agent", streams["agent"].stream_id, GUID, "siprec"),
    ]
    assert sink.events[0].utterance.start_ms == 400


def test_pause_and_resume_twice_summaries_add_up_and_stream_ids_stay():
    registry, engine, sink, clock = make()
    media = registry.attach("siprec", GUID, ["0", "1"])
    ids, totals = set(), 0
    for period in range(3):
        streams = run(registry.start(start_body()))
        ids.add(streams["customer"].stream_id)
        media.audio("0", b"\x00\x00" * 160 * (period + 1))
        engine.transcribers[-1].say(Utterance("x", 0, 10))
        stopped = run(registry.stop(STOP))
        summary = stopped["customer"][1]
        assert summary.total_audio_bytes == 320 * (period + 1)
        assert summary.transcripts == 1
        totals += summary.total_audio_bytes
        media.audio("0", b"\x00\x00" * 160)  # while stopped: not counted
    assert len(ids) == 1
    assert totals == 320 * 6


def test_start_twice_and_stop_twice_are_409_201():
    registry, *_ = make()
    registry.attach("siprec", GUID, ["0", "1"])
    assert code_of(registry.stop(STOP)) == "409-201"
    run(registry.start(start_body()))
    assert code_of(registry.start(start_body())) == "409-201"
    run(registry.stop(STOP))
    assert code_of(registry.stop(STOP)) == "409-201"


def test_request_while_stop_is_flushing_is_409_202():
    registry, engine, *_ = make(flush_at_once=False)
    media = registry.attach("siprec", GUID, ["0", "1"])
    run(registry.start(start_body()))
    media.audio("0", b"\x00\x00" * 160)
    stopping = ensureDeferred(registry.stop(STOP))
    assert not stopping.called
    assert code_of(registry.start(start_body())) == "409-202"
    engine.transcribers[0].finishing.callback(None)
    assert stopping.called
    run(registry.start(start_body()))


def test_requests_during_hang_up_are_409_203_then_400_203():
    registry, engine, sink, _ = make(flush_at_once=False)
    media = registry.attach("siprec", GUID, ["0", "1"])
    # The recogniser's own words are compared: no smart formatting.
    run(registry.start(start_body(autotranscribeParams=RAW_WORDS)))
    media.audio("0", b"\x00\x00" * 160)
    ending = media.hang_up()
    assert code_of(registry.stop(STOP)) == "409-203"
    assert code_of(registry.start(start_body())) == "409-203"
    # The flush still delivers the last words.
    engine.transcribers[0].say(Utterance("goodbye", 0, 300))
    engine.transcribers[0].finishing.callback(None)
    assert ending.called
    assert [e.utterance.text for e in sink.events] == ["goodbye"]
    assert code_of(registry.stop(STOP)) == "400-203"
    assert len(registry) == 0


def test_unsupported_language_is_400_202():
    registry, *_ = make()
    registry.attach("siprec", GUID, ["0", "1"])
    assert code_of(registry.start(start_body(autotranscribeParams={"language": "xx-XX"}))) == "400-202"


def test_twilio_track_map_and_per_track_attachments():
    registry, engine, sink, _ = make()
    inbound = registry.attach("twilio", "CA1", ["inbound"])
    outbound = registry.attach("twilio", "CA1", ["outbound"])
    body = {"namespace": "twilio", "guid": "CA1", "customerId": "c", "agentId": "a",
            "twilioParams": {"trackMap": {"inbound": "agent", "outbound": "customer"}}}
    run(registry.start(parse_start(body, "en-US")))
    inbound.audio("inbound", b"\x00\x00" * 160)
    engine.transcribers[0].say(Utterance("hi", 0, 10))
    assert sink.events[0].sender.role == "agent"
    inbound.hang_up()
    assert registry.find("twilio", "CA1") is not None, "the other track still feeds the call"
    outbound.hang_up()
    assert registry.find("twilio", "CA1") is None


def test_a_leg_fed_by_a_live_attachment_cannot_be_attached_twice():
    registry, *_ = make()
    registry.attach("twilio", "CA1", ["inbound"])
    with pytest.raises(LegBusy, match="already attached"):
        registry.attach("twilio", "CA1", ["inbound", "outbound"])
    assert list(registry.find("twilio", "CA1").legs) == ["inbound"], "a refused attach takes nothing"


def test_a_track_that_reconnects_continues_its_timeline_and_its_stream():
    registry, engine, sink, _ = make()
    inbound = registry.attach("twilio", "CA1", ["inbound"])
    registry.attach("twilio", "CA1", ["outbound"])
    body = {"namespace": "twilio", "guid": "CA1", "customerId": "c", "agentId": "a"}
    (customer_stream_id,) = {s.stream_id for role, s in run(registry.start(parse_start(body, "en-US"))).items()
                             if role == "customer"}
    inbound.audio("inbound", b"\x00\x00" * 800)  # 100 ms
    inbound.hang_up()
    inbound.audio("inbound", b"\x00\x00" * 800)
    again = registry.attach("twilio", "CA1", ["inbound"])
    again.audio("inbound", b"\x00\x00" * 800)
    (customer,) = engine.transcribers
    assert bytes(customer.fed) == b"\x00\x00" * 1600, "nothing through the hung-up attachment"
    customer.say(Utterance("hello", 100, 190))
    (event,) = sink.events
    assert (event.sender.role, event.stream_id) == ("customer", customer_stream_id)


def test_a_released_m_line_can_be_fed_again_by_a_new_attachment():
    registry, engine, *_ = make()
    first = registry.attach("siprec", GUID, ["0", "1"])
    run(registry.start(start_body()))
    first.release("1")
    first.audio("1", b"\x01\x00" * 160)
    assert [t for t in engine.transcribers if t.fed] == [], "a released leg is not fed"
    second = registry.attach("siprec", GUID, ["1"])
    second.audio("1", b"\x01\x00" * 160)
    first.audio("0", b"\x02\x00" * 160)
    assert sorted(bytes(t.fed) for t in engine.transcribers) == [b"\x01\x00" * 160, b"\x02\x00" * 160]
    first.hang_up()
    assert registry.find("siprec", GUID) is not None, "the new attachment still feeds the call"
    second.hang_up()
    assert registry.find("siprec", GUID) is None


@pytest.mark.parametrize("default, requested, top", [
    ("CUSTOMER_FIRST", None, "customer"),
    ("AGENT_FIRST", None, "agent"),
    ("AGENT_FIRST", "CUSTOMER_FIRST", "customer"),
])
def test_the_configured_media_line_order_applies_when_the_request_has_none(default, requested, top):
    request = start_body(siprecParams={"mediaLineOrder": requested} if requested else {})
    assert media_line_roles(default)(request, ["1", "0"]) == {"0": top, "1": "agent" if top == "customer" else "customer"}


def test_media_that_comes_back_while_the_call_is_flushing_starts_the_call_anew():
    registry, engine, *_ = make(flush_at_once=False)
    media = registry.attach("twilio", "CA1", ["inbound", "outbound"])
    body = {"namespace": "twilio", "guid": "CA1", "customerId": "c", "agentId": "a"}
    run(registry.start(parse_start(body, "en-US")))
    media.audio("inbound", b"\x00\x00" * 160)
    ending = registry.find("twilio", "CA1")
    media.hang_up()
    again = registry.attach("twilio", "CA1", ["inbound", "outbound"])
    assert registry.find("twilio", "CA1") is not ending and again.call.state.name == "NEW"
    engine.transcribers[0].finishing.callback(None)
    assert registry.find("twilio", "CA1") is again.call, "the old call's end leaves the new one alone"


def test_a_new_m_line_takes_the_place_of_a_removed_one():
    registry, engine, sink, _ = make()
    first = registry.attach("siprec", GUID, ["0", "1"])
    run(registry.start(start_body()))
    first.release("1")
    added = registry.attach("siprec", GUID, ["2"])
    added.audio("2", b"\x00\x00" * 160)
    engine.transcribers[0].say(Utterance("hi", 0, 10))
    assert sink.events[0].sender.role == "agent"


def test_a_direct_stream_is_a_one_leg_call_filed_under_its_conversation_with_its_own_sink():
    engine = ScriptedEngine()
    clock = Clock()
    store, socket = Collect(), Collect()
    registry = CallRegistry(engine, {"direct": [store]}, clock, {"direct": sender_roles})
    media = registry.attach("direct", "stream-1", ["agent"], conversation_id="conv-7",
                            stream_ids={"agent": "stream-1"}, sinks=[socket])
    request = StartRequest("direct", "stream-1", "A1", "A1", TranscribeParams("en-US"))
    run(registry.start(request))
    media.audio("agent", b"\x01\x00" * 800)
    engine.transcribers[0].say(Utterance("hello", 0, 100))
    clock.advance(1.5)
    stopped = run(registry.stop(StopRequest("direct", "stream-1")))
    assert stopped["agent"][1].to_json(filled=False) == {
        "totalAudioBytes": 1600, "audioDurationMs": 100, "streamingSeconds": 2, "transcripts": 1}
    assert socket.events == store.events
    (event,) = store.events
    assert (event.namespace, event.conversation_id, event.stream_id) == ("direct", "conv-7", "stream-1")
    assert (event.sender.role, event.sender.external_id) == ("agent", "A1")


def test_a_namespace_without_sinks_is_refused_at_construction():
    with pytest.raises(ValueError, match="no sinks"):
        CallRegistry(ScriptedEngine(), {}, Clock(), {"direct": sender_roles})


def test_utterances_of_a_leg_are_spoken_in_audio_order_whatever_the_media_pace():
    """
    Audio fed faster than real time between two results (a backlog, a loaded
    machine) must not put the later utterance before the earlier one: the
    after-call endpoint orders by C{spoken}.
    """
    engine, sink = ScriptedEngine(flush_at_once=True), Collect()
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    registry = CallRegistry(engine, {"siprec": [sink]}, Clock(), {"siprec": media_line_roles()},
                            now=lambda: now)
    media = registry.attach("siprec", GUID, ["0", "1"])
    run(registry.start(start_body()))
    second = b"\x00\x00" * 8000
    media.audio("0", second)
    customer = engine.transcribers[0]
    customer.say(Utterance("first", 0, 1000))
    media.audio("0", second * 2)
    customer.say(Utterance("second", 1000, 2000))
    first, later = sink.events
    assert first.spoken == now
    assert later.spoken - first.spoken == timedelta(seconds=1)
