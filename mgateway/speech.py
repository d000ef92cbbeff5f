# -*- test-case-name: tests.test_endpointer,tests.test_seams -*-
"""
The one door to speech recognition for the rest of the gateway: which languages
can be transcribed, and a transcriber for a stream.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from zope.interface import implementer

from mgateway.asr.models import ModelRegistry
from mgateway.asr.scheduler import DecodeScheduler
from mgateway.asr.transcriber import StreamTranscriber
from mgateway.interfaces import ISpeechEngine
from mgateway.transcript import Utterance


@implementer(ISpeechEngine)
class SpeechEngine:
    """
    Binds the loaded models to the ASR thread pool.

    @ivar models: the L{ModelRegistry} (one shared Vosk model per language).
    @param scheduler: the pool's L{DecodeScheduler}, when the models' spares
        also use it (L{mgateway.asr.scheduler.IdleWork}); None: one of its own.
    """

    def __init__(self, models: ModelRegistry, threadpool, reactor, scheduler: DecodeScheduler | None = None):
        self.models = models
        self._threadpool = threadpool
        self._reactor = reactor
        # Every stream's jobs, oldest audio first, on as many slots as threads.
        self._scheduler = scheduler or DecodeScheduler(threadpool.max, reactor)

    def ready(self) -> Deferred:
        """Fires once every configured model finished loading (or failed to)."""
        return self.models.wait_loaded()

    @property
    def loaded(self) -> bool:
        return self.models.loaded

    def canonical(self, language: str) -> str | None:
        """The configured spelling of C{language}, or None if it cannot be transcribed."""
        return self.models.canonical(language)

    def transcriber(
        self,
        language: str,
        on_utterance: Callable[[Utterance], None],
        offset_ms: int = 0,
        on_failure: Callable[[Failure], None] | None = None,
        name: str = "",
    ) -> StreamTranscriber:
        """
        A stream's transcriber. C{name} (optional) names the stream in the
        lag metrics and log: its stream id.
        """
        return StreamTranscriber(
            self.models.recognizer_factory(language),
            self._threadpool,
            self._reactor,
            on_utterance,
            offset_ms=offset_ms,
            on_failure=on_failure,
            scheduler=self._scheduler,
            name=name,
        )
