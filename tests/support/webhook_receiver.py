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

    async def posts_of_call(self, conversation_id: str, expected: int, stream_ids: dict,
                            sender_ids: dict) -> list[Received]:
        """
        Wait for C{expected} transcripts of one call and check that each
        carries its participant's C{streamId} and C{sender.externalId}.
        """
        mine = lambda received: [r for r in received if r.body["externalConversationId"] == conversation_id]
        await self.wait_until(lambda received: len(mine(received)) >= expected)
        posts = mine(self.received)
        for post in posts:
            role = post.body["sender"]["role"]
            assert post.body["streamId"] == stream_ids[role], post.body
            assert post.body["sender"]["externalId"] == sender_ids[role], post.body
        return posts

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
