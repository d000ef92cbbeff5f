"""
A recogniser that "hears" English sentences given by the test: the packaged
Korean model cannot say "one two three four", and the text stages need English
words. Everything around it (ingress, call registry, ASR thread pool,
transcriber, sinks) is the real gateway; only the recogniser is scripted.
"""

from __future__ import annotations

import threading

from zope.interface import implementer

from mgateway.interfaces import IRecognizer
from mgateway.transcript import Utterance, Word

#: Bytes of 8 kHz 16-bit PCM per millisecond.
BYTES_PER_MS = 16


@implementer(IRecognizer)
class ScriptedWords:
    """
    Says the next sentence each time it has been fed C{every_ms} of audio
    (the rest on L{finish}), its words spread evenly over that audio. Keeps
    every byte it was fed in C{heard}.
    """

    def __init__(self, sentences: list[str], every_ms: int = 1000):
        self._sentences = list(sentences)
        self._every = every_ms * BYTES_PER_MS
        self._lock = threading.Lock()
        self.heard = bytearray()
        self._said_up_to = 0

    def accept(self, pcm):
        with self._lock:
            self.heard += pcm
            out = []
            while self._sentences and len(self.heard) - self._said_up_to >= self._every:
                out.append(self._say(self._said_up_to, self._said_up_to + self._every))
                self._said_up_to += self._every
            return out

    def finish(self):
        with self._lock:
            out = []
            while self._sentences:
                end = max(len(self.heard), self._said_up_to + BYTES_PER_MS * 10)
                out.append(self._say(self._said_up_to, end))
                self._said_up_to = end
            return out

    def _say(self, start_byte: int, end_byte: int) -> Utterance:
        sentence = self._sentences.pop(0)
        words = sentence.split()
        start, end = start_byte // BYTES_PER_MS, end_byte // BYTES_PER_MS
        step = (end - start) // len(words)
        timed = tuple(Word(w, start + i * step, start + (i + 1) * step - 1) for i, w in enumerate(words))
        return Utterance(sentence, start, end, timed)


class ScriptedLanguage:
    """
    Makes C{en-US} available in a running gateway, each new recogniser
    saying the next script; C{recognizers} keeps them in the order made.
    """

    def __init__(self, monkeypatch, service, scripts: list[list[str]], every_ms: int = 1000):
        self.recognizers: list[ScriptedWords] = []
        self._scripts = list(scripts)
        models = service.models
        canonical, factory = models.canonical, models.recognizer_factory

        def scripted_canonical(tag):
            return "en-US" if tag.lower() == "en-us" else canonical(tag)

        def scripted_factory(tag, sample_rate=8000):
            if tag.lower() != "en-us":
                return factory(tag, sample_rate)
            return self._next

        self._every = every_ms
        monkeypatch.setattr(models, "canonical", scripted_canonical)
        monkeypatch.setattr(models, "recognizer_factory", scripted_factory)

    def _next(self) -> ScriptedWords:
        recognizer = ScriptedWords(self._scripts.pop(0) if self._scripts else [], self._every)
        self.recognizers.append(recognizer)
        return recognizer
