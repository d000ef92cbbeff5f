"""
The direct API's server-side endings (idle timeout, duration limit, shutdown,
a recogniser failure), driven by an injected clock over a real loopback socket.
"""

import json

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as websockets_connect

from mgateway.calls.registry import CallRegistry
from mgateway.calls.roles import sender_roles
from mgateway.ingress.direct.websocket import DirectStreamFactory
from mgateway.tokens import TokenSigner
from tests.support.audio import until
from tests.support.scripted_engine import ScriptedEngine
from tests.support.wsclient import connect, refusal

WATCHDOG_SECONDS = 30
START = {"message": "startStream", "sender": {"role": "agent", "externalId": "A1"}}


class Collect:
    def __init__(self):
        self.events = []

    def deliver(self, event):
        self.events.append(event)


def listening(clock, engine=None, **limits):
    tokens = TokenSigner(b"k" * 32, 300, clock)
    engine = engine or ScriptedEngine()
    registry = CallRegistry(engine, {"direct": [Collect()]}, clock, {"direct": sender_roles})
    factory = DirectStreamFactory(
        tokens=tokens, registry=registry, clock=clock,
        idle_timeout=limits.get("idle", 60), max_duration=limits.get("duration", 10800),
        max_message_bytes=65536,
    )
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    return factory, port, f"ws://127.0.0.1:{port.getHost().port}/?token={tokens.issue('direct', 'app')}"


async def open_session(clock, **limits):
    factory, port, url = listening(clock, **limits)
    opened, client_factory = connect(url)
    client = await opened
    client.send_json(START)
    assert (await client.next_message().addTimeout(WATCHDOG_SECONDS, reactor))["message"] == "startResponse"
    return factory, port, client, client_factory


@pytest_twisted.ensureDeferred
async def test_idle_connection_gets_4083_after_the_configured_time():
    clock = Clock()
    factory, port, client, client_factory = await open_session(clock, idle=60)
    client.send_audio(b"\x00\x00" * 160)
    clock.advance(59)
    assert not client_factory.closed.called
    clock.advance(1)
    final = await client.next_message().addTimeout(WATCHDOG_SECONDS, reactor)
    assert final["message"] == "finalResponse"
    assert final["status"]["code"] == "4083"
    assert (await client_factory.closed)[0] == 4083
    await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_stream_over_the_duration_limit_gets_4090():
    clock = Clock()
    factory, port, client, client_factory = await open_session(clock, idle=60, duration=120)
    transcribers = factory.engine.transcribers
    for sent in range(1, 5):
        client.send_audio(b"\x00\x00" * 160)
        await until(reactor, lambda: sum(len(t.fed) for t in transcribers) == 320 * sent)
        clock.advance(30)
    final = await client.next_message().addTimeout(WATCHDOG_SECONDS, reactor)
    assert final["status"]["code"] == "4090"
    assert (await client_factory.closed)[0] == 4090
    await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_shutdown_sends_5001_then_closes():
    clock = Clock()
    factory, port, client, client_factory = await open_session(clock)
    closed = factory.shut_down()
    # A watchdog, not a deadline: a reply that never comes fails the test instead of hanging the suite.
    final = await client.next_message().addTimeout(WATCHDOG_SECONDS, reactor)
    assert final["status"] == {"code": "5001", "description": "Service shutting down"}
    assert (await client_factory.closed)[0] == 1000
    await closed
    await port.stopListening()


def _stream_until_shut_down(url: str, started: Deferred) -> tuple[dict, int]:
    """A client of another WebSocket library: start, then read until the server closes."""
    with websockets_connect(url, close_timeout=WATCHDOG_SECONDS) as ws:
        ws.send(json.dumps(START))
        assert json.loads(ws.recv(timeout=WATCHDOG_SECONDS))["message"] == "startResponse"
        reactor.callFromThread(started.callback, None)
        final = json.loads(ws.recv(timeout=WATCHDOG_SECONDS))
        try:
            ws.recv(timeout=WATCHDOG_SECONDS)
        except ConnectionClosed as closed:
            return final, closed.rcvd.code
    raise AssertionError("the server sent more than the finalResponse")


@pytest_twisted.ensureDeferred
async def test_every_shutdown_delivers_the_final_response_to_another_client_library():
    factory, port, url = listening(Clock())
    try:
        for _ in range(200):
            started = Deferred()
            client = deferToThread(_stream_until_shut_down, url, started)
            await started.addTimeout(WATCHDOG_SECONDS, reactor)
            factory.shut_down()
            final, close_code = await client
            assert final["message"] == "finalResponse" and final["status"]["code"] == "5001"
            assert close_code == 1000
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_stream_opened_while_the_models_load_is_refused_with_503():
    _, port, url = listening(Clock(), engine=ScriptedEngine(loaded=False))
    try:
        opened, _ = connect(url)
        assert "[503]" in await refusal(opened)
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_recogniser_failure_ends_the_stream_with_5000_and_its_summary():
    clock = Clock()
    factory, port, client, client_factory = await open_session(clock)
    client.send_audio(b"\x00\x00" * 160)
    transcribers = factory.engine.transcribers
    await until(reactor, lambda: transcribers and len(transcribers[0].fed) == 320)
    transcribers[0].fail(RuntimeError("decoder crashed"))
    final = await client.next_message().addTimeout(WATCHDOG_SECONDS, reactor)
    assert final["message"] == "finalResponse"
    assert final["status"] == {"code": "5000",
                               "description": "Internal service error: speech recognition failed"}
    assert final["summary"]["totalAudioBytes"] == 320
    assert (await client_factory.closed)[0] == 1000
    assert factory.registry.find("direct", final["streamId"]) is None, "the stream's call is gone"
    await port.stopListening()
