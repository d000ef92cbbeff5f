"""
The call registry's per-namespace media source: start-streaming opens the
call through it (nothing pushes the media), and the Amazon Connect source
provides the interface.
"""

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from zope.interface import implementer
from zope.interface.verify import verifyObject

from mgateway.calls.errors import ApiError, bad_parameter
from mgateway.calls.registry import CallRegistry, CallState
from mgateway.calls.requests import parse_start, parse_stop
from mgateway.interfaces import IMediaSource
from mgateway.ingress.kvs.client import KvsClient
from mgateway.ingress.kvs.source import AmazonConnectSource, PullSettings
from tests.support.kvs_endpoint import stream_arn
from tests.support.scripted_engine import ScriptedEngine


@implementer(IMediaSource)
class RecordingSource:
    """Attaches one leg on prepare, records what the registry asked."""

    def __init__(self, refuse=None):
        self.calls = []
        self.refuse = refuse

    async def prepare(self, registry, request):
        self.calls.append("prepare")
        if self.refuse:
            raise self.refuse
        if registry.find(request.namespace, request.guid) is None:
            registry.attach(request.namespace, request.guid, ["leg"],
                            on_stop=lambda: self.calls.append("stopped"))

    def begin(self, call, request):
        self.calls.append(("begin", call.state))

    def abandon(self, request):
        self.calls.append("abandon")


def registry_with(source):
    engine = ScriptedEngine()
    return CallRegistry(engine, {"amazonconnect": []}, Clock(), mappers={"amazonconnect": lambda r, legs: {"leg": "customer"}},
                        media_sources={"amazonconnect": source})


def start(language="en-US"):
    return parse_start({"namespace": "amazonconnect", "guid": "g", "customerId": "c", "agentId": "a",
                        "autotranscribeParams": {"language": language}}, "en-US")


def test_the_interfaces_are_provided():
    assert verifyObject(IMediaSource, RecordingSource())
    assert verifyObject(IMediaSource, AmazonConnectSource(KvsClient(Clock(), lambda app: None), Clock()))


@pytest_twisted.ensureDeferred
async def test_start_creates_the_call_through_the_source_then_begins_it():
    source = RecordingSource()
    registry = registry_with(source)
    streams = await registry.start(start())
    assert set(streams) == {"customer", "agent"}
    assert source.calls == ["prepare", ("begin", CallState.STARTED)]
    await registry.stop(parse_stop({"namespace": "amazonconnect", "guid": "g"}))
    assert source.calls[-1] == "stopped"


@pytest_twisted.ensureDeferred
async def test_a_refused_prepare_is_the_answer_and_a_failed_start_is_abandoned():
    with pytest.raises(ApiError) as error:
        await registry_with(RecordingSource(refuse=bad_parameter("bad arn"))).start(start())
    assert error.value.code == "400-201"
    source = RecordingSource()
    with pytest.raises(ApiError) as error:
        await registry_with(source).start(start(language="xx-XX"))
    assert error.value.code == "400-202" and source.calls == ["prepare", "abandon"]


class StreamThatNeverAnswers:
    """A KVS client whose GetMedia never gets its headers (cancellable, as treq's are)."""

    def __init__(self):
        self.requests = []

    async def data_endpoint(self, app_id, arn):
        return "http://127.0.0.1:1"

    async def get_media(self, app_id, arn, selector, on_data):
        self.requests.append(Deferred())
        return await self.requests[-1]


def connect_start(guid="g"):
    return parse_start({"namespace": "amazonconnect", "guid": guid, "customerId": "c", "agentId": "a",
                        "amazonConnectParams": {"streamArn": stream_arn("s")}}, "en-US")


@pytest_twisted.ensureDeferred
async def test_stop_cancels_a_pending_request_and_a_stopped_call_expires():
    clock = Clock()
    client = StreamThatNeverAnswers()
    source = AmazonConnectSource(client, clock, PullSettings(stopped_call_seconds=60))
    registry = CallRegistry(ScriptedEngine(), {"amazonconnect": []}, clock, mappers={"amazonconnect": source.roles},
                            media_sources={"amazonconnect": source})
    await registry.start(connect_start())
    assert len(client.requests) == 1
    await registry.stop(parse_stop({"namespace": "amazonconnect", "guid": "g"}))
    assert client.requests[0].called, "the pending GetMedia was cancelled"
    await source.pull("g").stop()  # the loop is over
    clock.advance(59)
    assert registry.find("amazonconnect", "g") is not None
    await registry.start(connect_start())  # started again: no expiry while it runs
    clock.advance(120)
    assert registry.find("amazonconnect", "g").state is CallState.STARTED
    await registry.stop(parse_stop({"namespace": "amazonconnect", "guid": "g"}))
    clock.advance(60)
    assert registry.find("amazonconnect", "g") is None and source.pull("g") is None


@pytest_twisted.ensureDeferred
async def test_a_second_start_while_the_stream_is_reached_is_409_202():
    clock = Clock()

    class SlowEndpoint(StreamThatNeverAnswers):
        def __init__(self):
            super().__init__()
            self.answer = Deferred()

        async def data_endpoint(self, app_id, arn):
            return await self.answer

    client = SlowEndpoint()
    source = AmazonConnectSource(client, clock)
    registry = CallRegistry(ScriptedEngine(), {"amazonconnect": []}, clock, mappers={"amazonconnect": source.roles},
                            media_sources={"amazonconnect": source})
    first = Deferred.fromCoroutine(registry.start(connect_start()))
    with pytest.raises(ApiError) as error:
        await registry.start(connect_start())
    assert error.value.code == "409-202"
    client.answer.callback("http://127.0.0.1:1")
    assert set(await first) == {"customer", "agent"}
    await source.shut_down()
