"""
The close of the gateway's WebSocket servers: on-time connection timers, and a
peer that is slow to read still gets everything sent before the close.
"""

import json

import pytest_twisted
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol, connectWS
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, deferLater

from mgateway.ingress.wsserver import (
    CLOSE_HANDSHAKE_TIMEOUT,
    FLUSH_GRACE,
    DueTimer,
    GatewayServerFactory,
    GatewayServerProtocol,
)

#: More than loopback's socket buffers hold, so part of it waits in the transport.
MESSAGES = 400
MESSAGE = b"x" * 65536
WATCHDOG_SECONDS = 30


def test_a_timer_fires_when_due_not_at_the_whole_second():
    clock = Clock()
    clock.advance(0.9)
    fired = []
    DueTimer(clock).call_later(1.0, fired.append, "due")
    clock.advance(0.1)
    assert fired == [], "fired at the whole second, 0.9 s early"
    clock.advance(0.9)
    assert fired == ["due"]


def test_a_cancelled_or_fired_call_may_be_cancelled_again():
    clock = Clock()
    timer = DueTimer(clock)
    fired = timer.call_later(1, lambda: None)
    clock.advance(1)
    fired.cancel()
    cancelled = timer.call_later(1, lambda: None)
    cancelled.cancel()
    cancelled.cancel()
    assert clock.getDelayedCalls() == []


class FloodThenClose(GatewayServerProtocol):
    """Sends a flood, a final message and a close frame, as soon as it opens."""

    def onOpen(self):
        for _ in range(MESSAGES):
            self.sendMessage(MESSAGE, isBinary=True)
        self.sendMessage(b'{"message": "final"}', isBinary=False)
        self.sendClose(code=1000)

    def connectionLost(self, reason):
        super().connectionLost(reason)
        self.factory.lost.callback(None)


class SlowReader(WebSocketClientProtocol):
    """Stops reading once open, until the test lets it read on."""

    def onOpen(self):
        self.transport.pauseProducing()
        self.factory.opened.callback(self)

    def onMessage(self, payload, isBinary):
        self.factory.messages.append(payload if isBinary else json.loads(payload))

    def onClose(self, wasClean, code, reason):
        if not self.factory.closed.called:
            self.factory.closed.callback(code)


def slow_reader(port) -> WebSocketClientFactory:
    factory = WebSocketClientFactory(f"ws://127.0.0.1:{port.getHost().port}/")
    factory.protocol = SlowReader
    factory.setProtocolOptions(maxMessagePayloadSize=0, maxFramePayloadSize=0)
    factory.opened, factory.closed, factory.messages = Deferred(), Deferred(), []
    connectWS(factory)
    return factory


class Flooded:
    """A flooding server on loopback and a slow reader connected to it, timers on a Clock."""

    def __init__(self):
        self.clock = Clock()
        self.server = GatewayServerFactory(timer_clock=self.clock)
        self.server.protocol = FloodThenClose
        self.server.lost = Deferred()
        self.port = reactor.listenTCP(0, self.server, interface="127.0.0.1")
        self.client = slow_reader(self.port)

    async def __aenter__(self):
        self.reader = await self.client.opened.addTimeout(WATCHDOG_SECONDS, reactor)
        await deferLater(reactor, 0.05, lambda: None)
        return self

    async def __aexit__(self, *exc_info):
        await self.port.stopListening()

    async def read_to_the_end(self) -> list:
        self.reader.transport.resumeProducing()
        await self.client.closed.addTimeout(WATCHDOG_SECONDS, reactor)
        return self.client.messages


@pytest_twisted.ensureDeferred
async def test_a_peer_slow_to_read_gets_everything_sent_before_the_close():
    async with Flooded() as flooded:
        # The peer has not answered the close frame in time: Autobahn alone
        # would abort here and drop what the transport still holds.
        flooded.clock.advance(CLOSE_HANDSHAKE_TIMEOUT)
        messages = await flooded.read_to_the_end()
        assert len(messages) == MESSAGES + 1
        assert messages[-1] == {"message": "final"}


@pytest_twisted.ensureDeferred
async def test_a_peer_that_never_reads_is_aborted_after_the_grace():
    async with Flooded() as flooded:
        flooded.clock.advance(CLOSE_HANDSHAKE_TIMEOUT)
        await deferLater(reactor, 0.05, lambda: None)
        assert not flooded.server.lost.called, "closed before what was sent could be written"
        flooded.clock.advance(FLUSH_GRACE)
        await flooded.server.lost.addTimeout(WATCHDOG_SECONDS, reactor)
        assert len(await flooded.read_to_the_end()) < MESSAGES + 1
