# -*- test-case-name: tests.test_stream_file -*-
"""
A client of the direct WebSocket API for people trying the gateway: it asks
for a streaming URL, streams a WAV file (8 kHz, mono, 16-bit) as one
participant and prints every message the gateway sends back, one JSON object
a line. C{asapp-mg stream-file} runs it.
"""

from __future__ import annotations

import json
import wave
from pathlib import Path
from typing import Callable

import attrs
import treq
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol, connectWS
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from mgateway.media.pcm import BYTES_PER_MS

#: Audio per binary message, as the spec's examples send it.
CHUNK_MS = 20


class StreamFileError(Exception):
    """The file or the gateway said no: C{str()} is the one line to show."""


@attrs.frozen
class StreamOptions:
    api: str
    api_id: str
    api_secret: str
    external_id: str
    role: str
    sender_id: str
    language: str | None
    #: Pace the audio in real time rather than as fast as the gateway takes it.
    realtime: bool


def read_wav(path: Path) -> bytes:
    """The PCM of an 8 kHz mono 16-bit WAV file, or L{StreamFileError} saying what it is instead."""
    try:
        with wave.open(str(path), "rb") as w:
            shape = (w.getframerate(), w.getnchannels(), w.getsampwidth())
            pcm = w.readframes(w.getnframes())
    except (OSError, EOFError, wave.Error) as e:
        raise StreamFileError(f"{path}: not a readable WAV file: {e}") from e
    if shape != (8000, 1, 2):
        rate, channels, width = shape
        raise StreamFileError(
            f"{path}: {rate} Hz, {channels} channel(s), {8 * width}-bit; the direct API takes 8000 Hz mono "
            f"16-bit (sox {path} -r 8000 -c 1 -b 16 out.wav)"
        )
    return pcm


async def streaming_url(reactor, options: StreamOptions) -> str:
    headers = {"asapp-api-id": options.api_id, "asapp-api-secret": options.api_secret}
    body = json.dumps({"externalId": options.external_id}).encode()
    try:
        response = await treq.post(options.api.rstrip("/") + "/autotranscribe/v1/streaming-url", body,
                                   headers=headers, reactor=reactor)
        answer = await response.json()
    except Exception as e:
        raise StreamFileError(f"cannot get a streaming URL from {options.api}: {e}") from e
    if response.code != 200:
        raise StreamFileError(f"streaming-url answered {response.code}: {json.dumps(answer)}")
    return answer["streamingUrl"]


class _Client(WebSocketClientProtocol):
    def onOpen(self):
        self.factory.opened.callback(self)

    def onMessage(self, payload, isBinary):
        if not isBinary:
            self.factory.show(json.loads(payload.decode("utf-8")))

    def onClose(self, wasClean, code, reason):
        if not self.factory.opened.called:
            self.factory.opened.errback(StreamFileError(f"the stream was refused: {reason or code}"))
        self.factory.closed.callback(code)


class _Factory(WebSocketClientFactory):
    protocol = _Client

    def clientConnectionFailed(self, connector, reason):
        self.opened.errback(StreamFileError(f"cannot connect to {self.url}: {reason.getErrorMessage()}"))


async def stream_file(reactor, path: Path, options: StreamOptions, show: Callable[[dict], None]) -> dict | None:
    """
    Stream C{path}; C{show} gets each message; returns the C{finalResponse}
    (None if the socket closed without one).
    """
    pcm = read_wav(path)
    url = await streaming_url(reactor, options)
    messages: list[dict] = []

    def record(message: dict) -> None:
        messages.append(message)
        show(message)

    factory = _Factory(url, reactor=reactor)
    factory.opened, factory.closed, factory.show = Deferred(), Deferred(), record
    connectWS(factory)
    client = await factory.opened
    start = {"message": "startStream", "sender": {"role": options.role, "externalId": options.sender_id}}
    if options.language:
        start["language"] = options.language
    client.sendMessage(json.dumps(start).encode("utf-8"))
    chunk = CHUNK_MS * BYTES_PER_MS
    for offset in range(0, len(pcm), chunk):
        if client.state != client.STATE_OPEN:  # the gateway ended the stream (its finalResponse says why)
            break
        client.sendMessage(pcm[offset : offset + chunk], isBinary=True)
        # Yield to the reactor (in real time: one chunk's duration) so replies show as they come.
        await deferLater(reactor, CHUNK_MS / 1000 if options.realtime else 0, lambda: None)
    if client.state == client.STATE_OPEN:
        client.sendMessage(json.dumps({"message": "finishStream"}).encode("utf-8"))
    await factory.closed
    return next((m for m in messages if m.get("message") == "finalResponse"), None)
