"""
The webhook against receivers that close connections: Python's own
C{http.server} (HTTP/1.0, one request per connection), one that closes an
idle keep-alive connection just as the next POST arrives, one that drops
every request; and the optional retry budget for connection failures.
"""

from __future__ import annotations

import http.server
import json
import ssl
import threading

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.internet.threads import deferToThread
from twisted.web.http import HTTPChannel
from twisted.web.server import Site

from tests.test_webhook import (  # noqa: F401 (fixtures)
    GUID,
    ScriptedReceiver,
    event,
    sinks,
    stats,
    warnings,
    webhook_log,
)


# -- receivers that close connections --------------------------------------------


class _Http10Handler(http.server.BaseHTTPRequestHandler):
    """Python's own HTTP server: HTTP/1.0, one request per connection."""

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((json.loads(body), self.client_address[1]))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format, *args):
        pass


@pytest_twisted.async_yield_fixture
async def http10_receiver(tls_files):
    """An HTTPS C{http.server} on a thread of its own; yields (server, URL)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Http10Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls_files.server_cert, tls_files.server_key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, f"https://127.0.0.1:{server.server_address[1]}/hook"
    await deferToThread(server.shutdown)
    server.server_close()


class _ClosingChannel(HTTPChannel):
    """
    Closes its connection when a request arrives after C{keep} answered ones,
    without answering it: a receiver whose idle timeout fires just as the
    client reuses the connection (C{keep=1}), or one that drops every
    request (C{keep=0}).
    """

    keep = 1
    answered = 0

    def dataReceived(self, data):
        if self.answered >= self.keep:
            # The channel is the TLS transport's producer: it must let go for
            # the close (close_notify, then FIN) to happen now.
            self.transport.unregisterProducer()
            self.transport.loseConnection()
            return
        super().dataReceived(data)


@pytest_twisted.async_yield_fixture
async def closing_receiver(tls_files):
    """A L{ScriptedReceiver} behind L{_ClosingChannel}s; set C{keep} on the yielded resource."""
    resource = ScriptedReceiver()
    resource.keep = 1
    #: keep for the next connections, before C{keep} for all the others.
    resource.keeps = []
    site = Site(resource)

    def channel():
        made = _ClosingChannel()
        made.keep = resource.keeps.pop(0) if resource.keeps else resource.keep
        return made

    site.protocol = channel
    original_render = resource.render

    def render(request):
        channel = request.channel
        request.notifyFinish().addBoth(lambda _: setattr(channel, "answered", channel.answered + 1))
        return original_render(request)

    resource.render = render
    port = await serverFromString(
        reactor,
        f"ssl:0:interface=127.0.0.1:privateKey={tls_files.server_key}:certKey={tls_files.server_cert}",
    ).listen(site)
    resource.url = f"https://127.0.0.1:{port.getHost().port}"
    yield resource
    await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_an_http10_receiver_gets_every_utterance_each_on_its_own_connection(
        http10_receiver, sinks):
    server, url = http10_receiver
    sink = sinks(url, concurrency=1)
    texts = [f"utterance {n}" for n in range(4)]
    for text in texts:
        sink.deliver(event(text=text))
    assert await sink.drain(30)

    assert sink.stats == stats(sent=4), sink.stats
    assert [body["autotranscribeResponse"]["utterance"][0]["text"]
            for body, _ in server.received] == texts
    assert len({port for _, port in server.received}) == 4, "an HTTP/1.0 connection is never reused"


@pytest_twisted.ensureDeferred
async def test_a_post_on_a_connection_closed_while_idle_is_sent_again_on_a_new_one(
        closing_receiver, sinks, webhook_log):
    sink = sinks(f"{closing_receiver.url}/hook", concurrency=1)
    texts = [f"utterance {n}" for n in range(4)]
    for text in texts:
        sink.deliver(event(text=text))
    assert await sink.drain(30)

    assert sink.stats == stats(sent=4), sink.stats
    assert [post.text for post in closing_receiver.received] == texts, "none lost, in order"
    ports = [post.client_port for post in closing_receiver.received]
    assert len(set(ports)) == 4, ports
    resent = [e for e in webhook_log if "sending it again" in e["log_format"]]
    assert resent and all(e["guid"] == GUID for e in resent), webhook_log
    assert warnings(webhook_log) == []


@pytest_twisted.ensureDeferred
async def test_a_post_refused_on_a_new_connection_is_not_sent_again(closing_receiver, sinks,
                                                                      webhook_log):
    closing_receiver.keep = 0
    sink = sinks(f"{closing_receiver.url}/hook", concurrency=1)
    for n in range(2):
        sink.deliver(event(text=f"utterance {n}"))
    assert await sink.drain(30)

    assert sink.stats == stats(errors=2), sink.stats
    assert [e for e in webhook_log if "sending it again" in e["log_format"]] == []
    assert len(warnings(webhook_log)) == 2


@pytest_twisted.ensureDeferred
async def test_with_a_retry_budget_a_post_dropped_before_any_answer_is_sent_again(
        closing_receiver, sinks, webhook_log):
    closing_receiver.keeps = [0, 0]
    sink = sinks(f"{closing_receiver.url}/hook", concurrency=1, retries=2)
    sink.deliver(event(text="third time lucky"))
    assert await sink.drain(30)

    assert sink.stats == stats(sent=1), sink.stats
    assert [post.text for post in closing_receiver.received] == ["third time lucky"]
    tries = [e["why"] for e in webhook_log if "sending it again" in e["log_format"]]
    assert tries == ["could not connect (1 more tries)", "could not connect (0 more tries)"]


@pytest_twisted.ensureDeferred
async def test_a_retry_budget_is_spent_then_the_utterance_is_an_error(sinks, webhook_log):
    port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(Site(ScriptedReceiver()))
    url = f"https://127.0.0.1:{port.getHost().port}/hook"
    await port.stopListening()
    sink = sinks(url, concurrency=1, retries=1)
    sink.deliver(event())
    assert await sink.drain(30)

    assert sink.stats == stats(errors=1), sink.stats
    assert len([e for e in webhook_log if "sending it again" in e["log_format"]]) == 1
    [warning] = warnings(webhook_log)
    assert "refused" in warning["reason"].lower(), warning["reason"]
