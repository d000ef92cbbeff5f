"""
The webhook's OAuth2 client_credentials mode against a local HTTPS token
server and a receiver that checks the bearer token: both client
authentication methods, scope and audience, the token kept until shortly
before it expires, a new one after a 401, and a token endpoint that fails,
refuses or never answers (logged, counted, recorded, never a hang).
"""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qs

import pytest
import pytest_twisted
from prometheus_client import REGISTRY
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import Clock
from twisted.web.client import Agent
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from mgateway.egress.oauth2 import ClientCredentials, TokenSource
from mgateway.egress.tls import trust_policy
from mgateway.egress.webhook import WebhookSink
from tests.test_webhook import ScriptedReceiver, event, stats


class TokenServer(Resource):
    """An RFC 6749 token endpoint for one client; C{mode} makes it misbehave."""

    isLeaf = True

    def __init__(self, lifetime=3600):
        super().__init__()
        self.lifetime = lifetime
        self.mode = "ok"
        self.requests = []
        self.issued = []
        self._arrivals = []

    def arrival(self) -> Deferred:
        """Fires when the next request arrives."""
        d = Deferred()
        self._arrivals.append(d)
        return d

    def render_POST(self, request):
        form = {k: v[0] for k, v in parse_qs(request.content.read().decode()).items()}
        self.requests.append((request.getHeader("authorization"), form))
        arrivals, self._arrivals = self._arrivals, []
        for d in arrivals:
            d.callback(None)
        if self.mode == "hang":
            return NOT_DONE_YET
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Cache-Control", b"no-store")
        if self.mode == "refuse":
            request.setResponseCode(401)
            return json.dumps({"error": "invalid_client",
                               "error_description": "unknown client"}).encode()
        if self.mode == "garbage":
            request.setResponseCode(502)
            request.setHeader(b"Content-Type", b"text/html")
            return b"<html>Bad gateway</html>"
        token = f"tok-{len(self.issued) + 1}"
        self.issued.append(token)
        return json.dumps({"access_token": token, "token_type": "Bearer",
                           "expires_in": self.lifetime}).encode()


async def https(tls_files, resource):
    port = await serverFromString(
        reactor,
        f"ssl:0:interface=127.0.0.1:privateKey={tls_files.server_key}:certKey={tls_files.server_cert}",
    ).listen(Site(resource))
    return port, f"https://127.0.0.1:{port.getHost().port}"


@pytest_twisted.async_yield_fixture
async def oauth(tls_files):
    """(token server, receiver accepting its tokens, make_sink(**credentials))."""
    server, receiver = TokenServer(), ScriptedReceiver()
    revoked = set()
    receiver.revoked = revoked

    def answer(received):
        token = received.headers.get("authorization", "").removeprefix("Bearer ")
        return 200 if token in server.issued and token not in revoked else 401

    receiver.answer = answer
    token_port, token_url = await https(tls_files, server)
    hook_port, hook_url = await https(tls_files, receiver)
    made = []

    def make_sink(clock=None, timeout=10, token_timeout=None, **credentials):
        clock = clock or reactor
        settings = dict(token_url=f"{token_url}/oauth2/token", client_id="mg client",
                        client_secret="s3cr&t") | credentials
        source = TokenSource(
            ClientCredentials(**settings),
            http_client=HTTPClient(Agent(reactor, contextFactory=trust_policy(tls_files.ca_cert))),
            clock=clock, timeout_seconds=token_timeout or timeout, target="oauth-target")
        failures = []
        sink = WebhookSink(f"{hook_url}/hook", reactor=reactor, clock=clock, timeout_seconds=timeout,
                           concurrency=2, queue_size=16, ca_file=tls_files.ca_cert,
                           token_source=source, target="oauth-target", on_failure=failures.append)
        sink.failures = failures
        made.append(sink)
        return sink

    yield server, receiver, make_sink
    for sink in made:
        await sink.close()
    await token_port.stopListening()
    await hook_port.stopListening()


def token_failures() -> float:
    return REGISTRY.get_sample_value("asapp_mg_webhook_token_failures_total",
                                     {"target": "oauth-target"}) or 0


@pytest_twisted.ensureDeferred
async def test_client_secret_basic_sends_scope_and_audience_and_one_token_serves_every_post(oauth):
    server, receiver, make_sink = oauth
    sink = make_sink(scope="transcripts:write", audience="https://hooks.example.com")
    for n in range(3):
        sink.deliver(event(text=f"u{n}", stream_id=f"stream-{n}"))
    assert await sink.drain(20)

    assert sink.stats == stats(sent=3)
    [(authorization, form)] = server.requests
    assert form == {"grant_type": "client_credentials", "scope": "transcripts:write",
                    "audience": "https://hooks.example.com"}
    # RFC 6749 2.3.1: id and secret form-encoded before Basic.
    assert base64.b64decode(authorization.removeprefix("Basic ")) == b"mg+client:s3cr%26t"
    assert {post.headers["authorization"] for post in receiver.received} == {"Bearer tok-1"}


@pytest_twisted.ensureDeferred
async def test_client_secret_post_puts_the_credentials_in_the_body(oauth):
    server, receiver, make_sink = oauth
    sink = make_sink(client_auth="client_secret_post")
    sink.deliver(event())
    assert await sink.drain(20)

    [(authorization, form)] = server.requests
    assert authorization is None
    assert form == {"grant_type": "client_credentials", "client_id": "mg client",
                    "client_secret": "s3cr&t"}
    assert sink.stats == stats(sent=1)


@pytest_twisted.ensureDeferred
async def test_a_token_is_replaced_shortly_before_it_expires(oauth):
    server, receiver, make_sink = oauth
    server.lifetime = 600
    clock = Clock()
    sink = make_sink(clock=clock)
    sink.deliver(event(text="first"))
    assert await sink.drain(20)
    clock.advance(600 - 31)
    sink.deliver(event(text="still the first token"))
    assert await sink.drain(20)
    clock.advance(2)
    sink.deliver(event(text="a new token, 29 s before the old one expires"))
    assert await sink.drain(20)

    assert [post.headers["authorization"] for post in receiver.received] == [
        "Bearer tok-1", "Bearer tok-1", "Bearer tok-2"]
    assert sink.stats == stats(sent=3)


@pytest_twisted.ensureDeferred
async def test_a_401_fetches_a_new_token_and_sends_the_utterance_once_more(oauth):
    server, receiver, make_sink = oauth
    sink = make_sink()
    sink.deliver(event(text="before"))
    assert await sink.drain(20)
    receiver.revoked.add("tok-1")
    sink.deliver(event(text="after the revocation"))
    assert await sink.drain(20)

    assert [(post.text, post.headers["authorization"]) for post in receiver.received] == [
        ("before", "Bearer tok-1"), ("after the revocation", "Bearer tok-1"),
        ("after the revocation", "Bearer tok-2")]
    assert sink.stats == stats(sent=2)
    assert sink.failures == []


@pytest.mark.parametrize("mode, reason", [("refuse", "invalid_client: unknown client"),
                                          ("garbage", "HTTP 502")])
@pytest_twisted.ensureDeferred
async def test_a_token_endpoint_that_refuses_or_answers_garbage_is_logged_counted_and_recorded(
        oauth, mode, reason):
    server, receiver, make_sink = oauth
    server.mode = mode
    before = token_failures()
    sink = make_sink()
    sink.deliver(event())
    assert await sink.drain(20)

    assert receiver.received == []
    assert sink.stats == stats(errors=1)
    assert token_failures() == before + 1
    [failure] = sink.failures
    assert (failure.error, failure.target, failure.status) == ("TokenUnavailable", "oauth-target", None)
    assert reason in failure.reason, failure.reason


@pytest_twisted.ensureDeferred
async def test_a_token_endpoint_that_never_answers_fails_the_post_within_the_timeout(oauth):
    server, receiver, make_sink = oauth
    server.mode = "hang"
    clock = Clock()
    before = token_failures()
    sink = make_sink(clock=clock, timeout=5, token_timeout=2)
    arrived = server.arrival()
    sink.deliver(event())
    drained = sink.drain(None)
    await arrived
    clock.advance(2)
    assert await drained is True
    assert receiver.received == []
    assert token_failures() == before + 1
    [failure] = sink.failures
    assert (failure.error, failure.reason) == ("TokenUnavailable", "no answer within 2s")
    assert clock.getDelayedCalls() == []
