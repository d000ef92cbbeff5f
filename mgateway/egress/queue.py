# -*- test-case-name: tests.test_delivery_queue -*-
"""
The delivery queue every sink puts its utterances through: bounded,
concurrency-limited, drop-oldest, in order per key, with drain and close.

It knows nothing of HTTP or storage: it calls C{send(item)}, which returns a
L{Deferred} that fires when the item is done with (the sender counts and logs
its own outcomes, and applies its own timeout), and tells C{on_drop} about
every item it gives up on without sending. So a slow or dead target holds up
nothing but its own queue, and memory stays bounded whatever the target does.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Generic, Hashable, TypeVar

import attrs
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()

T = TypeVar("T")

#: Why an item was dropped.
QUEUE_FULL = "the queue is full"
SHUT_DOWN = "the sink is shut down"


@attrs.frozen
class QueueStats:
    """Items being sent now, and items waiting behind them."""

    in_flight: int
    queued: int


class DeliveryQueue(Generic[T]):
    """
    @param send: starts sending one item; the L{Deferred} it returns fires
        (with anything) once the item is done with. Cancelling it must end
        the send: L{close} does.
    @param clock: times L{drain}.
    @param concurrency: the most items being sent at once.
    @param queue_size: the most items waiting; when one more arrives, the
        oldest waiting is dropped.
    @param on_drop: called with each item given up on and why
        (L{QUEUE_FULL} or L{SHUT_DOWN}).
    @param key: items with the same key are sent one after the other, in the
        order they were put (an utterance never overtakes its stream's
        previous one); L{None}: every item is its own key.
    """

    def __init__(
        self,
        send: Callable[[T], Deferred],
        *,
        clock: IReactorTime,
        concurrency: int,
        queue_size: int,
        on_drop: Callable[[T, str], None],
        key: Callable[[T], Hashable] | None = None,
    ):
        if concurrency < 1 or queue_size < 1:
            raise ValueError(f"concurrency {concurrency} and queue_size {queue_size} must be >= 1")
        self._send = send
        self._clock = clock
        self._concurrency = concurrency
        self._queue_size = queue_size
        self._on_drop = on_drop
        self._key = key
        self._waiting: deque[T] = deque()
        self._in_flight: dict[Deferred, Hashable] = {}
        self._drains: list[Deferred] = []
        self._closed = False

    @property
    def stats(self) -> QueueStats:
        return QueueStats(in_flight=len(self._in_flight), queued=len(self._waiting))

    def put(self, item: T) -> None:
        """Send C{item} when its turn comes; never blocks, never raises."""
        if self._closed:
            self._on_drop(item, SHUT_DOWN)
            return
        self._waiting.append(item)
        if len(self._waiting) > self._queue_size:
            self._on_drop(self._waiting.popleft(), QUEUE_FULL)
        self._pump()

    def drain(self, timeout: float | None = None) -> Deferred:
        """
        Wait for every item put so far to be sent or given up on.

        @return: a L{Deferred} firing with C{True} once nothing waits and
            nothing is in flight, or with C{False} after C{timeout} seconds
            (never, for L{None}).
        """
        if self._idle():
            return succeed(True)
        d = Deferred(self._drains.remove)
        self._drains.append(d)
        if timeout is not None:
            d.addTimeout(timeout, self._clock, onTimeoutCancel=lambda result, timeout: False)
        return d

    def close(self) -> Deferred:
        """
        Stop for good: drop what waits, cancel what is in flight, drop what
        comes later.

        @return: a L{Deferred} firing once the sends in flight have ended.
        """
        self._closed = True
        while self._waiting:
            self._on_drop(self._waiting.popleft(), SHUT_DOWN)
        abandoned = list(self._in_flight)
        settled = DeferredList(abandoned, consumeErrors=True)
        for d in abandoned:
            d.cancel()
        return settled.addCallback(lambda _: None)

    # -- internals ------------------------------------------------------------

    def _pump(self) -> None:
        while len(self._in_flight) < self._concurrency and not self._closed:
            item = self._next()
            if item is None:
                return
            self._start(item)

    def _next(self) -> T | None:
        """The oldest waiting item whose key has nothing in flight, taken out of the queue."""
        busy = set(self._in_flight.values())
        for index, item in enumerate(self._waiting):
            if self._key_of(item) not in busy:
                del self._waiting[index]
                return item
        return None

    def _key_of(self, item: T) -> Hashable:
        return object() if self._key is None else self._key(item)

    def _start(self, item: T) -> None:
        d = maybeDeferred(self._send, item)
        self._in_flight[d] = self._key_of(item)
        d.addBoth(self._settled, d)

    def _settled(self, result, d: Deferred) -> None:
        if isinstance(result, Failure):
            log.failure("a delivery failed in a way its sender did not handle", result)
        del self._in_flight[d]
        self._pump()
        if self._idle():
            drains, self._drains = self._drains, []
            for drain in drains:
                drain.callback(True)

    def _idle(self) -> bool:
        return not self._waiting and not self._in_flight
