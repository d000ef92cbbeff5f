"""
A speech engine whose transcribers are driven by the test: used to pin down
the call state machine deterministically. Real recognition is covered by the
end-to-end tests.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed


class ScriptedTranscriber:
    def __init__(self, language, on_utterance, offset_ms):
        self.language = language
        self.on_utterance = on_utterance
        self.offset_ms = offset_ms
        self.fed = bytearray()
        self.finishing: Deferred | None = None

    def feed(self, pcm: bytes) -> None:
        assert self.finishing is None, "fed after finish()"
        self.fed += pcm

    def say(self, utterance) -> None:
        self.on_utterance(utterance.shifted(self.offset_ms))

    def finish(self) -> Deferred:
        self.finishing = Deferred()
        return self.finishing


class ScriptedEngine:
    def __init__(self, languages=("en-US",), flush_at_once=True, loaded=True):
        self._languages = {tag.lower(): tag for tag in languages}
        self.loaded = loaded
        self.flush_at_once = flush_at_once
        self.transcribers: list[ScriptedTranscriber] = []

    def ready(self):
        return succeed(None)

    def canonical(self, language):
        return self._languages.get(language.lower())

    def transcriber(self, language, on_utterance, offset_ms=0):
        t = ScriptedTranscriber(language, on_utterance, offset_ms)
        if self.flush_at_once:
            original = t.finish
            t.finish = lambda: _fired(original())
        self.transcribers.append(t)
        return t


def _fired(d: Deferred) -> Deferred:
    d.callback(None)
    return d
