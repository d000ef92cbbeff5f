# -*- test-case-name: tests.test_text_format,tests.test_text_wiring,tests.test_text_end_to_end -*-
"""
The text stage: the one function every ingress's utterances pass through
between the recogniser and the sinks, and the per-conversation state it
keeps.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Iterable

import attrs
from prometheus_client import Counter

from mgateway.text import numbers, punctuation, vocabulary
from mgateway.text.languages import words_for
from mgateway.text.pieces import Piece, pieces_of, text_of
from mgateway.text.redaction import RedactionContext, default_enabled, redact
from mgateway.transcript import Utterance, Word

REDACTIONS = Counter(
    "asapp_mg_redactions", "Sensitive entities redacted in transcripts, by entity.", ["entity"]
)

#: Conversations whose context is kept (least recently used ones are dropped).
MAX_CONVERSATIONS = 10000


@attrs.define
class ConversationText:
    """What the text stages remember of one conversation, across both participants."""

    redaction: RedactionContext = attrs.field(factory=RedactionContext)


def _words(utterance: Utterance) -> tuple[Word, ...]:
    if utterance.words:
        return utterance.words
    # A recogniser that gives no word times: every word spans the utterance.
    return tuple(Word(w, utterance.start_ms, utterance.end_ms) for w in utterance.text.split())


class TextStage:
    """
    @param entities: the redaction entities switched on, read at every
        utterance so that a change through the Configuration API applies at once.
    @param vocabulary: the Configuration API's phrases (every call and session).
    @param force_redaction: the config forbids unredacted output (4094, 400-202).
    """

    def __init__(
        self,
        entities: Callable[[], frozenset[str]] = default_enabled,
        vocabulary: Callable[[], Iterable] = tuple,
        force_redaction: bool = False,
    ):
        self._entities = entities
        self._vocabulary = vocabulary
        self.force_redaction = force_redaction
        self._contexts: OrderedDict[tuple[str, str], ConversationText] = OrderedDict()

    def context(self, namespace: str, conversation_id: str) -> ConversationText:
        """The conversation's text context, shared by all its streams."""
        key = (namespace, conversation_id)
        found = self._contexts.pop(key, None) or ConversationText()
        self._contexts[key] = found
        while len(self._contexts) > MAX_CONVERSATIONS:
            self._contexts.popitem(last=False)
        return found

    def refusal(self, params) -> str | None:
        """Why these parameters cannot be served (None: they can)."""
        if self.force_redaction and params.redaction_output != "redacted":
            return (
                "redactionOutput cannot be unredacted or redacted_and_unredacted: "
                "the gateway is configured to always redact"
            )
        return None

    def write(self, utterance: Utterance, params, context: ConversationText,
              phrases: Iterable = (), speaker: str | None = None) -> Utterance:
        """
        The utterance as the customer reads it: vocabulary, smart formatting
        and redaction as C{params} (a direct C{startStream} or a call's
        C{autotranscribeParams}) asked.

        @param phrases: the session's own vocabulary (C{updateVocabulary}),
            on top of the gateway's.
        @param speaker: the participant's role.
        """
        lang = words_for(params.language)
        if lang is None or not getattr(params, "smart_formatting", True):
            return utterance
        all_phrases = [*self._vocabulary(), *phrases]
        pieces = vocabulary.by_sound(pieces_of(_words(utterance)), all_phrases)
        pieces = numbers.write(pieces, lang)
        pieces = vocabulary.by_category(pieces, all_phrases, lang)
        pieces = punctuation.punctuate(pieces, lang)
        if not pieces:
            return utterance
        clear_text, clear_words = text_of(pieces), _tokens(pieces)
        # Redaction always runs, so that the conversation's context is the
        # same whatever each participant's stream asked for.
        for entity in redact(pieces, lang, self._entities(), context.redaction, speaker):
            REDACTIONS.labels(entity=entity).inc()
        output = params.redaction_output
        if output == "unredacted":
            return attrs.evolve(utterance, text=clear_text, words=clear_words)
        return attrs.evolve(
            utterance,
            text=text_of(pieces),
            words=_tokens(pieces),
            unredacted_text=clear_text if output == "redacted_and_unredacted" else None,
        )


def _tokens(pieces: list[Piece]) -> tuple[Word, ...]:
    return tuple(p.to_word() for p in pieces)
