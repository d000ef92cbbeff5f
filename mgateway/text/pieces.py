# -*- test-case-name: tests.test_text_format,tests.test_text_redaction -*-
"""
The unit the text stages work on: a piece of written text spanning one or
more recognised words, with what kind of thing it is.
"""

from __future__ import annotations

import enum

import attrs

from mgateway.transcript import Word


class Kind(enum.Enum):
    WORD = "word"
    #: A custom vocabulary phrase (written as the customer gave it).
    VOCABULARY = "vocabulary"
    #: A cardinal number spoken as a number ("two hundred fifty").
    NUMBER = "number"
    #: Digits spoken one by one ("one two three four"), phone numbers.
    DIGITS = "digits"
    ORDINAL = "ordinal"
    DECIMAL = "decimal"
    YEAR = "year"
    MONEY = "money"
    PERCENT = "percent"
    TIME = "time"


#: Kinds whose digits are never an identifier (a price, a time, ...).
NOT_IDENTIFIERS = frozenset({Kind.ORDINAL, Kind.DECIMAL, Kind.MONEY, Kind.PERCENT, Kind.TIME})


@attrs.define
class Piece:
    """
    @ivar spoken: the recogniser's words this piece stands for.
    """

    content: str
    start_ms: int
    end_ms: int
    kind: Kind = Kind.WORD
    spoken: tuple[str, ...] = ()
    before: str = ""
    after: str = ""

    @classmethod
    def of_word(cls, word: Word) -> Piece:
        return cls(word.text, word.start_ms, word.end_ms, Kind.WORD, (word.text,))

    @classmethod
    def merged(cls, pieces: list[Piece], content: str, kind: Kind) -> Piece:
        """One piece standing for several: it spans their times."""
        spoken = tuple(w for p in pieces for w in p.spoken)
        return cls(content, pieces[0].start_ms, pieces[-1].end_ms, kind, spoken)

    def written(self) -> str:
        return f"{self.before}{self.content}{self.after}"

    def to_word(self) -> Word:
        return Word(
            self.content, self.start_ms, self.end_ms,
            punctuation_after=self.after, punctuation_before=self.before,
        )


def pieces_of(words) -> list[Piece]:
    """One lowercase word piece per recognised word."""
    return [Piece.of_word(w) for w in words if w.text.strip()]


def text_of(pieces: list[Piece]) -> str:
    return " ".join(p.written() for p in pieces)
