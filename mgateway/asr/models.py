# -*- test-case-name: tests.test_asr,tests.test_seams -*-
"""
The Vosk models of the configured languages: each loaded once, through its
overlay (L{mgateway.asr.overlay}: endpointing), and
shared by every recogniser of that language.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path

import vosk
from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from mgateway.asr.endpointer import SpeechEndpointer
from mgateway.asr.overlay import UntunableModel, endpoint_overlay
from mgateway.asr.vosk_recognizer import VoskRecognizer
from mgateway.asr.warm import WarmRecognizers, WhenIdle
from mgateway.interfaces import IMemoryRelease, IRecognizer

log = Logger()

#: Kaldi's verbosity, set once for the process (C{vosk.SetLogLevel}) before
#: the first model loads. Kaldi writes straight to stderr, bypassing the
#: gateway's log: 0 would print several LOG lines per model and recogniser;
#: -1 keeps only warnings and errors.
KALDI_LOG_LEVEL = -1


class LanguageUnavailable(Exception):
    """
    A language cannot be transcribed: its model is missing, failed to load,
    or the language is not configured.

    @ivar language: the language tag as asked for.
    """

    def __init__(self, language: str, reason: str):
        super().__init__(
            f"language {language} is not available ({reason}); run `asapp-mg fetch-model {language}` "
            f'or set asr.languages."{language}".model to a Vosk model directory'
        )
        self.language = language


class ModelRegistry:
    """
    The loaded model of each configured language, and recognisers on it.

    @param languages: C{(tag, model directory or None if missing, required)}
        for each configured language.
    @param overlay_root: where model overlays are built (see
        L{mgateway.asr.overlay}).
    @param threadpool: the ASR pool; models load there, off the reactor.
    @param spares: warm recognisers kept ready per language (see
        L{mgateway.asr.warm}); 0: every stream builds its own.
    @param kaldi_log_level: see L{KALDI_LOG_LEVEL}.
    @param vad_threshold: Silero's speech probability from which a window is
        speech, for each stream's L{SpeechEndpointer} (ending utterances
        after C{endpoint_silence_ms} of non-speech); None: no detector,
        Kaldi's rules alone end utterances.
    @param spare_max_audio_seconds: see L{WarmRecognizers}' C{retire_after_seconds}.
    @param release_memory: called on the pool once a stream is done with its
        recogniser (L{mgateway.memory.MallocTrim}); None: nothing.
    @param when_idle: see L{WarmRecognizers}.
    """

    def __init__(
        self,
        languages: Sequence[tuple[str, Path | None, bool]],
        overlay_root: Path,
        endpoint_silence_ms: int,
        max_utterance_ms: int,
        threadpool: ThreadPool,
        reactor,
        spares: int = 0,
        kaldi_log_level: int = KALDI_LOG_LEVEL,
        vad_threshold: float | None = None,
        spare_max_audio_seconds: float = 0,
        release_memory: IMemoryRelease | None = None,
        when_idle: WhenIdle | None = None,
    ):
        self._languages = tuple(languages)
        self._overlay_root = overlay_root
        self._endpoint_silence_ms = endpoint_silence_ms
        self._max_utterance_ms = max_utterance_ms
        self._threadpool = threadpool
        self._reactor = reactor
        self._kaldi_log_level = kaldi_log_level
        self._spares = spares
        self._vad_threshold = vad_threshold
        self._spare_max_audio_seconds = spare_max_audio_seconds
        self._release_memory = release_memory
        self._when_idle = when_idle
        self._models: dict[str, vosk.Model] = {}
        self._warm: dict[str, WarmRecognizers] = {}
        self._started = False
        self._loaded = False
        self._failure: Failure | None = None
        self._waiters: list[tuple[Deferred, bool]] = []

    def load(self) -> Deferred:
        """
        Load every present model, in parallel on the pool. A missing or
        failing language is disabled with a warning, unless it is required:
        then the result fails with L{LanguageUnavailable} (once every load
        ended). Calling it again returns the outcome of the first call.
        """
        if not self._started:
            self._started = True
            vosk.SetLogLevel(self._kaldi_log_level)
            loads = [self._load_one(tag, path, required) for tag, path, required in self._languages]
            DeferredList(loads, consumeErrors=True).addCallback(self._finished)
        return self._when_loaded(report_failure=True)

    def _load_one(self, tag: str, path: Path | None, required: bool) -> Deferred:
        if path is None:
            return self._unavailable(tag, required, "no Vosk model installed")
        loading = deferToThreadPool(self._reactor, self._threadpool, self._read_model, path)

        def loaded(result):
            model, untunable = result
            if untunable is not None:
                log.warn(
                    "{reason}; loaded with its built-in decoding options", reason=str(untunable), language=tag
                )
            self._models[tag] = model
            if self._spares:
                self._warm[tag] = WarmRecognizers(model, self._threadpool, self._spares,
                                                  endpointer=self._endpointer_factory(),
                                                  retire_after_seconds=self._spare_max_audio_seconds,
                                                  release_memory=self._release_memory,
                                                  when_idle=self._when_idle)
                self._warm[tag].fill()
            log.info("language {language} loaded from {model}", language=tag, model=str(path))

        def failed(failure: Failure):
            log.failure(
                "model of {language} at {model} failed to load", failure, language=tag, model=str(path)
            )
            return self._unavailable(tag, required, f"its model at {path} failed to load")

        return loading.addCallbacks(loaded, failed)

    def _endpointer_factory(self) -> Callable[[], SpeechEndpointer] | None:
        if self._vad_threshold is None:
            return None
        return functools.partial(SpeechEndpointer, self._endpoint_silence_ms, self._vad_threshold)

    def _new_recognizer(self, model: vosk.Model, sample_rate: int) -> VoskRecognizer:
        endpointer = self._endpointer_factory()
        return VoskRecognizer(model, sample_rate, endpointer=endpointer() if endpointer is not None else None,
                              release_memory=self._release_memory)

    def _unavailable(self, tag: str, required: bool, reason: str) -> Deferred:
        error = LanguageUnavailable(tag, reason)
        if required:
            return fail(error)
        log.warn("{error}; continuing without it", error=str(error), language=tag)
        return succeed(None)

    def _read_model(self, path: Path) -> tuple[vosk.Model, UntunableModel | None]:
        """Runs on the pool: build the overlay, then load the model through it."""
        try:
            directory = endpoint_overlay(
                path, self._overlay_root, self._endpoint_silence_ms, self._max_utterance_ms
            )
        except UntunableModel as untunable:
            return vosk.Model(str(path)), untunable
        return vosk.Model(str(directory)), None

    def _finished(self, results) -> None:
        self._loaded = True
        self._failure = next((outcome for ok, outcome in results if not ok), None)
        waiters, self._waiters = self._waiters, []
        for waiter, report_failure in waiters:
            self._fire(waiter, report_failure)

    def _fire(self, waiter: Deferred, report_failure: bool) -> None:
        if report_failure and self._failure is not None:
            waiter.errback(self._failure)
        else:
            waiter.callback(None)

    def _when_loaded(self, report_failure: bool) -> Deferred:
        waiter = Deferred()
        if self._loaded:
            self._fire(waiter, report_failure)
        else:
            self._waiters.append((waiter, report_failure))
        return waiter

    @property
    def loaded(self) -> bool:
        """Every configured model finished loading (or failed to)."""
        return self._loaded

    def wait_loaded(self) -> Deferred:
        """Fires (with None, never failing) once L{load} finished, well or not."""
        return self._when_loaded(report_failure=False)

    def canonical(self, tag: str) -> str | None:
        """The configured spelling of a loaded language (C{en-us} -> C{en-US}), or None."""
        wanted = tag.casefold()
        return next((loaded for loaded in self._models if loaded.casefold() == wanted), None)

    def available(self) -> frozenset[str]:
        """The languages whose model is loaded."""
        return frozenset(self._models)

    def spares_ready(self, tag: str) -> int:
        """Warm recognisers ready now for new streams of the loaded language C{tag}."""
        warm = self._warm.get(tag)
        return warm.ready if warm is not None else 0

    def recognizer_factory(self, tag: str, sample_rate: int = 8000) -> Callable[[], IRecognizer]:
        """
        A callable that builds a recogniser of C{tag} on the shared model.
        Building one allocates Kaldi state: call it on the worker thread.

        @raise LanguageUnavailable: C{tag} is not loaded.
        """
        canonical = self.canonical(tag)
        if canonical is None:
            raise LanguageUnavailable(tag, self._why_unavailable(tag))
        warm = self._warm.get(canonical)
        if warm is not None and warm.sample_rate == sample_rate:
            return warm.recognizer
        return functools.partial(self._new_recognizer, self._models[canonical], sample_rate)

    def _why_unavailable(self, tag: str) -> str:
        configured = next((entry for entry in self._languages if entry[0].casefold() == tag.casefold()), None)
        if configured is None:
            return "not configured"
        if configured[1] is None:
            return "no Vosk model installed"
        return "its model failed to load" if self._loaded else "its model is still loading"

