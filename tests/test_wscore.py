"""
The shared WebSocket driver: a small core of the one ingress-core shape,
driven by L{CoreServerProtocol} over a real loopback socket, with the
shipped recording call registry and the core's timer on a L{Clock}.
"""

import json

import attrs
import pytest_twisted
from autobahn.websocket.types import ConnectionDeny
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from mgateway.calls.errors import LegBusy
from mgateway.ingress.events import LegAudio, Terminated
from mgateway.ingress.wscore import CoreServerFactory, CoreServerProtocol
from mgateway.testing import RecordingCallRegistry
from tests.support.audio import until
from tests.support.wsclient import connect, refusal

WATCHDOG_SECONDS = 30
IDLE_SECONDS = 10


@attrs.frozen
class Joined:
    guid: str


@attrs.frozen
class Closing:
    """The peer ends the session: its call is to be flushed before C{closed} goes out."""


class CountingCore:
    """
    Text frames: C{join GUID} (a L{Joined} event, answered C{joined}),
    C{pcm} (two samples of leg C{a}), C{bye} (C{goodbye}, then
    L{Terminated} 4040), C{close} (a L{Closing} event, answered
    C{closed}, held back with what follows until L{flushed}); anything
    else is echoed. Idle for L{IDLE_SECONDS}: C{idle}, then L{Terminated}
    4083.
    """

    def __init__(self, now):
        self._deadline = now() + IDLE_SECONDS
        self._events, self._data = [], []
        self.received = []
        self._holding = False

    def events(self):
        events, self._events = self._events, []
        return events

    def data_to_send(self):
        """Each frame a JSON string (the test client reads JSON)."""
        if self._holding:
            return []
        data, self._data = self._data, []
        return [json.dumps(text) for text in data]

    def flushed(self):
        self._holding = False

    def receive_text(self, text):
        self.received.append(text)
        if text == "close":
            self._events.append(Closing())
            self._data.append("closed")
            self._holding = True
        elif text.startswith("join "):
            self._events.append(Joined(text[5:]))
            self._data.append("joined")
        elif text == "pcm":
            self._events.append(LegAudio("a", b"\x01\x00\x02\x00"))
        elif text == "bye":
            self._end("goodbye", 4040, "bye")
        else:
            self._data.append(text)

    def receive_bytes(self, data):
        self._data.append(f"{len(data)} bytes")

    def get_timer(self):
        return self._deadline

    def handle_timer(self, now):
        if self._deadline is not None and now >= self._deadline:
            self._end("idle", 4083, "idle")

    def _end(self, last, code, reason):
        self._deadline = None
        self._data.append(last)
        self._events.append(Terminated(code, reason))


class CountingProtocol(CoreServerProtocol):
    namespace = "test"

    def accept(self, request):
        self.factory.accepted += 1
        self.core = CountingCore(self.factory.clock.seconds)

    def _joined(self, event: Joined) -> None:
        try:
            self.attach(event.guid, ["a"])
        except LegBusy:
            self.sendClose(code=4008, reason="busy")

    def _closing(self, event: Closing) -> None:
        self.after_flush(self.hang_up(), lambda _: self.core.flushed())

    handlers = {Joined: _joined, Closing: _closing}

    def hang_up(self):
        """The call's flush: the factory's C{flushing}, when a test holds it."""
        flushed = super().hang_up()
        return self.factory.flushing or flushed

    def sendMessage(self, payload, isBinary=False, **kwargs):
        self.factory.sent.append(payload)
        super().sendMessage(payload, isBinary, **kwargs)


class CountingFactory(CoreServerFactory):
    protocol = CountingProtocol

    def __init__(self, clock, full=False):
        super().__init__(registry=RecordingCallRegistry(), clock=clock, max_frame_bytes=1024)
        self.full = full
        self.accepted = 0
        self.flushing = None
        self.sent = []

    def admit(self, request):
        if self.full:
            raise ConnectionDeny(503, "full")


class Listening:
    def __init__(self, **options):
        self.clock = Clock()
        self.factory = CountingFactory(self.clock, **options)
        self.port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.url = f"ws://127.0.0.1:{self.port.getHost().port}/"

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info):
        await self.port.stopListening()

    async def client(self):
        opened, client_factory = connect(self.url)
        return await opened.addTimeout(WATCHDOG_SECONDS, reactor), client_factory


async def reply(client):
    return await client.next_message().addTimeout(WATCHDOG_SECONDS, reactor)


async def exchange(client, text: str):
    """Send a text frame; the frame the server sends next."""
    client.send_text(text)
    return await reply(client)


@pytest_twisted.ensureDeferred
async def test_messages_go_into_the_core_and_its_frames_come_back():
    async with Listening() as server:
        client, _ = await server.client()
        assert await exchange(client, "hello") == "hello"
        client.send_audio(b"\x00" * 6)
        assert await reply(client) == "6 bytes"
        assert len(server.factory.sockets) == 1


@pytest_twisted.ensureDeferred
async def test_adapter_events_reach_their_handler_and_leg_audio_the_call_it_attached():
    async with Listening() as server:
        client, client_factory = await server.client()
        assert await exchange(client, "join call-1") == "joined"
        client.send_text("pcm")
        assert await exchange(client, "hello") == "hello"
        feed = server.factory.registry.feed("test", "call-1")
        assert feed.pcm == {"a": b"\x01\x00\x02\x00"}
        client.sendClose(code=1000)
        await client_factory.closed.addTimeout(WATCHDOG_SECONDS, reactor)
        assert feed.hung_up, "a lost socket hangs its call up"
        assert server.factory.sockets == set()


@pytest_twisted.ensureDeferred
async def test_a_terminated_core_closes_with_its_code_after_the_frames_before_it():
    async with Listening() as server:
        client, client_factory = await server.client()
        assert await exchange(client, "bye") == "goodbye"
        code, reason = await client_factory.closed.addTimeout(WATCHDOG_SECONDS, reactor)
        assert (code, reason) == (4040, "bye")


@pytest_twisted.ensureDeferred
async def test_the_cores_timer_runs_on_the_factorys_clock():
    async with Listening() as server:
        client, client_factory = await server.client()
        server.clock.advance(IDLE_SECONDS - 1)
        assert await exchange(client, "still here") == "still here"
        assert not client_factory.closed.called
        server.clock.advance(1)
        assert await reply(client) == "idle"
        code, _ = await client_factory.closed.addTimeout(WATCHDOG_SECONDS, reactor)
        assert code == 4083
        assert server.clock.getDelayedCalls() == [], "no timer left once the socket is gone"


@pytest_twisted.ensureDeferred
async def test_admit_refuses_the_upgrade_before_the_adapter_accepts_it():
    async with Listening(full=True) as server:
        opened, _ = connect(server.url)
        assert "[503]" in await refusal(opened)
        assert server.factory.accepted == 0


async def close_with_the_flush_held(server, client):
    """The client closes its session while its call's flush is held."""
    assert await exchange(client, "join call-1") == "joined"
    server.factory.flushing = Deferred()
    server.factory.sent.clear()
    client.send_text("close")
    client.send_text("hello")
    (protocol,) = server.factory.sockets
    await until(reactor, lambda: protocol.core.received[-1:] == ["hello"])
    assert server.factory.registry.feed("test", "call-1").hung_up
    assert server.factory.sent == [], "nothing goes out before the call is flushed"


@pytest_twisted.ensureDeferred
async def test_frames_a_core_holds_for_its_calls_flush_go_out_once_it_is_flushed():
    async with Listening() as server:
        client, client_factory = await server.client()
        await close_with_the_flush_held(server, client)
        server.factory.flushing.callback(None)
        assert [await reply(client), await reply(client)] == ["closed", "hello"]
        assert server.clock.getDelayedCalls() == [protocol_timer(server)]
        client.sendClose(code=1000)
        await client_factory.closed.addTimeout(WATCHDOG_SECONDS, reactor)
        assert server.clock.getDelayedCalls() == [], "no timer left once the socket is gone"


def protocol_timer(server):
    """The core's own timer, the one delayed call a driven socket keeps."""
    (protocol,) = server.factory.sockets
    return protocol._timer


@pytest_twisted.ensureDeferred
async def test_ending_every_socket_tells_each_core_and_fires_once_all_are_closed():
    async with Listening() as server:
        (first, first_factory), (second, second_factory) = [await server.client(), await server.client()]
        ended = server.factory.end_sockets(lambda protocol: protocol.core.receive_text("bye"))
        assert [await reply(first), await reply(second)] == ["goodbye", "goodbye"]
        await ended.addTimeout(WATCHDOG_SECONDS, reactor)
        assert [(await first_factory.closed)[0], (await second_factory.closed)[0]] == [4040, 4040]
        assert server.factory.sockets == set()
