"""
Twilio Media Streams that fail mid-call and are restarted, as Twilio's
"Handling Failures" prescribes, over real loopback WebSockets: a new stream
for the Call SID takes over a stalled old socket; a lost socket keeps its call
for the restart; idle sockets are found (media inactivity on an injected
clock, WebSocket pings); timestamps are held to the wall clock.
"""

import uuid

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import Clock
from twisted.logger import capturedLogs

from mgateway.tokens import TokenSigner
from mgateway.calls.registry import CallRegistry
from mgateway.calls.requests import StopRequest, parse_start
from mgateway.calls.roles import track_roles
from mgateway.ingress.twilio.websocket import TwilioStreamFactory
from mgateway.paths import TWILIO_STREAM_PATH
from tests.support.audio import pace, read_pcm, until
from tests.support.scripted_engine import ScriptedEngine
from tests.support.twilio_peer import TwilioPeer
from tests.support.wsclient import RecordingClient, connect

#: A watchdog, not a deadline: a socket that never closes fails the test instead of hanging it.
WATCHDOG_SECONDS = 30
MEDIA_TIMEOUT = 10
GRACE = 30
PART = read_pcm("single.wav")[:8000]  # 250 ms


class Gateway:
    """A Twilio factory alone on a loopback port, its timers on a L{Clock}, its calls in a registry."""

    def __init__(self, **options):
        self.clock = Clock()
        self.clock.advance(reactor.seconds())
        self.engine = ScriptedEngine()
        self.registry = CallRegistry(self.engine, sinks={"twilio": []}, clock=self.clock, mappers={"twilio": track_roles})
        self.tokens = TokenSigner(b"k" * 32, 300, reactor)
        options = {"media_timeout": MEDIA_TIMEOUT, "reconnect_grace": GRACE, **options}
        self.factory = TwilioStreamFactory(tokens=self.tokens, registry=self.registry, public_url="",
                                           clock=self.clock, **options)
        self.port = None

    async def listen(self):
        self.port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(self.factory)

    async def open(self, client_protocol=RecordingClient):
        url = (f"ws://127.0.0.1:{self.port.getHost().port}{TWILIO_STREAM_PATH}/"
               f"{self.tokens.issue('twilio', 'test-app')}")
        opened, factory = connect(url)
        factory.protocol = client_protocol
        return await opened, factory

    async def start(self, sid):
        await until(reactor, lambda: self.registry.find("twilio", sid) is not None)
        return await self.registry.start(parse_start(
            {"namespace": "twilio", "guid": sid, "customerId": "c", "agentId": "a"}, "en-US"))

    async def stop(self, sid):
        return await self.registry.stop(StopRequest("twilio", sid))

    def legs(self, sid):
        return self.registry.find("twilio", sid).legs


def gateway(**options):
    def decorate(test):
        async def run():
            running = Gateway(**options)
            await running.listen()
            try:
                await test(running)
            finally:
                await running.port.stopListening()
        run.__name__ = test.__name__
        return pytest_twisted.ensureDeferred(run)
    return decorate


def closed(client_factory):
    """The client socket's (code, reason) once it closes."""
    return client_factory.closed.addTimeout(WATCHDOG_SECONDS, reactor)


def call_sid() -> str:
    return "CA" + uuid.uuid4().hex


def begin(sid, client) -> TwilioPeer:
    """A new stream of the call: Twilio's connected and start frames."""
    peer = TwilioPeer(sid, stream_sid="MZ" + uuid.uuid4().hex, first_timestamp=0)
    client.send_text(peer.connected())
    client.send_text(peer.start())
    return peer


def media(peer, client):
    """250 ms on both tracks, its timestamps from the stream's 0."""
    return pace(reactor, peer.media_frames({"inbound": PART, "outbound": PART}), client.send_text)


async def stream(gw, sid, client) -> TwilioPeer:
    peer = begin(sid, client)
    await media(peer, client)
    return peer


async def streaming(gw):
    """A call whose one stream has sent its first 250 ms: (Call SID, client, client factory)."""
    sid = call_sid()
    client, factory = await gw.open()
    await stream(gw, sid, client)
    await until(reactor, lambda: gw.legs(sid)["inbound"].position_bytes == len(PART))
    return sid, client, factory


@gateway()
async def test_a_new_stream_supersedes_a_stalled_one_keeping_streams_and_timeline(gw):
    sid = call_sid()
    old, old_factory = await gw.open()
    first = begin(sid, old)
    streams = await gw.start(sid)
    ids = {role: s.stream_id for role, s in streams.items()}
    await media(first, old)
    await until(reactor, lambda: gw.legs(sid)["inbound"].position_bytes == len(PART))

    # The old socket stalls (it stays open, sends nothing); Twilio's restart connects.
    new, new_factory = await gw.open()
    with capturedLogs() as events:
        peer = await stream(gw, sid, new)
        code, reason = await closed(old_factory)
    assert code == 4001, (code, reason)
    assert peer.stream_sid in reason
    superseded = [e for e in events if "superseded" in e.get("log_format", "")]
    assert superseded and superseded[0]["guid"] == sid, superseded

    legs = gw.legs(sid)
    await until(reactor, lambda: legs["inbound"].position_bytes == legs["outbound"].position_bytes
                == 2 * len(PART))
    assert not new_factory.closed.called
    stopped = await gw.stop(sid)
    assert {role: s.stream_id for role, (s, _) in stopped.items()} == ids, "the same participant streams"
    assert stopped["customer"][1].total_audio_bytes == 2 * len(PART)
    (customer, agent) = gw.engine.transcribers
    assert customer.offset_ms == 0 and len(customer.fed) == 2 * len(PART), "one timeline, not two from 0"


@gateway()
async def test_a_lost_stream_keeps_its_call_until_the_restart(gw):
    sid = call_sid()
    old, old_factory = await gw.open()
    first = begin(sid, old)
    streams = await gw.start(sid)
    await media(first, old)
    await until(reactor, lambda: gw.legs(sid)["inbound"].position_bytes == len(PART))
    old.transport.abortConnection()  # a network failure: no stop, no closing handshake
    await closed(old_factory)
    gw.clock.advance(GRACE - 1)
    assert gw.registry.find("twilio", sid) is not None, "the call waits for the restart"

    new, new_factory = await gw.open()
    await stream(gw, sid, new)
    legs = gw.legs(sid)
    await until(reactor, lambda: legs["inbound"].position_bytes == 2 * len(PART))
    gw.clock.advance(2)
    assert gw.registry.find("twilio", sid) is not None, "the restarted stream feeds the call"
    stopped = await gw.stop(sid)
    assert stopped["customer"][0].stream_id == streams["customer"].stream_id
    assert stopped["agent"][1].total_audio_bytes == 2 * len(PART)
    new.send_text(TwilioPeer(sid).stop())
    await closed(new_factory)
    await until(reactor, lambda: gw.registry.find("twilio", sid) is None)


@gateway()
async def test_a_lost_stream_that_is_not_restarted_ends_its_call_after_the_grace(gw):
    sid, client, factory = await streaming(gw)
    client.sendClose()
    await closed(factory)
    gw.clock.advance(GRACE - 0.1)
    assert gw.registry.find("twilio", sid) is not None
    gw.clock.advance(0.2)
    await until(reactor, lambda: gw.registry.find("twilio", sid) is None)


@gateway()
async def test_a_stream_without_media_is_closed_with_4083_and_its_call_waits(gw):
    sid, client, factory = await streaming(gw)
    gw.clock.advance(MEDIA_TIMEOUT - 0.5)
    assert not factory.closed.called
    gw.clock.advance(1)
    code, reason = await closed(factory)
    assert code == 4083, (code, reason)
    assert gw.registry.find("twilio", sid) is not None, "stalled, not ended: Twilio restarts it"
    gw.clock.advance(GRACE)
    await until(reactor, lambda: gw.registry.find("twilio", sid) is None)


@gateway()
async def test_a_socket_that_opens_and_never_starts_is_closed_too(gw):
    client, factory = await gw.open()
    gw.clock.advance(MEDIA_TIMEOUT)
    code, _ = await closed(factory)
    assert code == 4083


class Unresponsive(RecordingClient):
    """A peer gone half-open: the socket stays, WebSocket pings are never answered."""

    def onPing(self, payload):
        pass


@gateway(ping_interval=1, ping_timeout=1)
async def test_a_peer_that_does_not_answer_pings_is_dropped_and_its_call_waits(gw):
    # Autobahn's auto-ping runs on the reactor itself: short real intervals here
    # (the start frame must get there before the first ping is due).
    sid = call_sid()
    client, factory = await gw.open(Unresponsive)
    begin(sid, client)
    await closed(factory)
    assert gw.registry.find("twilio", sid) is not None


@gateway()
async def test_timestamps_cannot_move_a_track_ahead_of_the_wall_clock(gw):
    """Six frames in 13 s whose timestamps jump a minute each."""
    sid = call_sid()
    client, factory = await gw.open()
    peer = TwilioPeer(sid, tracks=["inbound"], first_timestamp=0)
    client.send_text(peer.start())
    await gw.start(sid)
    frame, fed = b"\xff" * 160, 0
    for i in range(6):
        client.send_text(peer.media("inbound", frame, i * 60_000))
        await until(reactor, lambda: gw.registry.find("twilio", sid).streams["customer"].started
                    and gw.engine.transcribers and len(gw.engine.transcribers[0].fed) > fed)
        fed = len(gw.engine.transcribers[0].fed)
        gw.clock.advance(2.6)
    stopped = await gw.stop(sid)
    summary = stopped["customer"][1]
    assert summary.total_audio_bytes == 6 * 320 and summary.audio_duration_ms == 120, summary
    assert 0 < summary.filled_audio_ms <= 13_000 + 2_000, summary
    assert gw.legs(sid)["inbound"].position_bytes <= (13_000 + 2_000 + 120) * 16
    client.send_text(peer.stop())
    await closed(factory)
