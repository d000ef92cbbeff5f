"""
The contracts of the inner seams (ingress -> calls, calls -> asr): each check
runs on the real implementation and on the fake shipped in L{mgateway.testing},
so that the fakes other tests rely on cannot drift from what they stand for.
The store's contract is in C{tests/test_store.py}.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from mgateway.asr.models import ModelRegistry
from mgateway.asr.transcriber import StreamTranscriber
from mgateway.calls.errors import ApiError, LegBusy
from mgateway.calls.registry import CallRegistry
from mgateway.calls.requests import StopRequest, parse_start
from mgateway.calls.roles import media_line_roles
from mgateway.interfaces import ICallRegistry, IMediaFeed, ISpeechEngine, ITranscriber
from mgateway.media.noise import comfort_noise
from mgateway.speech import SpeechEngine
from mgateway.testing import RecordingCallRegistry, ScriptedSpeechEngine
from tests.support.audio import until
from tests.test_asr import KO_MODEL, serial_pool  # noqa: F401 -- serial_pool is a fixture
GUID = "call-1"
STOP = StopRequest("siprec", GUID)


def start_request():
    return parse_start({"namespace": "siprec", "guid": GUID, "customerId": "C1", "agentId": "A1"},
                       "en-US")


class Collect:
    def __init__(self):
        self.items = []

    def __call__(self, item=None):
        self.items.append(item)

    def deliver(self, event):
        self.items.append(event)


def run(coroutine):
    """Run registry work that completes at once with scripted parts; its result or its error."""
    results = []
    ensureDeferred(coroutine).addBoth(results.append)
    assert results, "did not complete synchronously"
    return results[0]


def code_of(coroutine) -> str:
    outcome = run(coroutine)
    assert outcome.check(ApiError), outcome
    return outcome.value.code


# -- ICallRegistry / IMediaFeed ----------------------------------------------


@pytest.fixture(params=["real", "fake"])
def registry(request):
    if request.param == "real":
        return CallRegistry(ScriptedSpeechEngine(), {"siprec": [Collect()]}, Clock(),
                            {"siprec": media_line_roles()})
    return RecordingCallRegistry(mappers={"siprec": media_line_roles()})


def test_the_registry_and_its_feeds_provide_their_interfaces(registry):
    verifyObject(ICallRegistry, registry)
    verifyObject(IMediaFeed, registry.attach("siprec", GUID, ["0", "1"]))


def test_a_leg_fed_now_is_busy_and_a_released_one_can_be_fed_again(registry):
    first = registry.attach("siprec", GUID, ["0", "1"])
    with pytest.raises(LegBusy) as busy:
        registry.attach("siprec", GUID, ["1"])
    assert (busy.value.namespace, busy.value.guid, busy.value.legs) == ("siprec", GUID, ("1",))
    assert isinstance(busy.value, ValueError), "the ingresses' existing handlers still catch it"
    first.release("1")
    verifyObject(IMediaFeed, registry.attach("siprec", GUID, ["1"]))


def test_start_and_stop_outcomes_follow_the_spec(registry):
    assert code_of(registry.start(start_request())) == "400-203"
    assert code_of(registry.stop(STOP)) == "400-203"
    registry.attach("siprec", GUID, ["0", "1"])
    assert code_of(registry.stop(STOP)) == "409-201"
    streams = run(registry.start(start_request()))
    assert set(streams) == {"customer", "agent"}
    assert all(stream.stream_id for stream in streams.values())
    assert code_of(registry.start(start_request())) == "409-201"
    stopped = run(registry.stop(STOP))
    assert {role: stream.stream_id for role, (stream, _) in stopped.items()} == {
        role: stream.stream_id for role, stream in streams.items()}


def test_a_stop_is_told_to_the_feeds_that_asked(registry):
    told = Collect()
    registry.attach("siprec", GUID, ["0"], on_stop=told)
    registry.attach("siprec", GUID, ["1"])
    run(registry.start(start_request()))
    run(registry.stop(STOP))
    assert told.items == [None]


def test_the_summary_counts_the_audio_fed_while_started(registry):
    media = registry.attach("siprec", GUID, ["0", "1"])
    media.audio("0", b"\x00\x00" * 80)  # before the start: not counted
    run(registry.start(start_request()))
    media.audio("0", b"\x00\x00" * 160)
    stopped = run(registry.stop(STOP))
    customer, agent = stopped["customer"][1], stopped["agent"][1]
    assert (customer.total_audio_bytes, customer.audio_duration_ms) == (320, 20)
    assert agent.total_audio_bytes == 0


def test_a_call_ends_with_its_last_feed(registry):
    first = registry.attach("siprec", GUID, ["0"])
    second = registry.attach("siprec", GUID, ["1"])
    run(registry.start(start_request()))
    run(first.hang_up())
    assert code_of(registry.start(start_request())) == "409-201", "still there: one feed left"
    run(second.hang_up())
    assert code_of(registry.start(start_request())) == "400-203"


def test_shut_down_ends_every_call(registry):
    registry.attach("siprec", GUID, ["0", "1"])
    run(registry.start(start_request()))
    run(registry.shut_down())
    assert code_of(registry.stop(STOP)) == "400-203"


def test_a_recognisers_failure_reaches_the_feeds_that_asked():
    engine = ScriptedSpeechEngine()
    registry = CallRegistry(engine, {"siprec": []}, Clock(), {"siprec": media_line_roles()})
    failures = Collect()
    media = registry.attach("siprec", GUID, ["0", "1"], on_failure=failures)
    run(registry.start(start_request()))
    media.audio("0", b"\x00\x00" * 160)
    engine.transcribers[0].fail(RuntimeError("decoder crashed"))
    (failure,) = failures.items
    assert failure.check(RuntimeError)


# -- ISpeechEngine / ITranscriber ------------------------------------------


@pytest_twisted.async_fixture(scope="module")
async def vosk_engine(serial_pool, tmp_path_factory):
    models = ModelRegistry([("ko-KR", KO_MODEL, True)], tmp_path_factory.mktemp("overlays"),
                           500, 20_000, serial_pool, reactor)
    await models.load()
    return SpeechEngine(models, serial_pool, reactor)


@pytest.fixture(params=["real", "fake"])
def engine(request):
    if request.param == "real":
        return request.getfixturevalue("vosk_engine")
    return ScriptedSpeechEngine(languages=("ko-KR",))


@pytest_twisted.ensureDeferred
async def test_the_engine_provides_its_interface_and_knows_its_languages(engine):
    verifyObject(ISpeechEngine, engine)
    await engine.ready()
    assert engine.loaded
    assert engine.canonical("ko-kr") == engine.canonical("KO-KR") == "ko-KR"
    assert engine.canonical("xx-XX") is None


@pytest_twisted.ensureDeferred
async def test_a_transcriber_takes_audio_and_its_finish_fires(engine):
    utterances, failures = Collect(), Collect()
    transcriber = engine.transcriber("ko-KR", utterances, offset_ms=1000, on_failure=failures)
    verifyObject(ITranscriber, transcriber)
    transcriber.feed(comfort_noise(8000))
    assert await transcriber.finish() is None
    assert failures.items == []
    assert all(u.start_ms >= 1000 for u in utterances.items), "times are shifted by the offset"


@pytest_twisted.ensureDeferred
async def test_a_transcriber_given_no_audio_finishes_at_once(engine):
    transcriber = engine.transcriber("ko-KR", Collect())
    assert await transcriber.finish() is None


class Broken:
    """A recogniser whose decoder crashes."""

    def accept(self, pcm):
        raise RuntimeError("decoder crashed")

    def finish(self):
        return []


@pytest_twisted.ensureDeferred
async def test_a_failing_recogniser_signals_its_failure_once_and_finish_still_fires(serial_pool):
    failures = Collect()
    transcriber = StreamTranscriber(Broken, serial_pool, reactor, Collect(), on_failure=failures)
    transcriber.feed(b"\x00\x00" * 160)
    await until(reactor, lambda: failures.items)
    transcriber.feed(b"\x00\x00" * 160)
    await transcriber.finish()
    (failure,) = failures.items
    assert failure.check(RuntimeError)


def test_the_fake_transcriber_signals_its_failure_and_drops_later_audio():
    failures = Collect()
    transcriber = ScriptedSpeechEngine().transcriber("en-US", Collect(), on_failure=failures)
    transcriber.fail(RuntimeError("decoder crashed"))
    transcriber.feed(b"\x00\x00")
    assert failures.items[0].check(RuntimeError)
    assert transcriber.fed == b""
