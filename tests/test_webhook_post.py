"""
The webhook's POSTs through C{treq.testing.StubTreq}: what goes on the wire,
how each answer is counted, timeouts on a L{task.Clock}, order per stream.
The real-TLS tests are in C{test_webhook.py}.
"""

from __future__ import annotations

import json

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from mgateway.egress.webhook import WebhookSink
from tests.test_webhook import event, stats


class Receiver(Resource):
    """Records each request; answers C{status(body)}, or holds it when that is None."""

    isLeaf = True

    def __init__(self, status=lambda body: 200):
        super().__init__()
        self.status = status
        self.requests = []
        self.held = []

    def render_POST(self, request):
        body = json.loads(request.content.read())
        self.requests.append((request.uri.decode(), dict(request.requestHeaders.getAllRawHeaders()), body))
        status = self.status(body)
        if status is None:
            self.held.append(request)
            return NOT_DONE_YET
        request.setResponseCode(status)
        return b"{}"

    def texts(self):
        return [body["autotranscribeResponse"]["utterance"][0]["text"] for _, _, body in self.requests]


def sink_for(receiver, clock=None, **options):
    stub = StubTreq(receiver)
    defaults = dict(reactor=None, clock=clock or Clock(), timeout_seconds=5, concurrency=2,
                    queue_size=8, http_client=stub)
    return WebhookSink("https://hooks.example.com/hook?tenant=a", **(defaults | options)), stub


def test_the_post_carries_the_secret_in_the_configured_header_or_query_parameter():
    receiver = Receiver()
    in_header, stub = sink_for(receiver, auth="secret", secret_name="X-Hook-Key", secret="k1")
    in_header.deliver(event(text="one"))
    stub.flush()
    in_query, stub = sink_for(receiver, auth="secret", secret_name="key", secret="k 2",
                              secret_in="query")
    in_query.deliver(event(text="two"))
    stub.flush()

    (uri1, headers1, body1), (uri2, headers2, _) = receiver.requests
    assert (uri1, headers1[b"X-Hook-Key"], headers1[b"Content-Type"]) == (
        "/hook?tenant=a", [b"k1"], [b"application/json"])
    assert body1["externalConversationId"] == event().conversation_id
    assert uri2 == "/hook?tenant=a&key=k+2" and b"Key" not in headers2
    assert (in_header.stats, in_query.stats) == (stats(sent=1), stats(sent=1))


def test_each_answer_is_counted_by_its_class_and_a_redirect_is_not_followed():
    codes = {"ok": 200, "accepted": 202, "error": 500, "moved": 307, "refused": 403}
    receiver = Receiver(lambda body: codes[body["autotranscribeResponse"]["utterance"][0]["text"]])
    sink, stub = sink_for(receiver, concurrency=5)
    for text in codes:
        sink.deliver(event(text=text, stream_id=text))
    stub.flush()

    assert receiver.texts() == list(codes)
    assert sink.stats == stats(sent=2, failed=3)


def test_a_post_unanswered_within_the_timeout_is_an_error_and_the_next_one_goes_out():
    clock = Clock()
    receiver = Receiver(lambda body: None)
    sink, stub = sink_for(receiver, clock=clock, concurrency=1, timeout_seconds=5)
    sink.deliver(event(text="first"))
    sink.deliver(event(text="second", stream_id="other"))
    stub.flush()
    assert receiver.texts() == ["first"]

    clock.advance(5)
    stub.flush()
    assert receiver.texts() == ["first", "second"]
    assert sink.stats == stats(errors=1, timed_out=1, in_flight=1)


def test_an_utterance_never_overtakes_the_previous_one_of_its_stream():
    receiver = Receiver(lambda body: None)
    sink, stub = sink_for(receiver, concurrency=4)
    for text, stream in [("s1", "s"), ("s2", "s"), ("t1", "t"), ("s3", "s")]:
        sink.deliver(event(text=text, stream_id=stream))
    stub.flush()
    assert receiver.texts() == ["s1", "t1"]
    assert sink.stats == stats(in_flight=2, queued=2)

    def answer(text):
        [request] = [r for r in receiver.held
                     if json.loads(r.content.getvalue())["autotranscribeResponse"]["utterance"][0]["text"] == text]
        receiver.held.remove(request)
        request.finish()
        stub.flush()

    answer("s1")
    assert receiver.texts() == ["s1", "t1", "s2"]
    answer("t1")
    assert receiver.texts() == ["s1", "t1", "s2"], "s3 still waits for s2"
    answer("s2")
    assert receiver.texts() == ["s1", "t1", "s2", "s3"]
    answer("s3")
    assert sink.stats == stats(sent=4)
