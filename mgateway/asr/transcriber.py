# -*- test-case-name: tests.test_asr,tests.test_scheduler,tests.test_seams -*-
"""
One participant stream's audio, decoded on the ASR pool.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import Histogram
from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from zope.interface import implementer

from mgateway.asr.scheduler import DecodeScheduler
from mgateway.interfaces import IEndpointing, IRecognizer, ITranscriber
from mgateway.transcript import Utterance

log = Logger()

#: Where the time goes between the audio that ends an utterance and its
#: delivery to the sinks, for the jobs that returned utterances.
STAGES = ("waited", "decoded", "returned", "delivered")
STAGE_SECONDS = Histogram(
    "asapp_mg_utterance_stage_seconds",
    "For each job that returned utterances: waited (from the arrival of the last audio it took to its start on "
    "an ASR thread), decoded (its run there: voice activity, Vosk, the final result), returned (back to the "
    "reactor thread) and delivered (text stages and the transcript events handed to the sinks).",
    ["stage"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
for _stage in STAGES:
    STAGE_SECONDS.labels(_stage)


@implementer(ITranscriber)
class StreamTranscriber:
    """
    Feeds one participant stream to its own recogniser on the ASR pool: in
    order, one job at a time per stream, never on the reactor thread.
    Utterances are delivered on the reactor thread, shifted by C{offset_ms}.

    Jobs wait for a thread in the C{scheduler} (L{DecodeScheduler}: the
    stream with the oldest undecoded audio goes first, across every stream
    sharing it); each job takes all the audio that arrived until it started,
    so a busy pool means fewer, larger jobs rather than a growing queue of
    20 ms ones. The recogniser is created by the first job and released by
    the last (or after L{abort}), on the pool: both take tens of
    milliseconds.

    If the recogniser raises, the failure is logged, the stream's remaining
    audio is dropped, no more utterances come and C{on_failure} is called
    with the failure, so the owner of the stream can say so; L{finish} still
    fires normally, so the call around it ends as usual.

    @param scheduler: shared by the streams of one ASR pool; None: this
        stream schedules on its own (as many threads as the pool has).
    @param name: the stream's name in the lag metrics and log ("": unnamed).
    @ivar fed_bytes: PCM bytes accepted by L{feed}.
    """

    def __init__(
        self,
        recognizer_factory: Callable[[], IRecognizer],
        threadpool: ThreadPool,
        reactor,
        on_utterance: Callable[[Utterance], None],
        offset_ms: int = 0,
        sample_rate: int = 8000,
        on_failure: Callable[[Failure], None] | None = None,
        scheduler: DecodeScheduler | None = None,
        name: str = "",
    ):
        self._factory = recognizer_factory
        self._threadpool = threadpool
        self._reactor = reactor
        self._on_utterance = on_utterance
        self._on_failure = on_failure
        self._offset_ms = offset_ms
        self._bytes_per_second = sample_rate * 2
        self.fed_bytes = 0
        self._pending = bytearray()
        self._scheduler = scheduler or DecodeScheduler(threadpool.max, reactor)
        self._name = name
        self._pending_since = 0.0
        #: When the latest pending audio arrived (L{STAGE_SECONDS}'s C{waited}).
        self._last_fed_at = 0.0
        # Set and cleared on the pool only, by one job (or the release) at a
        # time; the reactor thread only looks at it while no job runs.
        self._recognizer: IRecognizer | None = None
        self._busy = False
        self._finishing = False
        self._done = False
        self._waiters: list[Deferred] = []

    @property
    def fed_ms(self) -> int:
        """Milliseconds of audio accepted by L{feed}."""
        return self.fed_bytes * 1000 // self._bytes_per_second

    def feed(self, pcm: bytes) -> None:
        """Queue 16-bit mono PCM. Ignored once L{finish} or L{abort} was called."""
        if self._finishing:
            return
        self._last_fed_at = self._scheduler.now()
        if not self._pending:
            self._pending_since = self._last_fed_at
        self._pending += pcm
        self.fed_bytes += len(pcm)
        if not self._busy:
            self._next_job()

    def finish(self) -> Deferred:
        """
        Decode everything fed so far, flush the recogniser (the words that no
        trailing silence ended yet) and deliver the last utterances. Fires
        with None after the last delivery; every call fires at that moment.
        """
        if self._done:
            return succeed(None)
        waiter = Deferred()
        self._waiters.append(waiter)
        if not self._finishing:
            self._finishing = True
            if self.fed_bytes == 0:
                self._complete()
            elif not self._busy:
                self._next_job()
        return waiter

    def abort(self) -> None:
        """
        Stop now: drop the pending audio and the recogniser, deliver nothing
        more. A pending L{finish} fires.
        """
        self._finishing = True
        self._pending.clear()
        if not self._busy:
            self._drop_recognizer()
        self._complete()

    def _next_job(self) -> None:
        """Wait for a thread (the pending audio and the flush are taken when it starts)."""
        self._busy = True
        since = self._pending_since if self._pending else self._scheduler.now()
        self._scheduler.submit(since, self._start_job, self._name, finalising=self._may_finalise())

    def _may_finalise(self) -> bool:
        """
        Whether the next job may end an utterance: it flushes, or its audio
        could complete the silence the recogniser's endpointer is waiting for.
        Read while no job runs.
        """
        if self._finishing:
            return True
        recognizer = self._recognizer
        if not IEndpointing.providedBy(recognizer):
            return False
        needed = recognizer.silence_needed_ms
        return needed is not None and len(self._pending) * 1000 / self._bytes_per_second >= needed

    def _start_job(self) -> Deferred | None:
        if self._done:  # aborted while waiting
            self._busy = False
            self._drop_recognizer()
            return None
        audio = bytes(self._pending)
        self._pending.clear()
        flush = self._finishing
        job = deferToThreadPool(self._reactor, self._threadpool, self._decode, audio, flush)
        job.addCallbacks(self._job_done, self._job_failed,
                         callbackArgs=(flush, self._last_fed_at, self._scheduler.now()))
        return job

    def _decode(self, audio: bytes, flush: bool) -> tuple[list[Utterance], float]:
        """Runs on a worker thread: the utterances, and the seconds it took."""
        began = time.perf_counter()
        if self._recognizer is None:
            self._recognizer = self._factory()
        utterances = self._recognizer.accept(audio)
        if flush:
            utterances += self._recognizer.finish()
            self._recognizer = None
        return utterances, time.perf_counter() - began

    def _job_done(self, decoded: tuple[list[Utterance], float], flush: bool, arrived: float, started: float) -> None:
        self._busy = False
        if self._done:  # aborted while the job ran
            self._drop_recognizer()
            return
        utterances, decode_seconds = decoded
        if utterances:
            returned = self._scheduler.now()
            for utterance in utterances:
                self._deliver(utterance.shifted(self._offset_ms))
            STAGE_SECONDS.labels("waited").observe(max(0.0, started - arrived))
            STAGE_SECONDS.labels("decoded").observe(decode_seconds)
            STAGE_SECONDS.labels("returned").observe(max(0.0, returned - started - decode_seconds))
            STAGE_SECONDS.labels("delivered").observe(max(0.0, self._scheduler.now() - returned))
        if flush:
            self._complete()
        elif self._pending or self._finishing:
            self._next_job()

    def _job_failed(self, failure: Failure) -> None:
        self._busy = False
        self._drop_recognizer()
        if self._done:
            return
        log.failure(
            "recogniser failed after {fed_ms} ms of audio (stream offset {offset_ms} ms); "
            "this stream is no longer transcribed",
            failure,
            fed_ms=self.fed_ms,
            offset_ms=self._offset_ms,
        )
        self._finishing = True
        self._pending.clear()
        if self._on_failure is not None:
            try:
                self._on_failure(failure)
            except Exception:
                log.failure("signalling a recogniser failure failed")
        self._complete()

    def _drop_recognizer(self) -> None:
        """
        Let the recogniser go on the pool, not here: freeing a used Kaldi
        recogniser takes tens of milliseconds.
        """
        if self._recognizer is not None:
            self._threadpool.callInThread(self._forget_recognizer)

    def _forget_recognizer(self) -> None:
        self._recognizer = None

    def _deliver(self, utterance: Utterance) -> None:
        try:
            self._on_utterance(utterance)
        except Exception:
            log.failure(
                "delivering an utterance ({start_ms}-{end_ms} ms) failed",
                start_ms=utterance.start_ms,
                end_ms=utterance.end_ms,
            )

    def _complete(self) -> None:
        self._done = True
        self._scheduler.forget(self._name)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)
