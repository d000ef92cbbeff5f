"""
The real-time webhook against real HTTPS receivers on loopback, their
certificate signed by a throw-away CA.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timezone
from urllib.parse import parse_qs, urlsplit

import attrs
import pytest
import pytest_twisted
from prometheus_client import REGISTRY
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import ConnectionClosed
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site
from zope.interface.verify import verifyObject

from mgateway.config import ConfigError
from mgateway.egress.webhook import WebhookSink, WebhookStats
from mgateway.interfaces import ITranscriptSink
from mgateway.transcript import Sender, TranscriptEvent, Utterance
from tests.support.tlsfiles import make_tls_files

GUID = "CA5b040e075515c424391012acc5a870cf"
STREAM_ID = "5ce2b755-3f38-11ed-b755-7aed4b5c38d5"
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
#: What a receiver's C{answer} gives to send a 200 and the start of a body that never ends.
STALL = "stall"


def event(guid=GUID, text="I need help upgrading my streaming package and my PIN number is ####",
          stream_id=STREAM_ID, role="customer", external_id="TT9833237", start=400, end=3968):
    return TranscriptEvent(
        namespace="siprec",
        conversation_id=guid,
        stream_id=stream_id,
        sender=Sender(role=role, external_id=external_id),
        utterance=Utterance(text=text, start_ms=start, end_ms=end),
        created=NOW,
        spoken=NOW,
    )


def interleaved(first_guid, second_guid, per_call=3):
    """Utterances of two calls, alternating, each text unique."""
    return [
        event(guid=guid, text=f"{guid} utterance {n}", stream_id=f"{guid}-stream")
        for n in range(per_call)
        for guid in (first_guid, second_guid)
    ]


def stats(**counts) -> WebhookStats:
    values = dict(sent=0, failed=0, errors=0, timed_out=0, dropped=0, in_flight=0, queued=0)
    return WebhookStats(**(values | counts))


def deliveries(outcome: str) -> float:
    return REGISTRY.get_sample_value("asapp_mg_webhook_deliveries_total", {"outcome": outcome})


def latencies_timed() -> list[float]:
    """How many POSTs the webhook's latency histogram has timed: queued, then answered."""
    return [REGISTRY.get_sample_value("asapp_mg_webhook_latency_seconds_count", {"stage": stage})
            for stage in ("queued", "answered")]


# -- the receiving end ---------------------------------------------------------


@attrs.frozen
class Received:
    method: str
    path: str
    raw_query: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    raw_body: bytes
    body: dict
    client_port: int

    @property
    def text(self) -> str:
        return self.body["autotranscribeResponse"]["utterance"][0]["text"]


class ScriptedReceiver(Resource):
    """
    Records every request and answers with the status C{answer(received)}
    gives; holds the request unanswered when it gives L{None}, or stops in
    the middle of the body when it gives L{STALL}.

    @ivar stalled: for each stalled response, its C{notifyFinish()}: fails
        when the connection is lost.
    """

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.url = ""
        self.received: list[Received] = []
        self.answer = lambda received: 200
        self.stalled: list[Deferred] = []
        self._held = []
        self._waiting: list[tuple[int, Deferred]] = []

    def render(self, request):
        uri = urlsplit(request.uri.decode())
        raw_body = request.content.read()
        received = Received(
            method=request.method.decode(),
            path=uri.path,
            raw_query=uri.query,
            query=parse_qs(uri.query, keep_blank_values=True),
            headers={k.decode().lower(): v[0].decode()
                     for k, v in request.requestHeaders.getAllRawHeaders()},
            raw_body=raw_body,
            body=json.loads(raw_body),
            client_port=request.getClientAddress().port,
        )
        self.received.append(received)
        for count, d in list(self._waiting):
            if len(self.received) >= count:
                self._waiting.remove((count, d))
                d.callback(None)
        status = self.answer(received)
        if status is None:
            self._held.append(request)
            request.notifyFinish().addErrback(lambda _: self._held.remove(request))
            return NOT_DONE_YET
        if status is STALL:
            request.setHeader(b"Content-Length", b"100")
            request.write(b"{")
            self.stalled.append(request.notifyFinish())
            return NOT_DONE_YET
        return self._respond(request, status)

    def release(self):
        """Answer the held requests with 200, and every later one at once."""
        self.answer = lambda received: 200
        held, self._held = self._held, []
        for request in held:
            request.write(self._respond(request, 200))
            request.finish()

    def wait_for(self, count: int) -> Deferred:
        """Fires once C{count} requests have arrived."""
        d = Deferred()
        if len(self.received) >= count:
            d.callback(None)
        else:
            self._waiting.append((count, d))
        return d

    @staticmethod
    def _respond(request, status) -> bytes:
        # A body, so that the client must read it before the connection can be reused.
        request.setResponseCode(status)
        if 300 <= status < 400:
            request.setHeader(b"Location", b"/elsewhere")
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps({"status": status}).encode()


@pytest_twisted.async_yield_fixture
async def receiver(tls_files):
    resource = ScriptedReceiver()
    port = await serverFromString(
        reactor,
        f"ssl:0:interface=127.0.0.1:privateKey={tls_files.server_key}:certKey={tls_files.server_cert}",
    ).listen(Site(resource))
    resource.url = f"https://127.0.0.1:{port.getHost().port}"
    yield resource
    await port.stopListening()


@pytest_twisted.async_yield_fixture
async def sinks(tls_files):
    """Makes sinks that trust the receiver's CA, and closes them after the test."""
    made = []

    def make(url, **options) -> WebhookSink:
        defaults = dict(reactor=reactor, timeout_seconds=10, concurrency=2, queue_size=16,
                        ca_file=tls_files.ca_cert)
        sink = WebhookSink(url, **(defaults | options))
        made.append(sink)
        return sink

    yield make
    for sink in made:
        await sink.close()


@pytest.fixture
def webhook_log():
    """The events the webhook module logs during the test."""
    events = []

    def observe(logged):
        if logged.get("log_namespace") == "mgateway.egress.webhook":
            events.append(logged)

    globalLogPublisher.addObserver(observe)
    yield events
    globalLogPublisher.removeObserver(observe)


def warnings(events) -> list[dict]:
    return [e for e in events if e["log_level"].name == "warn"]


# -- the tests -----------------------------------------------------------------


def test_webhook_sink_provides_the_sink_interface(tls_files):
    sink = WebhookSink("https://hooks.example.com/", reactor=reactor, timeout_seconds=5,
                       concurrency=1, queue_size=1, ca_file=tls_files.ca_cert)
    assert verifyObject(ITranscriptSink, sink)


@pytest_twisted.ensureDeferred
async def test_post_carries_the_spec_transcript_json_and_the_secret_header(receiver, sinks):
    sink = sinks(f"{receiver.url}/hook", auth="secret", secret_name="X-Webhook-Secret",
                 secret="s3cret")
    sink.deliver(event())
    assert await sink.drain(10)

    [post] = receiver.received
    assert (post.method, post.path, post.query) == ("POST", "/hook", {})
    assert post.headers["content-type"] == "application/json"
    assert post.headers["x-webhook-secret"] == "s3cret"
    expected = {
        "type": "transcript",
        "externalConversationId": "CA5b040e075515c424391012acc5a870cf",
        "streamId": "5ce2b755-3f38-11ed-b755-7aed4b5c38d5",
        "sender": {"externalId": "TT9833237", "role": "customer"},
        "autotranscribeResponse": {
            "message": "transcript",
            "start": 400,
            "end": 3968,
            "utterance": [
                {"text": "I need help upgrading my streaming package and my PIN number is ####"}
            ],
        },
    }
    assert post.body == expected
    assert post.raw_body == json.dumps(expected, separators=(",", ":")).encode(), post.raw_body
    assert sink.stats == stats(sent=1)


@pytest_twisted.ensureDeferred
async def test_secret_in_query_is_added_to_the_urls_own_query(receiver, sinks):
    secret = "p@ss word&x=/é+%"
    sink = sinks(f"{receiver.url}/hook?tenant=a+b&x=1%2B2", auth="secret",
                 secret_name="token", secret=secret, secret_in="query")
    sink.deliver(event(text="네 안녕하세요", role="agent", external_id="RE223444211993"))
    assert await sink.drain(10)

    [post] = receiver.received
    assert post.raw_query.startswith("tenant=a+b&x=1%2B2&token="), post.raw_query
    assert post.query == {"tenant": ["a b"], "x": ["1+2"], "token": [secret]}
    assert "token" not in post.headers
    assert post.body["sender"] == {"externalId": "RE223444211993", "role": "agent"}
    assert post.text == "네 안녕하세요"


@pytest_twisted.ensureDeferred
async def test_no_secret_is_sent_without_secret_auth(receiver, sinks):
    sink = sinks(f"{receiver.url}/hook", secret_name="X-Webhook-Secret", secret="unused")
    sink.deliver(event())
    assert await sink.drain(10)

    [post] = receiver.received
    assert "x-webhook-secret" not in post.headers
    assert post.query == {}


@pytest.mark.parametrize("trust", ["platform", "another CA"])
@pytest_twisted.ensureDeferred
async def test_server_not_signed_by_a_trusted_ca_is_an_error(receiver, sinks, tmp_path,
                                                             webhook_log, trust):
    ca_file = None if trust == "platform" else make_tls_files(tmp_path).ca_cert
    errors_before = deliveries("error")
    sink = sinks(f"{receiver.url}/hook", ca_file=ca_file)
    sink.deliver(event())
    assert await sink.drain(10)

    assert receiver.received == []
    assert sink.stats == stats(errors=1)
    assert deliveries("error") == errors_before + 1
    [warning] = warnings(webhook_log)
    assert (warning["guid"], warning["stream_id"]) == (GUID, STREAM_ID)
    assert "certificate verify failed" in warning["reason"], warning["reason"]


@pytest_twisted.ensureDeferred
async def test_every_ca_of_a_bundle_is_trusted(receiver, sinks, tls_files, tmp_path):
    bundle = tmp_path / "bundle.pem"
    other = make_tls_files(tmp_path)
    bundle.write_bytes(other.ca_cert.read_bytes() + tls_files.ca_cert.read_bytes())
    sink = sinks(f"{receiver.url}/hook", ca_file=bundle)
    sink.deliver(event())
    assert await sink.drain(10)

    assert len(receiver.received) == 1
    assert sink.stats == stats(sent=1)


def test_ca_file_without_a_certificate_is_a_config_error(tmp_path):
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="webhook.ca_file"):
        WebhookSink("https://hooks.example.com/", reactor=reactor, timeout_seconds=5,
                    concurrency=1, queue_size=1, ca_file=ca_file)


@pytest_twisted.ensureDeferred
async def test_one_connection_carries_every_post_whatever_the_status(receiver, sinks):
    receiver.answer = lambda received: 500 if "fail" in received.text else 200
    sink = sinks(f"{receiver.url}/hook", concurrency=1)
    for text in ("one", "two fail", "three", "four fail"):
        sink.deliver(event(text=text))
    assert await sink.drain(10)

    assert [post.text for post in receiver.received] == ["one", "two fail", "three", "four fail"]
    ports = {post.client_port for post in receiver.received}
    assert len(ports) == 1, ports
    assert sink.stats == stats(sent=2, failed=2)


@pytest_twisted.ensureDeferred
async def test_a_call_whose_posts_hang_times_out_without_holding_up_the_other_call(
        receiver, sinks, webhook_log):
    receiver.answer = lambda received: None if received.body["externalConversationId"] == "hanging" else 200
    sink = sinks(f"{receiver.url}/hook", concurrency=2, timeout_seconds=0.5)
    events = interleaved("hanging", "healthy")
    for e in events:
        sink.deliver(e)
    assert await sink.drain(30)

    assert sink.stats == stats(sent=3, errors=3, timed_out=3)
    arrivals = Counter(post.text for post in receiver.received)
    assert arrivals == Counter(e.utterance.text for e in events), "each POST exactly once, no retry"
    timeouts = [e for e in warnings(webhook_log) if "timed out" in e["log_format"]]
    assert sorted(e["guid"] for e in timeouts) == ["hanging"] * 3


@pytest_twisted.ensureDeferred
async def test_a_response_body_that_never_ends_times_out_and_the_connection_is_dropped(
        receiver, sinks):
    receiver.answer = lambda received: STALL
    sink = sinks(f"{receiver.url}/hook", timeout_seconds=0.5)
    sink.deliver(event())
    assert await sink.drain(30)

    assert sink.stats == stats(errors=1, timed_out=1)
    [response] = receiver.stalled
    with pytest.raises(ConnectionClosed):
        await response.addTimeout(10, reactor)


@pytest_twisted.ensureDeferred
async def test_error_statuses_are_counted_failed_not_retried_and_other_targets_still_served(
        receiver, sinks, webhook_log):
    receiver.answer = lambda received: 500 if received.path == "/failing" else 200
    failing = sinks(f"{receiver.url}/failing")
    healthy = sinks(f"{receiver.url}/healthy")
    events = interleaved("first-call", "second-call")
    sent_before, failed_before = deliveries("sent"), deliveries("failed")
    timed_before = latencies_timed()
    for e in events:
        failing.deliver(e)
        healthy.deliver(e)
    assert await failing.drain(10)
    assert await healthy.drain(10)

    assert failing.stats == stats(failed=6)
    assert healthy.stats == stats(sent=6)
    assert (deliveries("sent"), deliveries("failed")) == (sent_before + 6, failed_before + 6)
    assert latencies_timed() == [count + 6 for count in timed_before], "the latency of each 2xx POST, only"
    for path in ("/failing", "/healthy"):
        arrivals = Counter(post.text for post in receiver.received if post.path == path)
        assert arrivals == Counter(e.utterance.text for e in events), (path, arrivals)
    failures = [(e["guid"], e["status"]) for e in warnings(webhook_log)]
    assert sorted(failures) == sorted((e.conversation_id, 500) for e in events)


@pytest_twisted.ensureDeferred
async def test_a_redirect_is_a_failed_post_and_not_followed(receiver, sinks):
    receiver.answer = lambda received: 307 if received.path == "/hook" else 200
    sink = sinks(f"{receiver.url}/hook", auth="secret", secret_name="X-Webhook-Secret",
                 secret="s3cret")
    sink.deliver(event())
    assert await sink.drain(10)

    assert [post.path for post in receiver.received] == ["/hook"]
    assert sink.stats == stats(failed=1)


@pytest_twisted.ensureDeferred
async def test_a_full_queue_drops_the_oldest_waiting_utterance(receiver, sinks, webhook_log):
    receiver.answer = lambda received: None
    sink = sinks(f"{receiver.url}/hook", concurrency=1, queue_size=2)
    dropped_before = deliveries("dropped")
    for n in range(1, 6):
        sink.deliver(event(guid=f"call-{n}"))

    assert sink.stats == stats(dropped=2, in_flight=1, queued=2)
    assert deliveries("dropped") == dropped_before + 2
    assert [e["guid"] for e in warnings(webhook_log)] == ["call-2", "call-3"]

    await receiver.wait_for(1)
    receiver.release()
    assert await sink.drain(10)
    assert [post.body["externalConversationId"] for post in receiver.received] == [
        "call-1", "call-4", "call-5"]
    assert sink.stats == stats(sent=3, dropped=2)


@pytest_twisted.ensureDeferred
async def test_drain_gives_up_after_its_timeout_and_close_abandons_what_is_in_flight(
        receiver, sinks, webhook_log):
    receiver.answer = lambda received: None
    clock = Clock()
    sink = sinks(f"{receiver.url}/hook", clock=clock, timeout_seconds=60, concurrency=1)
    sink.deliver(event(guid="in-flight"))
    sink.deliver(event(guid="waiting"))
    drained = sink.drain(5)
    await receiver.wait_for(1)

    assert not drained.called
    clock.advance(5)
    assert await drained is False
    assert sink.stats == stats(in_flight=1, queued=1)

    await sink.close()
    sink.deliver(event(guid="too-late"))
    assert sink.stats == stats(errors=1, dropped=2)
    assert [e["guid"] for e in warnings(webhook_log)] == ["waiting", "in-flight", "too-late"]
    assert len(receiver.received) == 1
    assert await sink.drain(5) is True
