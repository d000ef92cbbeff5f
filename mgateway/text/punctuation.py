# -*- test-case-name: tests.test_text_format -*-
"""
Capitals and the final punctuation of an utterance.

An utterance is one sentence: its first word gets a capital and its end a
C{.}, or a C{?} when it opens with a question word of its language (Spanish
also opens it with C{¿}). No comma is ever guessed.
"""

from __future__ import annotations

from mgateway.text.languages import LanguageWords
from mgateway.text.pieces import Kind, Piece


def is_question(pieces: list[Piece], lang: LanguageWords) -> bool:
    words = tuple(p.content.lower() for p in pieces[:2])
    return words[0] in lang.question_starts or words in lang.question_pairs


def punctuate(pieces: list[Piece], lang: LanguageWords) -> list[Piece]:
    """Capitals and final punctuation, in place; the pieces are returned."""
    if not pieces:
        return pieces
    question = is_question(pieces, lang)
    for piece in pieces:
        if piece.kind is Kind.WORD and piece.content in lang.capitalised:
            piece.content = lang.capitalised[piece.content]
    first = pieces[0]
    if first.kind is Kind.WORD:
        first.content = first.content[:1].upper() + first.content[1:]
    if question:
        pieces[-1].after = "?"
        first.before = lang.question_open
    else:
        pieces[-1].after = "."
    return pieces
