# -*- test-case-name: tests.test_text_format -*-
"""
The words each language's text stages look for: smart formatting and
redaction are provided for English and Spanish (the guides' C{en-US} and
C{es-US}); other languages get the recogniser's words unchanged.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class LanguageWords:
    #: text2num's language code.
    code: str
    #: Words for the digits 0-9 (their text2num reading is checked apart).
    digits: frozenset[str]
    #: Spoken zero that text2num does not read ("oh" in "seven oh five").
    spoken_zero: frozenset[str]
    #: Currency words after an amount, and the symbol they are written with.
    currencies: dict[str, str]
    cents: frozenset[str]
    #: Words joining an amount and its cents ("and", "y").
    conjunctions: frozenset[str]
    #: Word sequences after a number that make it a percentage.
    percent: tuple[tuple[str, ...], ...]
    #: Word sequences after a time ("p m"), and how they are written.
    meridiems: dict[tuple[str, ...], str]
    #: Words that make "N" after an hour a full hour ("o'clock").
    full_hour: frozenset[str]
    #: First words (or pairs) of a question.
    question_starts: frozenset[str]
    question_pairs: frozenset[tuple[str, str]]
    #: Punctuation opening a question, if the language has one.
    question_open: str
    #: Words always written with a capital ("I").
    capitalised: dict[str, str]
    #: Phrases after which the next digits are sensitive, by redaction entity.
    cues: dict[tuple[str, ...], str]
    #: Spoken forms of the abbreviations of addresses.
    address_words: dict[str, tuple[str, ...]]
    #: Years are read as two numbers ("nineteen ninety nine").
    years_in_pairs: bool


ENGLISH = LanguageWords(
    code="en",
    digits=frozenset("zero one two three four five six seven eight nine".split()),
    spoken_zero=frozenset({"oh", "o"}),
    currencies={"dollars": "$", "dollar": "$", "bucks": "$", "euros": "€", "euro": "€"},
    cents=frozenset({"cents", "cent"}),
    conjunctions=frozenset({"and"}),
    percent=(("percent",), ("per", "cent")),
    meridiems={("a", "m"): "AM", ("am",): "AM", ("a.m.",): "AM",
               ("p", "m"): "PM", ("pm",): "PM", ("p.m.",): "PM"},
    full_hour=frozenset({"o'clock", "oclock"}),
    question_starts=frozenset(
        "what what's why how how's when where where's who who's whom whose which "
        "is isn't are aren't am was wasn't were weren't do don't does doesn't did didn't "
        "can can't could couldn't would wouldn't will won't should shouldn't shall "
        "may might have haven't has hasn't".split()
    ),
    question_pairs=frozenset(),
    question_open="",
    capitalised={"i": "I", "i'm": "I'm", "i'll": "I'll", "i've": "I've", "i'd": "I'd"},
    cues={
        ("pin",): "PIN", ("pin", "number"): "PIN", ("cvv",): "PIN", ("cvc",): "PIN",
        ("security", "code"): "PIN", ("passcode",): "PIN", ("zip", "code"): "PIN",
        ("card", "number"): "CREDIT_CARD_NUMBER", ("credit", "card"): "CREDIT_CARD_NUMBER",
        ("debit", "card"): "CREDIT_CARD_NUMBER",
        ("social", "security"): "SSN", ("ssn",): "SSN",
        ("phone", "number"): "PHONE_NUMBER",
        ("account", "number"): "TEN_DIGIT_NUMBER",
    },
    address_words={
        "n": ("north",), "s": ("south",), "e": ("east",), "w": ("west",),
        "blvd": ("boulevard",), "st": ("street", "saint"), "ave": ("avenue",),
        "rd": ("road",), "dr": ("drive", "doctor"), "ln": ("lane",), "ct": ("court",),
        "hwy": ("highway",), "pkwy": ("parkway",), "apt": ("apartment",),
        "ste": ("suite",), "pl": ("place",), "sq": ("square",),
    },
    years_in_pairs=True,
)

SPANISH = LanguageWords(
    code="es",
    digits=frozenset("cero uno una dos tres cuatro cinco seis siete ocho nueve".split()),
    spoken_zero=frozenset(),
    currencies={"dólares": "$", "dólar": "$", "dolares": "$", "dolar": "$",
                "pesos": "$", "peso": "$", "euros": "€", "euro": "€"},
    cents=frozenset({"centavos", "centavo", "céntimos", "céntimo"}),
    conjunctions=frozenset({"y", "con"}),
    percent=(("por", "ciento"),),
    meridiems={("a", "m"): "a. m.", ("p", "m"): "p. m."},
    full_hour=frozenset(),
    question_starts=frozenset(
        "qué cómo cuándo dónde adónde quién quiénes cuál cuáles cuánto cuánta "
        "cuántos cuántas".split()
    ),
    question_pairs=frozenset({("por", "qué"), ("para", "qué"), ("de", "dónde")}),
    question_open="¿",
    capitalised={},
    cues={
        ("pin",): "PIN", ("nip",): "PIN", ("código", "de", "seguridad"): "PIN",
        ("contraseña",): "PIN", ("código", "postal"): "PIN",
        ("número", "de", "tarjeta"): "CREDIT_CARD_NUMBER",
        ("tarjeta", "de", "crédito"): "CREDIT_CARD_NUMBER",
        ("tarjeta", "de", "débito"): "CREDIT_CARD_NUMBER",
        ("seguro", "social"): "SSN",
        ("número", "de", "teléfono"): "PHONE_NUMBER",
        ("número", "de", "cuenta"): "TEN_DIGIT_NUMBER",
    },
    address_words={
        "n": ("norte",), "s": ("sur",), "e": ("este",), "o": ("oeste",),
        "av": ("avenida",), "avda": ("avenida",), "c": ("calle",), "blvd": ("bulevar",),
        "apto": ("apartamento",),
    },
    years_in_pairs=False,
)

_BY_PREFIX = {"en": ENGLISH, "es": SPANISH}


def words_for(language: str | None) -> LanguageWords | None:
    """The tables of a language tag (C{en-US}, C{es-us}, ...), or None."""
    if not language:
        return None
    return _BY_PREFIX.get(language.lower().split("-")[0])
