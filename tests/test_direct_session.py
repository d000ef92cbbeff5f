"""The direct WebSocket API's session state machine, driven without sockets."""

import json
from datetime import datetime, timezone

import pytest
from hypothesis import given, strategies as st

from mgateway.calls.stream import StreamSummary
from mgateway.ingress.direct.session import DirectSession, Flush, Started, State
from mgateway.ingress.events import LegAudio, Terminated
from mgateway.transcript import Sender, TranscriptEvent, Utterance, Word

#: What the call of a stream reports when it is stopped.
SUMMARY = StreamSummary(total_audio_bytes=1600, audio_duration_ms=100, streaming_seconds=3, transcripts=1)


def make(max_message_bytes=65536, **kw):
    languages = {"en-us": "en-US", "es-us": "es-US"}
    session = DirectSession("stream-1", lambda tag: languages.get(tag.lower()),
                            max_message_bytes=max_message_bytes, **kw)
    return session, None


def event_of(utterance, detailed_tokens):
    moment = datetime(2026, 1, 1, tzinfo=timezone.utc)
    return TranscriptEvent("direct", "conv", "stream-1", Sender("customer", "JD232442"), utterance,
                           moment, moment, detailed_tokens)


START = {"message": "startStream", "sender": {"role": "customer", "externalId": "JD232442"}}


class Output:
    """What one input caused: the session's events and the frames it sends, decoded."""

    def __init__(self, session):
        self.events = session.events()
        self.frames = [json.loads(frame) for frame in session.data_to_send()]


def fed(session, method, *args):
    getattr(session, method)(*args)
    return Output(session)


def sent(output):
    return output.frames


def closes(output):
    return [e.close_code for e in output.events if isinstance(e, Terminated)]


def status_codes(output):
    """The status code of the finalResponse, of each stream end."""
    return [int(f["status"]["code"]) for f in output.frames if f["message"] == "finalResponse"]


def test_start_without_a_language_takes_the_configured_default():
    session, _ = make(default_language="es-US")
    out = fed(session, "receive_text", json.dumps(START))
    assert [e.transcribe.language for e in out.events if isinstance(e, Started)] == ["es-US"]


def test_start_applies_spec_defaults_and_answers_start_response():
    session, _ = make()
    out = fed(session, "receive_text", json.dumps(START))
    started = [e for e in out.events if isinstance(e, Started)][0]
    assert started.sender == Sender("customer", "JD232442")
    assert started.transcribe.language == "en-US"
    assert started.transcribe.smart_formatting is True
    assert started.transcribe.detailed_token is False
    assert started.transcribe.redaction_output == "redacted"
    assert sent(out) == [{
        "message": "startResponse",
        "streamID": "stream-1",
        "status": {"code": "1000", "description": "OK"},
    }]


def test_whole_sequence_sends_transcripts_and_the_calls_summary_in_the_final_response():
    session, _ = make()
    session.receive_text(json.dumps({**START, "language": "es-us", "detailedToken": True,
                                     "redactionOutput": "unredacted"}))
    assert session.transcribe.language == "es-US"
    session.events(), session.data_to_send()
    audio = fed(session, "receive_bytes", b"\x01\x00" * 800)
    assert audio.events == [LegAudio("customer", b"\x01\x00" * 800)]
    assert audio.frames == []
    utterance = Utterance("hola", 100, 900, (Word("hola", 100, 900, 0.9),))
    (transcript,) = sent(fed(session, "transcript", event_of(utterance, detailed_tokens=True)))
    assert transcript == {
        "message": "transcript", "start": 100, "end": 900,
        "utterance": [{"text": "hola", "tokens": [{"content": "hola", "start": 100, "end": 900}]}],
    }
    assert fed(session, "receive_text", '{"message": "finishStream"}').events == [Flush()]
    dropped = fed(session, "receive_bytes", b"\x00\x00" * 10)  # dropped after finishStream
    assert (dropped.events, dropped.frames) == ([], [])
    out = fed(session, "flushed", SUMMARY)
    assert sent(out) == [{
        "message": "finalResponse",
        "streamId": "stream-1",
        "status": {"code": "1000", "description": "OK"},
        "summary": {"totalAudioBytes": 1600, "audioDurationMs": 100,
                    "streamingSeconds": 3, "transcripts": 1},
    }]
    assert closes(out) == [1000]
    assert session.state is State.CLOSED


@pytest.mark.parametrize(
    "message, code",
    [
        ({"message": "startStream"}, 4040),
        ({"message": "startStream", "sender": {"role": "boss", "externalId": "x"}}, 4040),
        ({"message": "startStream", "sender": {"role": "agent"}}, 4040),
        ({**START, "language": "fr-FR"}, 4050),
        ({**START, "encoding": "OPUS"}, 4051),
        ({**START, "samplingRate": 16000}, 4053),
        ({**START, "samplingRate": "8000"}, 4040),
        ({**START, "smartFormatting": "yes"}, 4040),
        ({**START, "redactionOutput": "maybe"}, 4040),
        ({**START, "smartFormatting": False}, 4092),
        ({**START, "detailedToken": True}, 4093),
        ({"message": "finishStream"}, 4056),
        ({"message": "dance"}, 4040),
        ([1, 2], 4040),
    ],
)
def test_bad_first_message_gets_final_response_with_its_code_and_close(message, code):
    session, _ = make()
    out = fed(session, "receive_text", json.dumps(message))
    (final,) = sent(out)
    assert final["message"] == "finalResponse"
    assert final["status"]["code"] == str(code)
    assert closes(out) == [code]


def test_not_json_is_4040():
    session, _ = make()
    assert closes(fed(session, "receive_text", "{nope")) == [4040]


def test_json_nested_too_deeply_is_4040_not_a_crash():
    session, _ = make()
    deep = "[" * 20_000 + "]" * 20_000
    assert closes(fed(session, "receive_text", deep)) == [4040]


def test_audio_before_start_is_wrong_order():
    session, _ = make()
    assert closes(fed(session, "receive_bytes", b"\x00\x00")) == [4056]


def test_second_start_stream_flushes_then_reports_4056():
    session, _ = make()
    session.receive_text(json.dumps(START))
    session.events()
    assert fed(session, "receive_text", json.dumps(START)).events == [Flush()]
    (final,) = sent(fed(session, "flushed", SUMMARY))
    assert final["status"]["code"] == "4056"


def test_text_after_finish_stream_is_dropped_and_final_reports_4056():
    session, _ = make()
    session.receive_text(json.dumps(START))
    session.receive_text('{"message": "finishStream"}')
    session.events(), session.data_to_send()
    dropped = fed(session, "receive_text", json.dumps({"message": "updateVocabulary"}))
    assert (dropped.events, dropped.frames) == ([], [])
    out = fed(session, "flushed", SUMMARY)
    assert sent(out)[0]["status"]["code"] == "4056"
    assert closes(out) == [4056]


def test_oversized_audio_message_is_rejected_with_4040():
    session, _ = make(max_message_bytes=3200)
    session.receive_text(json.dumps(START))
    session.events()
    assert fed(session, "receive_bytes", b"\x00" * 3202).events == [Flush()]
    assert sent(fed(session, "flushed", SUMMARY))[0]["status"]["code"] == "4040"


@pytest.mark.parametrize("trigger, code, close_code", [("idle", 4083, 4083), ("duration", 4090, 4090),
                                                       ("shutting_down", 5001, 1000)])
def test_server_side_endings_flush_then_report_their_code(trigger, code, close_code):
    now = [0.0]
    session, _ = make(clock_now=lambda: now[0], idle_timeout=60, max_duration=100)
    session.receive_text(json.dumps(START))
    session.events(), session.data_to_send()
    if trigger == "idle":
        session.handle_timer(60.0)
    elif trigger == "duration":
        for now[0] in (59.0, 99.0):
            session.receive_bytes(b"\x00\x00")  # the stream is not idle
        session.events()
        session.handle_timer(100.0)
    else:
        session.shutting_down()
    assert session.events() == [Flush()]
    out = fed(session, "flushed", SUMMARY)
    assert sent(out)[0]["status"]["code"] == str(code)
    assert status_codes(out) == [code]
    assert closes(out) == [close_code]


def test_idle_timeout_before_start_closes_at_once_with_an_empty_summary():
    session, _ = make(clock_now=lambda: 0.0, idle_timeout=60)
    out = fed(session, "handle_timer", 60.0)
    assert closes(out) == [4083]
    assert sent(out)[0]["summary"] == {"totalAudioBytes": 0, "audioDurationMs": 0,
                                       "streamingSeconds": 0, "transcripts": 0}


def test_internal_error_flushes_then_reports_5000_and_closes_normally():
    session, _ = make()
    session.receive_text(json.dumps(START))
    session.events()
    assert fed(session, "internal_error", "recogniser failed").events == [Flush()]
    out = fed(session, "flushed", SUMMARY)
    assert sent(out)[0]["status"] == {"code": "5000",
                                      "description": "Internal service error: recogniser failed"}
    assert status_codes(out) == [5000]
    assert closes(out) == [1000]


def test_transcripts_after_the_final_response_are_not_sent():
    session, _ = make()
    session.receive_text(json.dumps(START))
    session.receive_text('{"message": "finishStream"}')
    session.flushed(SUMMARY)
    session.data_to_send()
    assert sent(fed(session, "transcript", event_of(Utterance("late", 0, 10), detailed_tokens=False))) == []


@given(st.lists(st.integers(min_value=0, max_value=7), min_size=1, max_size=30))
def test_odd_sized_audio_frames_are_reassembled_into_whole_samples(sizes):
    session, _ = make()
    session.receive_text(json.dumps(START))
    session.events()
    payload = bytes(range(256)) * 2
    stream, out, offset = b"", b"", 0
    for size in sizes:
        piece = payload[offset : offset + size]
        offset += size
        stream += piece
        for event in fed(session, "receive_bytes", piece).events:
            assert len(event.pcm) % 2 == 0
            out += event.pcm
    assert out == stream[: len(stream) - len(stream) % 2]


def test_vocabulary_is_validated_and_additive():
    session, _ = make(max_vocabulary=3)
    session.receive_text(json.dumps(START))
    session.data_to_send()
    ok = {"message": "updateVocabulary", "phrases": [
        {"phrase": "IEEE", "category": "company", "soundsLike": ["i triple e"]},
        {"phrase": "717 N Shoreline Blvd", "category": "address"},
    ]}
    assert sent(fed(session, "receive_text", json.dumps(ok))) == [
        {"message": "vocabularyResponse", "status": {"code": "1000", "description": "OK"}}
    ]
    assert [p.phrase for p in session.vocabulary] == ["IEEE", "717 N Shoreline Blvd"]
    bad = {"message": "updateVocabulary", "phrases": [{"soundsLike": ["x"]}]}
    assert sent(fed(session, "receive_text", json.dumps(bad)))[0]["status"]["code"] == "4091"
    too_many = {"message": "updateVocabulary", "phrases": [{"phrase": "a"}, {"phrase": "b"}]}
    assert sent(fed(session, "receive_text", json.dumps(too_many)))[0]["status"]["code"] == "4084"
    assert len(session.vocabulary) == 2
    assert session.state is State.STREAMING


# -- the core's timers, on plain numbers ------------------------------------


def timed(idle=60.0, duration=100.0):
    now = [10.0]
    session, _ = make(clock_now=lambda: now[0], idle_timeout=idle, max_duration=duration)
    return session, now


def test_without_a_clock_there_is_no_timer():
    session, _ = make()
    session.receive_text(json.dumps(START))
    assert session.get_timer() is None


def test_the_idle_deadline_moves_with_every_message_and_the_duration_deadline_does_not():
    session, now = timed()
    assert session.get_timer() == 70.0
    now[0] = 40.0
    session.receive_text(json.dumps(START))
    assert session.get_timer() == 100.0
    now[0] = 80.0
    session.receive_bytes(b"\x00\x00")
    assert session.get_timer() == 110.0  # the duration limit, 100 s after the session began


def test_a_timer_handled_early_does_nothing():
    session, now = timed()
    session.receive_text(json.dumps(START))
    session.events(), session.data_to_send()
    out = fed(session, "handle_timer", 69.9)
    assert (out.events, out.frames) == ([], [])
    assert session.state is State.STREAMING


def test_when_both_limits_are_due_the_earlier_one_ends_the_stream():
    session, now = timed(idle=60.0, duration=50.0)
    session.receive_text(json.dumps(START))
    session.events()
    session.handle_timer(500.0)
    session.flushed(SUMMARY)
    assert status_codes(Output(session)) == [4090]


def test_no_timer_once_the_stream_is_flushing_or_gone():
    session, _ = timed()
    session.receive_text(json.dumps(START))
    session.receive_text('{"message": "finishStream"}')
    assert session.get_timer() is None
    session.handle_timer(1e9)
    assert [e for e in session.events() if isinstance(e, Terminated)] == []
    other, _ = timed()
    other.connection_lost()
    assert other.get_timer() is None


# -- any input, in any order ----------------------------------------------------

FRAMES = st.one_of(
    st.sampled_from([
        json.dumps(START), json.dumps({**START, "detailedToken": True}), '{"message": "finishStream"}',
        json.dumps({"message": "updateVocabulary", "phrases": [{"phrase": "IEEE"}]}),
        '{"message": "updateVocabulary"}', "{nope", "[]", "",
    ]),
    st.text(max_size=40),
).map(lambda text: ("receive_text", text))
INPUTS = st.one_of(
    FRAMES,
    st.binary(max_size=40).map(lambda data: ("receive_bytes", data)),
    st.floats(min_value=0, max_value=500, allow_nan=False).map(lambda step: ("tick", step)),
    st.just(("flushed", SUMMARY)),
    st.just(("transcript", event_of(Utterance("hi", 0, 10), detailed_tokens=False))),
    st.sampled_from([("shutting_down",), ("internal_error", "boom")]),
)


@given(st.lists(INPUTS, max_size=40))
def test_any_sequence_of_frames_and_timers_ends_with_at_most_one_final_response_last(inputs):
    session, now = timed(idle=60.0, duration=300.0)
    frames, terminated = [], []
    for name, *args in inputs:
        if name == "tick":
            now[0] += args[0]
            session.handle_timer(now[0])
        else:
            getattr(session, name)(*args)
        out = Output(session)
        frames += out.frames
        terminated += [e for e in out.events if isinstance(e, Terminated)]
        if session.state not in (State.AWAITING_START, State.STREAMING):
            assert session.get_timer() is None
    finals = [i for i, frame in enumerate(frames) if frame["message"] == "finalResponse"]
    assert len(finals) <= 1
    assert finals == [] or finals[0] == len(frames) - 1
    assert len(terminated) == len(finals)
    if finals:
        assert closes(Output(session)) == [] and session.get_timer() is None
