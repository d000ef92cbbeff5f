"""
The delivery queue on its own: sends are Deferreds the test fires, time is a
L{task.Clock}; no sockets.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from mgateway.egress.queue import QUEUE_FULL, SHUT_DOWN, DeliveryQueue, QueueStats


class Harness:
    """A queue whose sends wait until the test fires them."""

    def __init__(self, concurrency=2, queue_size=4, key=None):
        self.clock = Clock()
        self.sending: dict[str, Deferred] = {}
        self.started: list[str] = []
        self.dropped: list[tuple[str, str]] = []
        self.cancelled: list[str] = []
        self.queue = DeliveryQueue(
            self.send, clock=self.clock, concurrency=concurrency, queue_size=queue_size,
            on_drop=lambda item, why: self.dropped.append((item, why)), key=key,
        )

    def send(self, item: str) -> Deferred:
        d = Deferred(lambda _: self.cancelled.append(item))
        self.sending[item] = d
        self.started.append(item)
        return d.addErrback(lambda failure: failure.trap(CancelledError))

    def finish(self, item: str) -> None:
        self.sending.pop(item).callback(None)


def test_at_most_concurrency_items_are_sent_at_once_and_the_rest_wait_in_order():
    h = Harness(concurrency=2)
    for item in "abcd":
        h.queue.put(item)
    assert h.started == ["a", "b"]
    assert h.queue.stats == QueueStats(in_flight=2, queued=2)
    h.finish("b")
    assert h.started == ["a", "b", "c"]
    h.finish("a")
    h.finish("c")
    assert h.started == ["a", "b", "c", "d"]
    h.finish("d")
    assert h.queue.stats == QueueStats(in_flight=0, queued=0)
    assert h.dropped == []


def test_a_full_queue_drops_the_oldest_waiting_item_not_the_one_in_flight():
    h = Harness(concurrency=1, queue_size=2)
    for item in "abcde":
        h.queue.put(item)
    assert h.dropped == [("b", QUEUE_FULL), ("c", QUEUE_FULL)]
    assert h.queue.stats == QueueStats(in_flight=1, queued=2)
    for item in "ade":
        h.finish(item)
    assert h.started == ["a", "d", "e"]


def test_items_of_one_key_go_one_after_the_other_in_order_and_other_keys_pass_them():
    h = Harness(concurrency=3, queue_size=10, key=lambda item: item[0])
    for item in ["s1", "s2", "t1", "s3", "t2"]:
        h.queue.put(item)
    assert h.started == ["s1", "t1"], "s2 waits for s1, t2 for t1"
    h.finish("t1")
    assert h.started == ["s1", "t1", "t2"]
    h.finish("s1")
    assert h.started == ["s1", "t1", "t2", "s2"]
    h.finish("s2")
    assert h.started[-1] == "s3"


def test_drain_fires_true_when_idle_and_false_after_its_timeout():
    h = Harness()
    assert h.queue.drain(5).result is True
    h.queue.put("a")
    first, second = h.queue.drain(5), h.queue.drain(None)
    h.clock.advance(4.9)
    assert not first.called
    h.clock.advance(0.1)
    assert first.result is False
    h.finish("a")
    assert second.result is True
    assert h.clock.getDelayedCalls() == []


def test_close_drops_what_waits_cancels_what_is_in_flight_and_drops_what_comes_later():
    h = Harness(concurrency=1)
    for item in "abc":
        h.queue.put(item)
    closed = h.queue.close()
    assert closed.called
    assert h.cancelled == ["a"]
    h.queue.put("d")
    assert h.dropped == [("b", SHUT_DOWN), ("c", SHUT_DOWN), ("d", SHUT_DOWN)]
    assert h.queue.stats == QueueStats(in_flight=0, queued=0)
    assert h.queue.drain(1).result is True


def test_a_sender_that_fails_is_logged_and_does_not_hold_up_the_queue():
    logged = []
    globalLogPublisher.addObserver(logged.append)
    try:
        queue = DeliveryQueue(lambda item: fail(RuntimeError(item)), clock=Clock(),
                              concurrency=1, queue_size=4, on_drop=pytest.fail)
        queue.put("a")
        queue.put("b")
    finally:
        globalLogPublisher.removeObserver(logged.append)
    failures = [e for e in logged if e.get("log_namespace") == "mgateway.egress.queue"]
    assert [str(e["log_failure"].value) for e in failures] == ["a", "b"]
    assert queue.stats == QueueStats(in_flight=0, queued=0)


@settings(max_examples=200, deadline=None)
@given(
    concurrency=st.integers(1, 3),
    queue_size=st.integers(1, 4),
    steps=st.lists(st.one_of(st.sampled_from("xyz"), st.integers(0, 5)), max_size=40),
)
def test_every_item_is_sent_once_or_dropped_once_and_each_key_stays_in_order(
        concurrency, queue_size, steps):
    """A put (a key letter) or the completion of the n-th send in flight, in any order."""
    h = Harness(concurrency=concurrency, queue_size=queue_size, key=lambda item: item[0])
    put = []
    for step in steps:
        if isinstance(step, str):
            item = f"{step}{len(put)}"
            put.append(item)
            h.queue.put(item)
        elif h.sending:
            h.finish(sorted(h.sending)[step % len(h.sending)])
        stats = h.queue.stats
        assert stats.in_flight <= concurrency and stats.queued <= queue_size
        assert len({item[0] for item in h.sending}) == len(h.sending), "one per key in flight"
    while h.sending:
        h.finish(next(iter(h.sending)))
    dropped = [item for item, _ in h.dropped]
    assert sorted(h.started + dropped) == sorted(put), "each exactly once"
    for key in "xyz":
        mine = [item for item in h.started if item[0] == key]
        assert mine == sorted(mine, key=lambda item: int(item[1:])), mine
