# -*- test-case-name: tests.test_text_format -*-
"""
Inverse text normalisation of numbers: spoken numbers become digits.

C{text2num} finds the numbers in the word pieces (cardinals, ordinals,
decimals; its own rules keep a lone small number such as "one dog" in
words). On top of what it finds, the rules here only decide how adjacent
numbers and unit words are written: money, percentages, times, years,
digits spoken one by one and phone numbers. No number is parsed here.
"""

from __future__ import annotations

from text_to_num import find_numbers

from mgateway.text.languages import LanguageWords
from mgateway.text.pieces import Kind, Piece

#: text2num's threshold below which ordinals stay in words ("first", "second").
_ORDINAL_THRESHOLD = 3


class _Token:
    """A piece as text2num's C{Token} protocol sees it."""

    def __init__(self, text: str, frozen: bool):
        self._text = text
        self._frozen = frozen

    def text(self) -> str:
        return self._text

    def nt_separated(self, previous) -> bool:
        return False

    def not_a_number_part(self) -> bool:
        return self._frozen


def find(pieces: list[Piece], lang: LanguageWords) -> list[Piece]:
    """Pieces with every number text2num finds merged into one number piece."""
    tokens = []
    for i, piece in enumerate(pieces):
        frozen = piece.kind is not Kind.WORD or _in_unit_phrase(pieces, i, lang)
        text = piece.content
        if text in lang.spoken_zero and _next_to_digit(pieces, i, lang):
            text = "zero"
        tokens.append(_Token(text, frozen))
    found = find_numbers(tokens, lang.code, _ORDINAL_THRESHOLD)
    out: list[Piece] = []
    position = 0
    for occurrence in found:
        out.extend(pieces[position:occurrence.start])
        span = pieces[occurrence.start:occurrence.end]
        out.append(Piece.merged(span, occurrence.text, _kind(occurrence, span, lang)))
        position = occurrence.end
    out.extend(pieces[position:])
    return out


def _in_unit_phrase(pieces: list[Piece], i: int, lang: LanguageWords) -> bool:
    """A unit word that text2num would read as a number ("por ciento", "centavos")."""
    if pieces[i].content in lang.cents or pieces[i].content in lang.currencies:
        return True
    for phrase in lang.percent:
        for offset in range(len(phrase)):
            start = i - offset
            if start >= 0 and _words_at(pieces, start, phrase):
                return len(phrase) > 1
    return False


def _next_to_digit(pieces: list[Piece], i: int, lang: LanguageWords) -> bool:
    neighbours = [pieces[j].content for j in (i - 1, i + 1) if 0 <= j < len(pieces)]
    return any(n in lang.digits for n in neighbours)


def _kind(occurrence, span: list[Piece], lang: LanguageWords) -> Kind:
    if occurrence.is_ordinal:
        return Kind.ORDINAL
    if not occurrence.text.isdigit():
        return Kind.DECIMAL
    if all(p.content in lang.digits or p.content in lang.spoken_zero for p in span):
        return Kind.DIGITS
    return Kind.NUMBER


def _words_at(pieces: list[Piece], i: int, words: tuple[str, ...]) -> bool:
    if i + len(words) > len(pieces):
        return False
    return all(
        pieces[i + k].kind is Kind.WORD and pieces[i + k].content == w
        for k, w in enumerate(words)
    )


def _is_amount(piece: Piece) -> bool:
    return piece.kind in (Kind.NUMBER, Kind.DIGITS, Kind.DECIMAL)


def _is_integer(piece: Piece) -> bool:
    return piece.kind in (Kind.NUMBER, Kind.DIGITS) and piece.content.isdigit()


def write(pieces: list[Piece], lang: LanguageWords) -> list[Piece]:
    """Money, percentages, times, years, then digit strings."""
    pieces = find(pieces, lang)
    out: list[Piece] = []
    i = 0
    while i < len(pieces):
        for rule in (_money, _cents, _percent, _time, _year):
            taken = rule(pieces, i, lang)
            if taken is not None:
                piece, i = taken
                out.append(piece)
                break
        else:
            out.append(pieces[i])
            i += 1
    return _digit_strings(out)


def _money(pieces, i, lang):
    amount = pieces[i]
    if not _is_amount(amount) or i + 1 >= len(pieces):
        return None
    symbol = lang.currencies.get(pieces[i + 1].content) if pieces[i + 1].kind is Kind.WORD else None
    if symbol is None:
        return None
    end = i + 2
    cents = 0
    if "." in amount.content:
        whole, fraction = amount.content.split(".", 1)
        cents = int((fraction + "00")[:2])
    else:
        whole = amount.content
        at = end + 1 if _words_in(pieces, end, lang.conjunctions) else end
        if at + 1 < len(pieces) and _is_integer(pieces[at]) and int(pieces[at].content) < 100 \
                and _words_in(pieces, at + 1, lang.cents):
            cents, end = int(pieces[at].content), at + 2
    content = f"{symbol}{int(whole)}.{cents:02d}"
    return Piece.merged(pieces[i:end], content, Kind.MONEY), end


def _cents(pieces, i, lang):
    amount = pieces[i]
    if not _is_integer(amount) or int(amount.content) >= 100 or i + 1 >= len(pieces):
        return None
    unit = pieces[i + 1]
    if unit.kind is not Kind.WORD or unit.content not in lang.cents:
        return None
    symbol = next(iter(lang.currencies.values()))
    return Piece.merged(pieces[i:i + 2], f"{symbol}0.{int(amount.content):02d}", Kind.MONEY), i + 2


def _words_in(pieces, i, words) -> bool:
    return i < len(pieces) and pieces[i].kind is Kind.WORD and pieces[i].content in words


def _percent(pieces, i, lang):
    if not _is_amount(pieces[i]):
        return None
    for phrase in lang.percent:
        if _words_at(pieces, i + 1, phrase):
            end = i + 1 + len(phrase)
            return Piece.merged(pieces[i:end], f"{pieces[i].content}%", Kind.PERCENT), end
    return None


def _meridiem(pieces, i, lang):
    for words, written in lang.meridiems.items():
        if _words_at(pieces, i, words):
            return written, i + len(words)
    return None


def _time(pieces, i, lang):
    """'three thirty p m' -> 3:30 PM, 'three p m' -> 3 PM, 'three o'clock' -> 3:00."""
    hour = pieces[i]
    if not _is_integer(hour) or not 1 <= int(hour.content) <= 12 or len(hour.content) > 2:
        return None
    minutes = None
    after = i + 1
    if after < len(pieces) and _is_integer(pieces[after]) and len(pieces[after].content) == 2 \
            and int(pieces[after].content) < 60:
        minutes, after = pieces[after].content, after + 1
    meridiem = _meridiem(pieces, after, lang)
    if meridiem is not None:
        written, end = meridiem
        clock = f"{int(hour.content)}:{minutes}" if minutes else f"{int(hour.content)}"
        return Piece.merged(pieces[i:end], f"{clock} {written}", Kind.TIME), end
    if minutes is None and _words_in(pieces, after, lang.full_hour):
        return Piece.merged(pieces[i:after + 1], f"{int(hour.content)}:00", Kind.TIME), after + 1
    return None


def _year(pieces, i, lang):
    """'nineteen ninety nine' (two numbers) -> 1999, in languages that say years so."""
    if not lang.years_in_pairs or i + 1 >= len(pieces):
        return None
    century, rest = pieces[i], pieces[i + 1]
    if century.kind is not Kind.NUMBER or rest.kind is not Kind.NUMBER:
        return None
    if not (century.content.isdigit() and rest.content.isdigit()):
        return None
    if not 15 <= int(century.content) <= 20 or not 10 <= int(rest.content) <= 99:
        return None
    return Piece.merged(pieces[i:i + 2], century.content + rest.content, Kind.YEAR), i + 2


def _digit_strings(pieces: list[Piece]) -> list[Piece]:
    """Digits spoken one by one become one digit string; 10 or 11 of them a phone number."""
    out: list[Piece] = []
    run: list[Piece] = []
    for piece in [*pieces, None]:
        if piece is not None and piece.kind is Kind.DIGITS:
            run.append(piece)
            continue
        if run:
            digits = "".join(p.content for p in run)
            out.append(Piece.merged(run, phone_format(digits), Kind.DIGITS))
            run = []
        if piece is not None:
            out.append(piece)
    return out


def phone_format(digits: str) -> str:
    """555-123-4567 and 1-555-123-4567; other digit strings as they are."""
    if len(digits) == 10:
        return f"{digits[:3]}-{digits[3:6]}-{digits[6:]}"
    if len(digits) == 11 and digits[0] == "1":
        return f"1-{digits[1:4]}-{digits[4:7]}-{digits[7:]}"
    return digits
