"""The direct WebSocket API's session state machine, driven without sockets."""

import json
from datetime import datetime, timezone

import pytest
from hypothesis import given, strategies as st

from mgateway.calls.stream import StreamSummary
from mgateway.ingress.direct.session import (
    Audio,
    Close,
    DirectSession,
    Flush,
    Send,
    Started,
    State,
)
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


def sent(events):
    return [e.message for e in events if isinstance(e, Send)]


def closes(events):
    return [e.code for e in events if isinstance(e, Close)]


def test_start_without_a_language_takes_the_configured_default():
    session, _ = make(default_language="es-US")
    events = session.receive_text(json.dumps(START))
    assert [e.transcribe.language for e in events if isinstance(e, Started)] == ["es-US"]


def test_start_applies_spec_defaults_and_answers_start_response():
    session, _ = make()
    events = session.receive_text(json.dumps(START))
    started = [e for e in events if isinstance(e, Started)][0]
    assert started.sender == Sender("customer", "JD232442")
    assert started.transcribe.language == "en-US"
    assert started.transcribe.smart_formatting is True
    assert started.transcribe.detailed_token is False
    assert started.transcribe.redaction_output == "redacted"
    assert sent(events) == [{
        "message": "startResponse",
        "streamID": "stream-1",
        "status": {"code": "1000", "description": "OK"},
    }]


def test_whole_sequence_sends_transcripts_and_the_calls_summary_in_the_final_response():
    session, _ = make()
    session.receive_text(json.dumps({**START, "language": "es-us", "detailedToken": True,
                                     "redactionOutput": "unredacted"}))
    assert session.transcribe.language == "es-US"
    audio = session.receive_bytes(b"\x01\x00" * 800)
    assert audio == [Audio(b"\x01\x00" * 800)]
    utterance = Utterance("hola", 100, 900, (Word("hola", 100, 900, 0.9),))
    (transcript,) = sent(session.transcript(event_of(utterance, detailed_tokens=True)))
    assert transcript == {
        "message": "transcript", "start": 100, "end": 900,
        "utterance": [{"text": "hola", "tokens": [{"content": "hola", "start": 100, "end": 900}]}],
    }
    assert session.receive_text('{"message": "finishStream"}') == [Flush()]
    assert session.receive_bytes(b"\x00\x00" * 10) == []  # dropped after finishStream
    events = session.flushed(SUMMARY)
    assert sent(events) == [{
        "message": "finalResponse",
        "streamId": "stream-1",
        "status": {"code": "1000", "description": "OK"},
        "summary": {"totalAudioBytes": 1600, "audioDurationMs": 100,
                    "streamingSeconds": 3, "transcripts": 1},
    }]
    assert closes(events) == [1000]
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
    events = session.receive_text(json.dumps(message))
    (final,) = sent(events)
    assert final["message"] == "finalResponse"
    assert final["status"]["code"] == str(code)
    assert closes(events) == [code]


def test_not_json_is_4040():
    session, _ = make()
    assert closes(session.receive_text("{nope")) == [4040]


def test_json_nested_too_deeply_is_4040_not_a_crash():
    session, _ = make()
    deep = "[" * 20_000 + "]" * 20_000
    assert closes(session.receive_text(deep)) == [4040]


def test_audio_before_start_is_wrong_order():
    session, _ = make()
    assert closes(session.receive_bytes(b"\x00\x00")) == [4056]


def test_second_start_stream_flushes_then_reports_4056():
    session, _ = make()
    session.receive_text(json.dumps(START))
    assert session.receive_text(json.dumps(START)) == [Flush()]
    (final,) = sent(session.flushed(SUMMARY))
    assert final["status"]["code"] == "4056"


def test_text_after_finish_stream_is_dropped_and_final_reports_4056():
    session, _ = make()
    session.receive_text(json.dumps(START))
    session.receive_text('{"message": "finishStream"}')
    assert session.receive_text(json.dumps({"message": "updateVocabulary"})) == []
    events = session.flushed(SUMMARY)
    assert sent(events)[0]["status"]["code"] == "4056"
    assert closes(events) == [4056]


def test_oversized_audio_message_is_rejected_with_4040():
    session, _ = make(max_message_bytes=3200)
    session.receive_text(json.dumps(START))
    assert session.receive_bytes(b"\x00" * 3202) == [Flush()]
    assert sent(session.flushed(SUMMARY))[0]["status"]["code"] == "4040"


@pytest.mark.parametrize("trigger, code", [("idle_timeout", 4083), ("duration_exceeded", 4090),
                                           ("shutting_down", 5001)])
def test_server_side_endings_flush_then_report_their_code(trigger, code):
    session, _ = make()
    session.receive_text(json.dumps(START))
    assert getattr(session, trigger)() == [Flush()]
    events = session.flushed(SUMMARY)
    assert sent(events)[0]["status"]["code"] == str(code)
    assert closes(events) == [code]


def test_idle_timeout_before_start_closes_at_once_with_an_empty_summary():
    session, _ = make()
    events = session.idle_timeout()
    assert closes(events) == [4083]
    assert sent(events)[0]["summary"] == {"totalAudioBytes": 0, "audioDurationMs": 0,
                                          "streamingSeconds": 0, "transcripts": 0}


def test_internal_error_flushes_then_reports_5000_and_closes_normally():
    session, _ = make()
    session.receive_text(json.dumps(START))
    assert session.internal_error("recogniser failed") == [Flush()]
    events = session.flushed(SUMMARY)
    assert sent(events)[0]["status"] == {"code": "5000",
                                         "description": "Internal service error: recogniser failed"}
    assert closes(events) == [5000]


def test_transcripts_after_the_final_response_are_not_sent():
    session, _ = make()
    session.receive_text(json.dumps(START))
    session.receive_text('{"message": "finishStream"}')
    session.flushed(SUMMARY)
    assert session.transcript(event_of(Utterance("late", 0, 10), detailed_tokens=False)) == []


@given(st.lists(st.integers(min_value=0, max_value=7), min_size=1, max_size=30))
def test_odd_sized_audio_frames_are_reassembled_into_whole_samples(sizes):
    session, _ = make()
    session.receive_text(json.dumps(START))
    payload = bytes(range(256)) * 2
    stream, out, offset = b"", b"", 0
    for size in sizes:
        piece = payload[offset : offset + size]
        offset += size
        stream += piece
        for event in session.receive_bytes(piece):
            assert len(event.pcm) % 2 == 0
            out += event.pcm
    assert out == stream[: len(stream) - len(stream) % 2]


def test_vocabulary_is_validated_and_additive():
    session, _ = make(max_vocabulary=3)
    session.receive_text(json.dumps(START))
    ok = {"message": "updateVocabulary", "phrases": [
        {"phrase": "IEEE", "category": "company", "soundsLike": ["i triple e"]},
        {"phrase": "717 N Shoreline Blvd", "category": "address"},
    ]}
    assert sent(session.receive_text(json.dumps(ok))) == [
        {"message": "vocabularyResponse", "status": {"code": "1000", "description": "OK"}}
    ]
    assert [p.phrase for p in session.vocabulary] == ["IEEE", "717 N Shoreline Blvd"]
    bad = {"message": "updateVocabulary", "phrases": [{"soundsLike": ["x"]}]}
    assert sent(session.receive_text(json.dumps(bad)))[0]["status"]["code"] == "4091"
    too_many = {"message": "updateVocabulary", "phrases": [{"phrase": "a"}, {"phrase": "b"}]}
    assert sent(session.receive_text(json.dumps(too_many)))[0]["status"]["code"] == "4084"
    assert len(session.vocabulary) == 2
    assert session.state is State.STREAMING
