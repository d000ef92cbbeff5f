# -*- test-case-name: tests.test_scheduler -*-
"""
Which stream the ASR threads decode next: the one whose oldest undecoded
audio is oldest (earliest deadline first), not the one that asked first.

Every stream's utterance is due a fixed time after its audio arrived, so the
audio that has waited longest is the most urgent. With one job per stream
at a time, a FIFO pool serves streams in the order they became ready: a
stream whose job ran long re-queues behind streams whose audio is younger
than its own. Here each ready stream waits in a heap keyed by the arrival
time of its oldest pending audio, and a free thread takes the oldest; the
job then takes all that stream's pending audio, so a stream that fell
behind catches up in one job rather than in a queue of 20 ms ones.

A job that may end an utterance (its audio can complete the endpointer's
silence, or it flushes the stream) goes before every other: its deadline is
that of the utterance's audio, the oldest there is, and what it returns is
what a customer waits for, where the others only keep decoding current.

Work no stream waits for (building a spare recogniser to replace one that
was retired, L{mgateway.asr.warm}) runs in the gaps: only when no stream's
job is waiting, one piece at a time, each piece short (L{IdleWork}).

How far behind the streams are is on C{/metrics}: the age of the oldest
audio when its decode starts (C{asapp_mg_asr_lag_seconds}, and per named
stream C{asapp_mg_asr_stream_lag_seconds}), and the streams waiting for a
thread (C{asapp_mg_asr_queue_depth}). A stream more than L{LAG_WARNING_SECONDS}
behind is logged when it crosses that line.
"""

from __future__ import annotations

import collections
import heapq
import itertools
from collections.abc import Callable

from prometheus_client import Gauge, Histogram
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()

#: A stream whose oldest undecoded audio is older than this is logged.
LAG_WARNING_SECONDS = 1.0

LAG = Histogram(
    "asapp_mg_asr_lag_seconds", "Age of a stream's oldest undecoded audio when its decoding starts.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
STREAM_LAG = Gauge(
    "asapp_mg_asr_stream_lag_seconds", "Per stream: age of its oldest undecoded audio at its last decode.", ["stream"]
)
QUEUE_DEPTH = Gauge("asapp_mg_asr_queue_depth", "Streams with audio waiting for an ASR thread.")


class DecodeScheduler:
    """
    Runs streams' decoding jobs on C{slots} threads, oldest audio first.

    @param clock: an C{IReactorTime}, for the arrival times and lags.
    """

    def __init__(self, slots: int, clock):
        self._free = slots
        self._clock = clock
        self._ready: list[tuple[bool, float, int, Callable[[], Deferred | None], str]] = []
        self._order = itertools.count()
        self._behind: set[str] = set()
        self._idle: collections.deque[Callable[[], Deferred | None]] = collections.deque()
        self._idle_running = False

    @property
    def queue_depth(self) -> int:
        return len(self._ready)

    def now(self) -> float:
        return self._clock.seconds()

    def submit(self, pending_since: float, start_job: Callable[[], Deferred | None], stream: str = "",
               finalising: bool = False) -> None:
        """
        Queue one job of a stream whose oldest undecoded audio arrived at
        C{pending_since}; C{start_job} starts it when a thread is free and
        returns its Deferred (or None when there is nothing left to do).
        C{finalising}: the job may end an utterance, and goes first.
        """
        heapq.heappush(self._ready, (not finalising, pending_since, next(self._order), start_job, stream))
        QUEUE_DEPTH.set(len(self._ready))
        self._dispatch()

    def submit_idle(self, start_job: Callable[[], Deferred | None]) -> None:
        """
        Queue work no stream waits for: C{start_job} starts it on a thread
        once no stream's job is waiting, never two such jobs at a time (a
        queue of them never holds every thread), and returns its Deferred
        (or None). A failure is logged.
        """
        self._idle.append(start_job)
        self._dispatch()

    def _dispatch(self) -> None:
        while self._free and self._ready:
            _, pending_since, _, start_job, stream = heapq.heappop(self._ready)
            QUEUE_DEPTH.set(len(self._ready))
            self._observe(stream, self.now() - pending_since)
            job = start_job()
            if job is None:
                continue
            self._free -= 1
            job.addBoth(self._job_ended)
        while self._free and not self._ready and self._idle and not self._idle_running:
            job = self._idle.popleft()()
            if job is None:
                continue
            self._free -= 1
            self._idle_running = True
            job.addBoth(self._idle_ended)

    def _job_ended(self, result):
        self._free += 1
        self._dispatch()
        return result

    def _idle_ended(self, result) -> None:
        self._free += 1
        self._idle_running = False
        if isinstance(result, Failure):
            log.failure("work run while the ASR threads were idle failed", result)
        self._dispatch()

    def _observe(self, stream: str, lag: float) -> None:
        LAG.observe(lag)
        if not stream:
            return
        STREAM_LAG.labels(stream).set(lag)
        if lag > LAG_WARNING_SECONDS and stream not in self._behind:
            self._behind.add(stream)
            log.warn("stream {stream} is {lag_ms} ms behind its audio", stream=stream, lag_ms=round(lag * 1000))
        elif lag <= LAG_WARNING_SECONDS and stream in self._behind:
            self._behind.discard(stream)
            log.info("stream {stream} caught up ({lag_ms} ms behind)", stream=stream, lag_ms=round(lag * 1000))

    def forget(self, stream: str) -> None:
        """The stream ended: its gauge goes."""
        if stream:
            self._behind.discard(stream)
            try:
                STREAM_LAG.remove(stream)
            except KeyError:
                pass


class IdleWork:
    """
    Runs a function on the ASR threads when no stream's audio waits for them
    (L{DecodeScheduler.submit_idle}). Callable from any thread; a piece of
    work should take tens of milliseconds at most, as a stream's job that
    comes meanwhile waits for it.
    """

    def __init__(self, scheduler: DecodeScheduler, threadpool, reactor):
        self._scheduler = scheduler
        self._threadpool = threadpool
        self._reactor = reactor

    def __call__(self, work: Callable[[], None]) -> None:
        self._reactor.callFromThread(self._scheduler.submit_idle,
                                     lambda: deferToThreadPool(self._reactor, self._threadpool, work))
