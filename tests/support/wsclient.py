"""A WebSocket client over real loopback sockets, for driving the gateway."""

from __future__ import annotations

import json

import pytest
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol, connectWS
from twisted.internet.defer import Deferred, DeferredQueue


class RecordingClient(WebSocketClientProtocol):
    def onOpen(self):
        self.factory.opened.callback(self)

    def onMessage(self, payload, isBinary):
        self.factory.received.put(payload if isBinary else json.loads(payload.decode("utf-8")))

    def onClose(self, wasClean, code, reason):
        if not self.factory.opened.called:
            self.factory.opened.errback(ConnectionRefusedError(f"{code} {reason}"))
        self.factory.closed.callback((code, reason))

    def send_json(self, message) -> None:
        self.sendMessage(json.dumps(message).encode("utf-8"), isBinary=False)

    def send_text(self, text: str) -> None:
        self.sendMessage(text.encode("utf-8"), isBinary=False)

    def send_audio(self, pcm: bytes) -> None:
        self.sendMessage(pcm, isBinary=True)

    def next_message(self) -> Deferred:
        return self.factory.received.get()


class _Factory(WebSocketClientFactory):
    protocol = RecordingClient

    def __init__(self, url, headers=None):
        super().__init__(url, headers=headers or {})
        self.setProtocolOptions(maxMessagePayloadSize=0, maxFramePayloadSize=0)
        self.opened = Deferred()
        self.closed = Deferred()
        self.received = DeferredQueue()
        self.handshake_status = None


def connect(url: str, headers=None) -> tuple[Deferred, _Factory]:
    """
    Open a socket to C{url}. The first Deferred fires with the protocol once
    open, or fails if the upgrade was refused; the factory's C{closed} fires
    with (code, reason) and C{received} queues every message.
    """
    factory = _Factory(url, headers)
    connectWS(factory)
    return factory.opened, factory


async def refusal(opened: Deferred) -> str:
    """Why the upgrade was refused (autobahn's reason, with the HTTP status in brackets)."""
    with pytest.raises(ConnectionRefusedError) as refused:
        await opened
    return str(refused.value)
