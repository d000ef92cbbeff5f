"""
A stream that is its own call (the direct API's): started as one leg of the
call registry, stopped and let go at its end, with its summary; on the real
registry and a scripted speech engine.
"""

from twisted.internet.task import Clock

from mgateway.calls.namespaces import DIRECT
from mgateway.calls.oneleg import NOTHING_RECEIVED, OneLegCall
from mgateway.calls.registry import CallRegistry
from mgateway.calls.requests import TranscribeParams
from mgateway.calls.roles import sender_roles
from mgateway.testing import ScriptedSpeechEngine
from mgateway.transcript import Utterance

PCM = b"\x01\x00" * 160


class Socket:
    """The stream's own sink."""

    def __init__(self):
        self.events = []

    def deliver(self, event):
        self.events.append(event)


def one_leg_call(engine=None, guid="stream-1"):
    registry = CallRegistry(engine or ScriptedSpeechEngine(), {DIRECT: []}, Clock(), {DIRECT: sender_roles})
    socket = Socket()
    return registry, socket, OneLegCall(registry, DIRECT, guid, "conversation-1", socket)


def test_a_started_stream_is_transcribed_into_its_own_sink_and_summarised_at_its_finish():
    registry, socket, call = one_leg_call()
    failures = []
    started = call.start("agent", "A1", TranscribeParams("en-US"), on_failure=failures.append)
    assert started.called
    call.media.audio("agent", PCM)
    (transcriber,) = registry.engine.transcribers
    transcriber.say(Utterance("hello", 0, 20))
    (event,) = socket.events
    assert (event.conversation_id, event.stream_id, event.sender.external_id) == ("conversation-1", "stream-1", "A1")
    finished = call.finish()
    assert finished.result.total_audio_bytes == len(PCM)
    assert registry.find(DIRECT, "stream-1") is None, "let go once flushed"
    assert call.media is None and call.finish().result == NOTHING_RECEIVED, "nothing left to finish"
    assert failures == []


def test_a_stream_that_never_started_finishes_with_nothing_received():
    registry, _, call = one_leg_call()
    assert call.finish().result == NOTHING_RECEIVED
    assert len(registry) == 0


def test_a_start_that_fails_fails_its_deferred_and_still_finishes():
    registry, _, call = one_leg_call(ScriptedSpeechEngine(languages=("ko-KR",)))
    started = call.start("customer", "C1", TranscribeParams("en-US"), on_failure=lambda f: None)
    failures = []
    started.addErrback(failures.append)
    assert len(failures) == 1, "an unsupported language is a failed start"
    assert call.finish().result == NOTHING_RECEIVED, "a stop of a call never started has no summary"
    assert registry.find(DIRECT, "stream-1") is None


def test_a_recogniser_failure_reaches_the_holder():
    registry, _, call = one_leg_call()
    failures = []
    call.start("customer", "C1", TranscribeParams("en-US"), on_failure=failures.append)
    call.media.audio("customer", PCM)
    registry.engine.transcribers[0].fail(RuntimeError("decoder crashed"))
    assert [f.value.args for f in failures] == [("decoder crashed",)]
