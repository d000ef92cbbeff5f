"""
Genesys Cloud AudioHook Monitor end to end: a client speaking Genesys's
messages byte for byte, with signed upgrades, over real loopback WebSockets;
REST start/stop by conversationId; transcripts on the HTTPS webhook.
"""

import base64
import json
import os
import uuid

import attrs
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import Clock
from twisted.logger import capturedLogs

from mgateway.calls.registry import CallRegistry
from mgateway.calls.requests import StopRequest, parse_start
from mgateway.calls.roles import channel_roles
from mgateway.ingress.audiohook.messages import NS_PER_SECOND, NULL_UUID
from mgateway.ingress.audiohook.upgrade import AUTH_FAILURE_SECONDS
from mgateway.ingress.audiohook.websocket import NAMESPACE, AudioHookFactory
from mgateway.ingress.audiohook.session import MAX_GAP_MS, SessionPolicy
from mgateway.media.noise import comfort_noise
from tests.support.audio import pace, read_pcm, until
from tests.support.audiohook_client import (
    API_KEY,
    CLIENT_SECRET,
    DOCUMENTED_OFFERS,
    EXTERNAL,
    INTERNAL,
    STEREO,
    AudioHookClient,
)
from tests.support.gateway import start_gateway
from tests.support.scripted_engine import ScriptedEngine
from tests.support.wsclient import connect, refusal

PATH = "/mg-genesysaudiohook-autotranscribe/"
OTHER_SECRET = base64.b64encode(b"not the configured client secret").decode()
REPLY_WATCHDOG_SECONDS = 30
CLOSE_GRACE = SessionPolicy().close_grace_seconds
CLOSE_FLUSH_SECONDS = SessionPolicy().close_flush_seconds
START = "/mg-autotranscribe/v1/start-streaming"
STOP = "/mg-autotranscribe/v1/stop-streaming"


def nonce() -> str:
    """A fresh 24-character nonce, as Genesys sends."""
    return base64.b64encode(os.urandom(18)).decode()


def genesys(port: int, **kwargs) -> AudioHookClient:
    """A client for a new session and conversation, signing for this gateway's Host."""
    ids = {name: str(uuid.uuid4()) for name in ("session_id", "conversation_id", "correlation_id")}
    return AudioHookClient(**{"authority": f"127.0.0.1:{port}", "path": PATH, **ids, **kwargs})


@attrs.frozen
class SocketClosed:
    code_and_reason: tuple


class Session:
    """A Genesys client over a real WebSocket: what it says is sent, what it hears is checked."""

    def __init__(self, client: AudioHookClient, protocol, factory):
        self.client = client
        self.protocol = protocol
        self.factory = factory
        factory.closed.addCallback(self._gone)

    def _gone(self, code_and_reason):
        """A socket that closes while a reply is awaited fails the wait instead of hanging it."""
        self.factory.received.put(SocketClosed(code_and_reason))
        return code_and_reason

    def send(self, text: str) -> None:
        self.protocol.send_text(text)

    async def reply(self) -> dict:
        # A watchdog, not a deadline: a reply that never comes fails the test instead of hanging it.
        message = await self.protocol.next_message().addTimeout(REPLY_WATCHDOG_SECONDS, reactor)
        if isinstance(message, SocketClosed):
            raise AssertionError(f"the socket closed before a reply: {message.code_and_reason}")
        return self.client.receive(json.dumps(message, separators=(",", ":"), ensure_ascii=False))

    async def open(self, offers=DOCUMENTED_OFFERS) -> dict:
        self.send(self.client.open(offers))
        opened = await self.reply()
        assert opened["type"] == "opened", opened
        return opened

    async def close(self, reason: str = "end") -> dict:
        """The close transaction; then, as Genesys does, the client closes the socket."""
        self.send(self.client.close(reason))
        closed = await self.reply()
        assert closed["type"] == "closed", closed
        self.protocol.sendClose(code=1000)
        await self.factory.closed
        return closed


def upgrade(client: AudioHookClient, port: int, headers: dict | None = None):
    headers = headers if headers is not None else client.upgrade_headers(int(reactor.seconds()), nonce())
    return connect(f"ws://127.0.0.1:{port}{PATH}", headers)


async def open_session(port: int, client: AudioHookClient | None = None) -> Session:
    client = client or genesys(port)
    opened, factory = upgrade(client, port)
    return Session(client, await opened, factory)


async def call(gateway, path, body):
    response = await gateway.post(path, body)
    return response.code, await response.json()


def start_body(conversation_id: str) -> dict:
    return {"namespace": NAMESPACE, "guid": conversation_id, "customerId": "TT9833237",
            "agentId": "RE223444211993", "autotranscribeParams": {"language": "ko-KR"}}


def padded(pcm: bytes, length: int) -> bytes:
    return pcm + comfort_noise((length - len(pcm)) // 2, start=len(pcm) // 2)


def noise(seconds: float) -> bytes:
    return comfort_noise(int(seconds * 8000))


# -- a call -----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_stereo_call_is_transcribed_per_participant_then_ends_with_the_session(gateway, webhook):
    session = await open_session(gateway.port)
    client = session.client
    opened = await session.open()
    assert opened["parameters"] == {"media": [STEREO], "startPaused": False, "supportedLanguages": ["ko-KR"]}
    session.send(client.ping())
    assert (await session.reply())["type"] == "pong"

    code, started = await call(gateway, START, start_body(client.conversation_id))
    assert code == 200, started
    ids = {role: started["autotranscribeResponse"][role]["streamId"] for role in ("customer", "agent")}

    customer, agent = read_pcm("customer.wav"), read_pcm("agent.wav")
    length = max(len(customer), len(agent))
    customer, agent = padded(customer, length), padded(agent, length)
    await pace(reactor, client.pcmu_frames({"external": customer, "internal": agent}), session.protocol.send_audio)
    session.send(client.ping(rtt_ns=2_470_497))
    assert (await session.reply())["type"] == "pong", "pings are answered while audio flows"

    legs = gateway.service.registry.find(NAMESPACE, client.conversation_id).legs
    await until(reactor, lambda: legs["external"].position_bytes == legs["internal"].position_bytes == length)
    code, stopped = await call(gateway, STOP, {"namespace": NAMESPACE, "guid": client.conversation_id})
    assert code == 200, stopped
    summaries = {role: stopped["autotranscribeResponse"][role]["summary"] for role in ids}
    assert summaries["customer"]["totalAudioBytes"] == summaries["agent"]["totalAudioBytes"] == length
    assert summaries["customer"]["transcripts"] >= 1 and summaries["agent"]["transcripts"] >= 1, summaries

    await session.close()
    await until(reactor, lambda: gateway.service.registry.find(NAMESPACE, client.conversation_id) is None)
    code, body = await call(gateway, START, start_body(client.conversation_id))
    assert (code, body["error"]["code"]) == (400, "400-203"), "the call ended with the session"

    expected = summaries["customer"]["transcripts"] + summaries["agent"]["transcripts"]
    posts = await webhook.posts_of_call(client.conversation_id, expected, ids,
                                        {"customer": "TT9833237", "agent": "RE223444211993"})
    assert {post.body["sender"]["role"] for post in posts} == {"customer", "agent"}
    for post in posts:
        assert 0 <= post.body["autotranscribeResponse"]["start"] < post.body["autotranscribeResponse"]["end"]
        assert post.body["autotranscribeResponse"]["end"] <= length // 16
    latest = {role: max(post.body["autotranscribeResponse"]["end"] for post in posts
                        if post.body["sender"]["role"] == role) for role in ids}
    # customer.wav's last sentence ends about a second after agent.wav's: the
    # external channel went to the customer, the internal one to the agent.
    assert latest["customer"] - latest["agent"] >= 500, latest


@pytest_twisted.ensureDeferred
async def test_paused_and_discarded_audio_keeps_later_utterances_at_their_call_time(gateway, webhook):
    session = await open_session(gateway.port)
    client = session.client
    await session.open([EXTERNAL])
    code, started = await call(gateway, START, start_body(client.conversation_id))
    assert code == 200, started

    speech = read_pcm("single.wav")
    send = session.protocol.send_audio
    await pace(reactor, client.pcmu_frames({"external": noise(1)}), send)
    session.send(client.paused())
    session.send(client.resumed(discarded_ns=2 * NS_PER_SECOND))
    await pace(reactor, client.pcmu_frames({"external": speech}), send)
    session.send(client.discarded(NS_PER_SECOND // 2))
    await pace(reactor, client.pcmu_frames({"external": noise(0.5)}), send)

    # Every sample the client counted is on the call's timeline, gaps included.
    timeline_bytes = client.position_ns * 8000 // NS_PER_SECOND * 2
    assert timeline_bytes == (1 + 2 + 0.5 + 0.5) * 16000 + len(speech)
    leg = gateway.service.registry.find(NAMESPACE, client.conversation_id).legs["external"]
    await until(reactor, lambda: leg.position_bytes == timeline_bytes)
    code, stopped = await call(gateway, STOP, {"namespace": NAMESPACE, "guid": client.conversation_id})
    summary = stopped["autotranscribeResponse"]["customer"]["summary"]
    # The summary counts what was received; the gaps are reported apart.
    assert summary["totalAudioBytes"] == timeline_bytes - (2 + 0.5) * 16000
    assert summary["filledAudioMs"] == 2500
    transcripts = summary["transcripts"]
    assert transcripts >= 1
    await session.close()

    mine = lambda received: [r for r in received if r.body["externalConversationId"] == client.conversation_id]
    posts = await webhook.wait_until(lambda received: len(mine(received)) >= transcripts)
    speech_from, speech_to = 3000, 3000 + len(speech) // 16
    for post in mine(posts):
        times = post.body["autotranscribeResponse"]
        assert speech_from <= times["start"] < times["end"] <= speech_to, (times, speech_from, speech_to)


@pytest_twisted.ensureDeferred
async def test_a_gap_longer_than_a_minute_is_filled_only_that_far(gateway):
    session = await open_session(gateway.port)
    client = session.client
    await session.open([EXTERNAL])
    session.send(client.discarded(600 * NS_PER_SECOND))
    await pace(reactor, client.pcmu_frames({"external": noise(0.1)}), session.protocol.send_audio)
    leg = gateway.service.registry.find(NAMESPACE, client.conversation_id).legs["external"]
    await until(reactor, lambda: leg.position_bytes == (MAX_GAP_MS * 8 + 800) * 2)
    await session.close()


@pytest_twisted.ensureDeferred
async def test_a_second_session_for_the_same_conversation_is_refused_at_open_saying_why(gateway):
    first = await open_session(gateway.port)
    await first.open()
    second = await open_session(gateway.port, genesys(gateway.port, conversation_id=first.client.conversation_id))
    with capturedLogs() as events:
        second.send(second.client.open())
        disconnect = await second.reply()
    assert disconnect["type"] == "disconnect", "answered instead of opened, not after it"
    assert (disconnect["seq"], disconnect["clientseq"]) == (1, 1)
    assert disconnect["parameters"] == {"reason": "error", "info": (
        f"Conversation {first.client.conversation_id} is already streamed by AudioHook session "
        f"{first.client.session_id}; a conversation is transcribed from one session at a time")}
    assert any(e.get("session_id") == second.client.session_id and "refused" in e["log_format"] for e in events)
    await second.close("disconnect")
    first.send(first.client.ping())
    assert (await first.reply())["type"] == "pong"
    assert gateway.service.registry.find(NAMESPACE, first.client.conversation_id) is not None
    await first.close()


@pytest_twisted.ensureDeferred
async def test_an_internal_only_offer_is_opened_and_feeds_the_agent(gateway):
    """The compliance suite's single-channel internal test: the reference server opens it."""
    session = await open_session(gateway.port)
    opened = await session.open([INTERNAL])
    assert opened["parameters"]["media"] == [INTERNAL]
    await pace(reactor, session.client.pcmu_frames({"internal": noise(0.5)}), session.protocol.send_audio)
    legs = gateway.service.registry.find(NAMESPACE, session.client.conversation_id).legs
    await until(reactor, lambda: legs["internal"].position_bytes == 8000)
    assert set(legs) == {"internal"}
    await session.close()


@pytest_twisted.ensureDeferred
async def test_connection_probe_is_opened_and_closed_without_a_call(gateway):
    client = AudioHookClient.probe(session_id=str(uuid.uuid4()), authority=f"127.0.0.1:{gateway.port}",
                                   path=PATH)
    session = await open_session(gateway.port, client)
    await session.open()
    assert gateway.service.registry.find(NAMESPACE, NULL_UUID) is None
    await session.close()


@pytest_twisted.ensureDeferred
async def test_the_path_is_served_without_its_trailing_slash_too(gateway):
    client = genesys(gateway.port, path=PATH.rstrip("/"))
    opened, factory = connect(f"ws://127.0.0.1:{gateway.port}{PATH.rstrip('/')}",
                              client.upgrade_headers(int(reactor.seconds()), nonce()))
    session = Session(client, await opened, factory)
    await session.open()
    await session.close()


# -- authentication ------------------------------------------------------------------


def without(headers: dict, name: str) -> dict:
    return {k: v for k, v in headers.items() if k != name}


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("make_client, make_headers", [
    pytest.param(lambda port: genesys(port, api_key="dW5rbm93bi1rZXk="), None, id="unknown key"),
    pytest.param(lambda port: genesys(port, client_secret=OTHER_SECRET), None, id="bad signature"),
    pytest.param(lambda port: genesys(port, authority="audiohook.example.com"), None,
                 id="signed for another host"),
    pytest.param(genesys, lambda h: without(h, "Audiohook-Session-Id"), id="missing session id"),
    pytest.param(genesys, lambda h: without(without(h, "Signature"), "Signature-Input"), id="unsigned"),
])
async def test_unauthenticated_upgrades_are_refused_with_401_under_reject(gateway, make_client, make_headers):
    client = make_client(gateway.port)
    headers = client.upgrade_headers(int(reactor.seconds()), nonce())
    opened, _ = upgrade(client, gateway.port, (make_headers or dict)(headers))
    assert "[401]" in await refusal(opened)


@pytest_twisted.ensureDeferred
async def test_a_replayed_upgrade_is_refused(gateway):
    client = genesys(gateway.port)
    headers = client.upgrade_headers(int(reactor.seconds()), nonce())
    first, factory = upgrade(client, gateway.port, headers)
    session = Session(client, await first, factory)
    replayed, _ = upgrade(genesys(gateway.port), gateway.port, headers)
    assert "[401]" in await refusal(replayed)
    await session.open()
    await session.close()


async def listening(factory):
    """The factory alone on a loopback port, as the gateway would mount it."""
    port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(factory)
    return port, port.getHost().port


def factory_at_now(**kwargs) -> tuple[AudioHookFactory, Clock]:
    clock = Clock()
    clock.advance(reactor.seconds())
    registry = CallRegistry(engine=None, sinks={NAMESPACE: []}, clock=clock, mappers={NAMESPACE: channel_roles})
    return AudioHookFactory(registry=registry, clock=clock, **kwargs), clock


async def held_for_the_failure_delay(clock: Clock) -> None:
    """The refused upgrade is held, and answered once L{AUTH_FAILURE_SECONDS} have passed."""
    await until(reactor, lambda: clock.getDelayedCalls())
    (held,) = clock.getDelayedCalls()
    clock.advance(AUTH_FAILURE_SECONDS * 0.9)
    assert not held.called, "answered early"
    clock.advance(AUTH_FAILURE_SECONDS * 0.2)
    assert held.called


@pytest_twisted.ensureDeferred
async def test_disconnect_policy_accepts_then_disconnects_as_unauthorized():
    factory, clock = factory_at_now(keys={API_KEY: CLIENT_SECRET}, auth_failure="disconnect")
    port, number = await listening(factory)
    try:
        client = genesys(number, client_secret=OTHER_SECRET)
        opened, client_factory = upgrade(client, number)
        await held_for_the_failure_delay(clock)
        session = Session(client, await opened, client_factory)
        session.send(client.open())  # Genesys opens at once; the answer is the disconnect
        disconnect = await session.reply()
        assert (disconnect["type"], disconnect["parameters"]) == ("disconnect", {"reason": "unauthorized"})
        assert (disconnect["seq"], disconnect["clientseq"]) == (1, 1), "in answer to the open"
        await session.close("disconnect")
        assert factory.registry.find(NAMESPACE, client.conversation_id) is None
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_an_unauthorized_client_that_does_not_close_is_dropped():
    factory, clock = factory_at_now(keys={API_KEY: CLIENT_SECRET}, auth_failure="disconnect")
    port, number = await listening(factory)
    try:
        client = genesys(number, api_key="dW5rbm93bi1rZXk=")
        opened, client_factory = upgrade(client, number)
        await held_for_the_failure_delay(clock)
        session = Session(client, await opened, client_factory)
        session.send(client.open())
        assert (await session.reply())["type"] == "disconnect"
        clock.advance(CLOSE_GRACE * 0.9)
        assert not client_factory.closed.called
        clock.advance(CLOSE_GRACE * 0.2)
        await client_factory.closed
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("send_bad", [
    pytest.param(lambda session: session.send("{not json"), id="protocol error"),
    pytest.param(lambda session: session.send(session.client.close()), id="closed, socket left open"),
])
async def test_a_client_that_does_not_close_when_told_to_is_dropped_after_the_grace(send_bad):
    factory, clock = factory_at_now(keys={API_KEY: CLIENT_SECRET})
    port, number = await listening(factory)
    try:
        session = await open_session(number, genesys(number, client_secret=CLIENT_SECRET))
        await session.open()
        with capturedLogs() as events:
            send_bad(session)
            assert (await session.reply())["type"] in ("disconnect", "closed")
            # The client ignores it and keeps its socket open.
            clock.advance(CLOSE_GRACE * 0.9)
            assert not session.factory.closed.called
            clock.advance(CLOSE_GRACE * 0.2)
            await session.factory.closed.addTimeout(REPLY_WATCHDOG_SECONDS, reactor)
        dropped = [e for e in events if "did not close in time" in e.get("log_format", "")]
        assert dropped and dropped[0]["conversation_id"] == session.client.conversation_id, dropped
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_without_keys_every_session_is_refused_and_the_reason_logged_once():
    with capturedLogs() as events:
        factory, clock = factory_at_now(keys={}, auth_failure="reject")
    assert [e["log_format"] for e in events if "audiohook.keys" in e["log_format"]] == [
        "AudioHook refuses every session: no API key is configured ([audiohook.keys])"
    ]
    port, number = await listening(factory)
    try:
        opened, _ = upgrade(genesys(number), number)
        await held_for_the_failure_delay(clock)
        assert "[401]" in await refusal(opened)
    finally:
        await port.stopListening()


# -- protocol errors -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("send_bad", [
    pytest.param(lambda session: session.send("{not json"), id="bad json"),
    pytest.param(lambda session: session.protocol.send_audio(b"\xff" * 1600), id="audio before open"),
])
async def test_a_broken_session_is_disconnected_and_others_go_on(gateway, send_bad):
    healthy = await open_session(gateway.port)
    await healthy.open()
    broken = await open_session(gateway.port)
    send_bad(broken)
    disconnect = await broken.reply()
    assert (disconnect["type"], disconnect["parameters"]["reason"]) == ("disconnect", "error")
    await broken.close("disconnect")

    healthy.send(healthy.client.ping())
    assert (await healthy.reply())["type"] == "pong"
    await pace(reactor, healthy.client.pcmu_frames({"external": noise(0.5), "internal": noise(0.5)}),
               healthy.protocol.send_audio)
    leg = gateway.service.registry.find(NAMESPACE, healthy.client.conversation_id).legs["internal"]
    await until(reactor, lambda: leg.position_bytes == 8000)
    await healthy.close()


@pytest_twisted.ensureDeferred
async def test_an_oversized_message_gets_a_clean_close(gateway):
    session = await open_session(gateway.port)
    session.protocol.send_audio(b"\xff" * 200_000)
    code, _ = await session.factory.closed
    assert code == 1009


# -- shut-down -----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_stopping_the_gateway_disconnects_open_sessions_as_completed(tmp_path):
    running = await start_gateway(reactor, tmp_path)
    session = await open_session(running.port)
    await session.open()
    stopped = running.service.stopService()
    disconnect = await session.reply()
    assert (disconnect["type"], disconnect["parameters"]) == ("disconnect", {"reason": "completed"})
    await session.close("disconnect")
    await stopped


@pytest_twisted.ensureDeferred
async def test_sessions_that_do_not_answer_the_disconnect_are_dropped_after_the_grace_period():
    factory, clock = factory_at_now(keys={API_KEY: CLIENT_SECRET})
    port, number = await listening(factory)
    try:
        session = await open_session(number)
        await session.open()
        await until(reactor, lambda: factory.registry.find(NAMESPACE, session.client.conversation_id))
        stopped = factory.shut_down(grace=5)
        assert (await session.reply())["type"] == "disconnect"
        clock.advance(4.5)
        assert not stopped.called
        clock.advance(1)
        await stopped
        await session.factory.closed
        assert factory.registry.find(NAMESPACE, session.client.conversation_id) is None
    finally:
        await port.stopListening()


@pytest.mark.parametrize("on_stop, disconnected", [("disconnect", True), ("keep", False)])
@pytest_twisted.ensureDeferred
async def test_stop_streaming_ends_the_session_only_when_configured_to(on_stop, disconnected):
    factory, _ = factory_at_now(keys={API_KEY: CLIENT_SECRET}, on_stop=on_stop)
    factory.registry.engine = ScriptedEngine()
    port, number = await listening(factory)
    try:
        session = await open_session(number, genesys(number, client_secret=CLIENT_SECRET))
        await session.open()
        guid = session.client.conversation_id
        start = parse_start({"namespace": NAMESPACE, "guid": guid, "customerId": "c", "agentId": "a"}, "en-US")
        await factory.registry.start(start)
        await factory.registry.stop(StopRequest(NAMESPACE, guid))
        session.send(session.client.ping())
        reply = await session.reply()
        if disconnected:
            assert (reply["type"], reply["parameters"]) == ("disconnect", {"reason": "completed"})
            assert (await session.reply())["type"] == "pong", "pings are still answered until the close"
            await session.close("disconnect")
            assert factory.registry.find(NAMESPACE, guid) is None
        else:
            assert reply["type"] == "pong"
            await factory.registry.start(start)  # resumed on the same session
            await session.close()
    finally:
        await port.stopListening()


@pytest.mark.parametrize("flushed_by", ["the flush", "the time limit"])
@pytest_twisted.ensureDeferred
async def test_closed_waits_for_the_calls_last_words(flushed_by):
    factory, clock = factory_at_now(keys={API_KEY: CLIENT_SECRET})
    engine = factory.registry.engine = ScriptedEngine(flush_at_once=False)
    port, number = await listening(factory)
    try:
        session = await open_session(number, genesys(number, client_secret=CLIENT_SECRET))
        await session.open()
        guid = session.client.conversation_id
        await factory.registry.start(
            parse_start({"namespace": NAMESPACE, "guid": guid, "customerId": "c", "agentId": "a"}, "en-US"))
        for frame in session.client.pcmu_frames({"external": noise(0.1), "internal": noise(0.1)}):
            session.protocol.send_audio(frame)
        await until(reactor, lambda: len(engine.transcribers) == 2)
        session.send(session.client.close())
        closed = ensureDeferred(session.reply())
        await until(reactor, lambda: all(t.finishing is not None for t in engine.transcribers))
        assert not closed.called, "closed before the last words"
        if flushed_by == "the flush":
            for transcriber in engine.transcribers:
                transcriber.finishing.callback(None)
        else:
            clock.advance(CLOSE_FLUSH_SECONDS)
        assert (await closed)["type"] == "closed"
        session.protocol.sendClose(code=1000)
        await session.factory.closed
    finally:
        await port.stopListening()
