"""A real HTTPS endpoint that records the webhook POSTs it receives."""

from __future__ import annotations

import json
from typing import Callable

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.web.resource import Resource
from twisted.web.server import Site


@attrs.frozen
class Received:
    path: str
    query: dict
    headers: dict
    body: dict


class RecordingResource(Resource):
    isLeaf = True

    def __init__(self):
        super().__init__()
        self.received: list[Received] = []
        self._waiting: list[tuple[Callable, Deferred]] = []

    def render_POST(self, request):
        self.received.append(Received(
            path=request.path.decode(),
            query={k.decode(): v[0].decode() for k, v in request.args.items()},
            headers={k.decode().lower(): v[0].decode()
                     for k, v in request.requestHeaders.getAllRawHeaders()},
            body=json.loads(request.content.read()),
        ))
        for predicate, d in list(self._waiting):
            if predicate(self.received):
                self._waiting.remove((predicate, d))
                d.callback(self.received)
        request.setHeader(b"Content-Type", b"application/json")
        return b"{}"

    def wait_until(self, predicate: Callable[[list[Received]], bool]) -> Deferred:
        d = Deferred()
        if predicate(self.received):
            d.callback(self.received)
        else:
            self._waiting.append((predicate, d))
        return d


async def start_https_receiver(reactor, key_file, cert_file):
    """Listen on a free loopback port; returns (resource, port, base URL)."""
    resource = RecordingResource()
    endpoint = serverFromString(
        reactor, f"ssl:0:interface=127.0.0.1:privateKey={key_file}:certKey={cert_file}"
    )
    port = await endpoint.listen(Site(resource))
    return resource, port, f"https://127.0.0.1:{port.getHost().port}"
