# -*- test-case-name: tests.test_text_redaction -*-
"""
Redaction: sensitive numbers in the written text become C{#}, one per
character.

The policy is the guides' default: card numbers (Luhn-valid runs of 13 to 19
digits), SSNs and any 9-digit number always; 3- and 4-digit numbers (PINs,
CVVs), 10-digit numbers and phone numbers by default; e-mail addresses off
for voice. An entity is switched per app through the Configuration API or
the config file; the ones that are always on cannot be switched off.

A run is a sequence of adjacent numeric pieces ("41 11 11 11", "555-123-4567");
prices, percentages, times, ordinals and decimals are never part of one. What
the run is, is decided with the conversation's context (L{RedactionContext}),
shared by both participants:

 - digits that ended the previous utterance (not redacted), of the
   conversation or of the same speaker, and the digits this utterance starts
   with are one run: the second half of a card number said in two utterances
   is redacted (the first half was delivered already and, alone, was not
   sensitive), even when the other participant spoke in between;
 - a cue ("what's your PIN", "card number", "social security") makes every run
   of the next utterances sensitive, whoever speaks them.

A lone cardinal ("two hundred fifty boxes") or year is a quantity, not a PIN:
3- and 4-digit numbers are those said digit by digit or in groups ("one two
three four", "twelve thirty four"), or after a cue.
"""

from __future__ import annotations

import re

import attrs

from mgateway.text.languages import LanguageWords
from mgateway.text.pieces import NOT_IDENTIFIERS, Kind, Piece


@attrs.frozen
class Entity:
    id: str
    description: str
    #: Default of each policy (C{voice} is the one this gateway applies).
    voice: bool
    required: bool = False


ENTITIES = (
    Entity("CREDIT_CARD_NUMBER", "Card numbers: Luhn-valid runs of 13 to 19 digits", True, True),
    Entity("SSN", "Social security numbers", True, True),
    Entity("NINE_DIGIT_NUMBER", "Any 9-digit number", True, True),
    Entity("PIN", "3- and 4-digit numbers: PINs, CVVs, security codes", True),
    Entity("TEN_DIGIT_NUMBER", "Any 10-digit number (account numbers)", True),
    Entity("PHONE_NUMBER", "Phone numbers (7 or 11 digits, or written as one)", True),
    Entity("EMAIL", "E-mail addresses", False),
)
ENTITY_IDS = tuple(e.id for e in ENTITIES)
REQUIRED = frozenset(e.id for e in ENTITIES if e.required)

#: How many utterances after a cue are sensitive.
CUE_UTTERANCES = 2
#: Digits kept from the end of an utterance: enough to complete a 19-digit card.
_CARRY_DIGITS = 18

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}")


def default_enabled() -> frozenset[str]:
    return frozenset(e.id for e in ENTITIES if e.voice)


def luhn_valid(digits: str) -> bool:
    total = 0
    for position, ch in enumerate(reversed(digits)):
        d = int(ch)
        if position % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def has_card(digits: str, fresh_from: int = 0) -> bool:
    """Whether a window of 13-19 digits ending at or after C{fresh_from} is Luhn-valid."""
    for end in range(max(fresh_from + 1, 13), len(digits) + 1):
        for length in range(13, min(19, end) + 1):
            if luhn_valid(digits[end - length:end]):
                return True
    return False


@attrs.define
class RedactionContext:
    """What redaction remembers of a conversation (both participants)."""

    #: Unredacted digits that ended the last utterance.
    trailing_digits: str = ""
    #: The same, of the last utterance of each speaker.
    trailing_by_speaker: dict = attrs.field(factory=dict)
    #: The entity a cue armed, and for how many more utterances.
    cue: str | None = None
    cue_left: int = 0


def _numeric(piece: Piece) -> bool:
    if piece.kind in NOT_IDENTIFIERS:
        return False
    return any(ch.isdigit() for ch in piece.content) and all(
        ch.isdigit() or ch == "-" for ch in piece.content
    )


def _runs(pieces: list[Piece]) -> list[tuple[int, int]]:
    runs, start = [], None
    for i, piece in enumerate([*pieces, None]):
        if piece is not None and _numeric(piece):
            start = i if start is None else start
        elif start is not None:
            runs.append((start, i))
            start = None
    return runs


def _entity(run: list[Piece], digits: str, carried: str, speakers: str, cue: str | None,
            enabled: frozenset[str]) -> str | None:
    combined = carried + digits
    if has_card(combined, len(carried)) or has_card(speakers + digits, len(speakers)):
        return "CREDIT_CARD_NUMBER"
    if cue in enabled:
        return cue
    length = len(combined)
    if length == 9:
        return "SSN" if cue == "SSN" or _written_as_ssn(run) else "NINE_DIGIT_NUMBER"
    if length == 10 and "TEN_DIGIT_NUMBER" in enabled:
        return "TEN_DIGIT_NUMBER"
    phone = length in (7, 11) or (len(run) == 1 and "-" in run[0].content)
    if phone and "PHONE_NUMBER" in enabled:
        return "PHONE_NUMBER"
    quantity = len(run) == 1 and run[0].kind in (Kind.NUMBER, Kind.YEAR, Kind.VOCABULARY) and not carried
    if length in (3, 4) and not quantity and "PIN" in enabled:
        return "PIN"
    return None


def _written_as_ssn(run: list[Piece]) -> bool:
    return len(run) == 1 and re.fullmatch(r"\d{3}-\d{2}-\d{4}", run[0].content) is not None


def _cue_in(pieces: list[Piece], lang: LanguageWords) -> tuple[int, str] | None:
    """The last cue among the word pieces: (index after it, entity)."""
    words = [p.content.lower() if p.kind in (Kind.WORD, Kind.VOCABULARY) else None for p in pieces]
    found = None
    for i in range(len(words)):
        for phrase, entity in lang.cues.items():
            if tuple(words[i:i + len(phrase)]) == phrase:
                found = (i + len(phrase), entity)
    return found


def _mask(piece: Piece) -> None:
    piece.content = "#" * len(piece.content)


def redact(pieces: list[Piece], lang: LanguageWords, enabled: frozenset[str],
           context: RedactionContext, speaker: str | None = None) -> list[str]:
    """
    Mask the sensitive pieces in place, updating the conversation's context.

    @param speaker: who said it (the role), for the digits each speaker left off at.

    @return: the entities redacted, for counting (never their text).
    """
    cue, cue_left = (context.cue, context.cue_left) if context.cue_left > 0 else (None, 0)
    found_cue = _cue_in(pieces, lang)
    redacted: list[str] = []
    trailing = speakers_trailing = ""
    for start, end in _runs(pieces):
        run = pieces[start:end]
        digits = "".join(ch for p in run for ch in p.content if ch.isdigit())
        carried = context.trailing_digits if start == 0 else ""
        speakers = context.trailing_by_speaker.get(speaker, "") if start == 0 else ""
        active = cue
        if found_cue is not None and start >= found_cue[0]:
            active = found_cue[1]
        entity = _entity(run, digits, carried, speakers, active, enabled)
        if entity is not None:
            redacted.append(entity)
            for piece in run:
                _mask(piece)
        elif end == len(pieces):
            trailing = (carried + digits)[-_CARRY_DIGITS:]
            speakers_trailing = (speakers + digits)[-_CARRY_DIGITS:]
    if "EMAIL" in enabled:
        redacted.extend(_redact_emails(pieces))
    context.trailing_digits = trailing
    context.trailing_by_speaker[speaker] = speakers_trailing
    if found_cue is not None:
        context.cue, context.cue_left = found_cue[1], CUE_UTTERANCES
    else:
        context.cue_left = max(0, cue_left - 1)
    return redacted


def _redact_emails(pieces: list[Piece]) -> list[str]:
    """Written addresses, and spoken ones: "john dot smith at example dot com"."""
    found = []
    for piece in pieces:
        if _EMAIL.fullmatch(piece.content):
            _mask(piece)
            found.append("EMAIL")
    words = [p.content if p.kind is Kind.WORD else None for p in pieces]
    for at, word in enumerate(words):
        if word != "at" or at == 0:
            continue
        start = at - 1
        while start >= 2 and words[start - 1] == "dot" and words[start - 2]:
            start -= 2
        end = at + 2
        while end + 1 < len(words) and words[end] == "dot" and words[end + 1]:
            end += 2
        if end > at + 3 and words[at + 1] and words[start]:
            for piece in pieces[start:end]:
                _mask(piece)
            found.append("EMAIL")
    return found

