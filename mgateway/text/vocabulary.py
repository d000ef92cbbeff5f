# -*- test-case-name: tests.test_text_format -*-
"""
Custom vocabulary: where the recogniser's words say a phrase, the phrase is
written as the customer spelled it.

A phrase is found by its C{soundsLike} spoken forms and by its own words
(lowercase), in the recogniser's words; then, once numbers are digits, by
what its C{category} implies: a number in an address, a name or a number
phrase matches however it was said ("seven one seven", "seven seventeen",
"seven hundred seventeen" all match C{717}), an address abbreviation matches
the word it stands for (C{N} north, C{Blvd} boulevard), a capitalised acronym
its letters one by one (C{IEEE} "i e e e"), an amount of the C{currency}
category the same amount of money.
"""

from __future__ import annotations

import re
from typing import Callable, Iterable, Optional

import attrs

from mgateway.text.languages import LanguageWords
from mgateway.text.pieces import Kind, Piece

CATEGORIES = ("address", "name", "number", "company", "currency")

_NUMERIC = (Kind.NUMBER, Kind.DIGITS, Kind.YEAR)


@attrs.frozen
class Phrase:
    """One custom vocabulary entry (the spec's C{phrase}, C{soundsLike}, C{category})."""

    phrase: str
    sounds_like: tuple[str, ...] = ()
    category: str | None = None


def _words(text: str) -> tuple[str, ...]:
    return tuple(re.findall(r"[\w']+", text.lower()))


def _spoken_forms(phrase) -> list[tuple[str, ...]]:
    forms = [_words(s) for s in phrase.sounds_like]
    own = _words(phrase.phrase)
    if own and not any(ch.isdigit() for ch in phrase.phrase):
        forms.append(own)
    return [f for f in forms if f]


def by_sound(pieces: list[Piece], phrases: Iterable) -> list[Piece]:
    """Replace every spoken form of a phrase among the word pieces (longest first)."""
    forms = sorted(
        ((form, p.phrase) for p in phrases for form in _spoken_forms(p)),
        key=lambda item: -len(item[0]),
    )
    return _replace(pieces, [([_word_slot((w,)) for w in form], written) for form, written in forms])


# A slot matches pieces from index i on and says where it stopped (None: no match).
Slot = Callable[[list, int], Optional[int]]


def _word_slot(choices: tuple[str, ...]) -> Slot:
    def match(pieces, i):
        if i < len(pieces) and pieces[i].kind is Kind.WORD and pieces[i].content in choices:
            return i + 1
        return None
    return match


def _letters_slot(letters: str) -> Slot:
    def match(pieces, i):
        span = pieces[i:i + len(letters)]
        if len(span) == len(letters) and all(
            p.kind is Kind.WORD and p.content == ch for p, ch in zip(span, letters.lower())
        ):
            return i + len(letters)
        return None
    return match


def _digits_slot(digits: str) -> Slot:
    def match(pieces, i):
        said = ""
        while i < len(pieces) and pieces[i].kind in _NUMERIC and len(said) < len(digits):
            said += pieces[i].content.replace("-", "")
            i += 1
        return i if said == digits else None
    return match


def _money_slot(amount: str) -> Slot:
    def match(pieces, i):
        if i < len(pieces) and pieces[i].kind is Kind.MONEY and pieces[i].content[1:] == amount:
            return i + 1
        return None
    return match


def _slots(phrase, lang: LanguageWords) -> list[Slot] | None:
    category = phrase.category
    if category is None:
        return None
    if category == "currency":
        number = re.fullmatch(r"\D?(\d+)(?:\.(\d{1,2}))?", phrase.phrase.strip())
        if number is None:
            return None
        return [_money_slot(f"{int(number.group(1))}.{(number.group(2) or '0').ljust(2, '0')}")]
    slots: list[Slot] = []
    for part in re.findall(r"[\w']+", phrase.phrase):
        if part.isdigit():
            slots.append(_digits_slot(part))
        elif category == "address" and part.lower() in lang.address_words:
            slots.append(_word_slot((part.lower(), *lang.address_words[part.lower()])))
        elif part.isupper() and len(part) > 1 and category in ("company", "name"):
            slots.append(_either(_word_slot((part.lower(),)), _letters_slot(part)))
        else:
            slots.append(_word_slot((part.lower(),)))
    return slots


def _either(first: Slot, second: Slot) -> Slot:
    def match(pieces, i):
        found = first(pieces, i)
        return found if found is not None else second(pieces, i)
    return match


def by_category(pieces: list[Piece], phrases: Iterable, lang: LanguageWords) -> list[Piece]:
    """Replace the category-implied forms of phrases, once numbers are digits."""
    return _replace(pieces, [(s, p.phrase) for p in phrases if (s := _slots(p, lang))])


def _replace(pieces: list[Piece], matchers: list[tuple[list[Slot], str]]) -> list[Piece]:
    """Each span the first matcher's slots match, in turn, becomes its phrase."""
    if not matchers:
        return pieces
    out: list[Piece] = []
    i = 0
    while i < len(pieces):
        for slots, written in matchers:
            end = i
            for slot in slots:
                end = slot(pieces, end)
                if end is None:
                    break
            if end is not None and end > i:
                out.append(Piece.merged(pieces[i:end], written, Kind.VOCABULARY))
                i = end
                break
        else:
            out.append(pieces[i])
            i += 1
    return out
