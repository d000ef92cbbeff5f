"""
Smart formatting, custom vocabulary and detailed tokens: spoken words in,
the written text the customer reads out.
"""

from __future__ import annotations

import pytest

from mgateway.text.stage import TextStage
from mgateway.text.vocabulary import Phrase
from mgateway.transcript import Utterance
from mgateway.wire import transcript_message
from tests.support.text import Params, spoken

UNREDACTED = Params(redaction_output="unredacted")


def written(text: str, language: str = "en-US", phrases=()) -> str:
    stage = TextStage()
    params = Params(language=language, redaction_output="unredacted")
    return stage.write(spoken(text), params, stage.context("t", "c"), phrases).text


ENGLISH = [
    # The spec's own example of inverse text normalisation.
    ("twenty two", "22."),
    ("i am twenty two years old", "I am 22 years old."),
    ("one hundred and five", "105."),
    ("two thousand and twenty", "2020."),
    ("one point five", "1.5."),
    ("the twenty first of may", "The 21st of may."),
    # Money, the spec's vocabulary example said without vocabulary.
    ("twenty five dollars", "$25.00."),
    ("it costs twenty five dollars and fifty cents", "It costs $25.50."),
    ("fifty cents", "$0.50."),
    ("ten euros", "€10.00."),
    ("fifty percent", "50%."),
    ("five per cent", "5%."),
    ("at three thirty p m", "At 3:30 PM."),
    ("at three pm", "At 3 PM."),
    ("see you at nine o'clock", "See you at 9:00."),
    ("born in nineteen ninety nine", "Born in 1999."),
    # Digits one by one, phone numbers.
    ("my pin is one two three four", "My pin is 1234."),
    ("seven oh five", "705."),
    ("call five five five one two three four five six seven", "Call 555-123-4567."),
    ("one eight hundred", "1 800."),
    # Capitals and questions.
    ("i think i'm late", "I think I'm late."),
    ("what is your account number", "What is your account number?"),
    ("can you hear me", "Can you hear me?"),
    ("is that right", "Is that right?"),
]

#: What must stay words: lone small numbers, ordinals below the threshold,
#: words that only look like numbers.
ENGLISH_WORDS = [
    ("i have one dog", "I have one dog."),
    ("the first one", "The first one."),
    ("the second time", "The second time."),
    ("no one knows", "No one knows."),
    ("oh really", "Oh really."),
]

SPANISH = [
    ("veintidós", "22."),
    ("tengo veintidós años", "Tengo 22 años."),
    ("ciento veinte", "120."),
    ("dos mil veinte", "2020."),
    ("mi número es uno dos tres cuatro", "Mi número es 1234."),
    ("veinticinco dólares", "$25.00."),
    ("veinticinco dólares con cincuenta centavos", "$25.50."),
    ("veinticinco por ciento", "25%."),
    ("cuál es su número", "¿Cuál es su número?"),
    ("por qué no", "¿Por qué no?"),
    ("dónde vive usted", "¿Dónde vive usted?"),
]

SPANISH_WORDS = [
    ("tengo un perro", "Tengo un perro."),
    ("es la primera vez", "Es la primera vez."),
]


@pytest.mark.parametrize("said, expected", ENGLISH + ENGLISH_WORDS)
def test_english_spoken_to_written(said, expected):
    assert written(said) == expected


@pytest.mark.parametrize("said, expected", SPANISH + SPANISH_WORDS)
def test_spanish_spoken_to_written(said, expected):
    assert written(said, "es-US") == expected


def test_without_smart_formatting_the_text_is_the_recognisers_words():
    stage = TextStage()
    utterance = spoken("my pin is one two three four")
    out = stage.write(utterance, Params(smart_formatting=False, redaction_output="unredacted"),
                      stage.context("t", "c"))
    assert out == utterance


def test_a_language_without_formatting_rules_keeps_the_recognisers_words():
    stage = TextStage()
    utterance = Utterance("안녕하세요 일 이 삼 사", 0, 900)
    assert stage.write(utterance, Params(language="ko-KR"), stage.context("t", "c")) == utterance


# -- custom vocabulary ---------------------------------------------------------

#: The spec's updateVocabulary example.
SPEC_PHRASES = (
    Phrase("IEEE", ("I triple E",), "company"),
    Phrase("25.00", ("twenty five dollars",), "currency"),
    Phrase("HHilton", ("H Hilton", "Hilton Honors"), "company"),
    Phrase("Jon Snow", ("John Snow",), "name"),
    Phrase("717 N Shoreline Blvd", (), "address"),
)


@pytest.mark.parametrize("said, expected", [
    ("i am a member of i triple e", "I am a member of IEEE."),
    ("it is twenty five dollars", "It is 25.00."),
    ("my hilton honors number", "My HHilton number."),
    ("h hilton", "HHilton."),
    ("john snow called", "Jon Snow called."),
    # The address category: however the number and abbreviations are said.
    ("i live at seven one seven north shoreline boulevard", "I live at 717 N Shoreline Blvd."),
    ("i live at seven seventeen north shoreline boulevard", "I live at 717 N Shoreline Blvd."),
    ("seven hundred seventeen n shoreline blvd", "717 N Shoreline Blvd."),
    # The company category: an acronym spelled out.
    ("i e e e members", "IEEE members."),
    # Near misses stay as they were said.
    ("seven one eight north shoreline boulevard", "718 north shoreline boulevard."),
    ("john smith called", "John smith called."),
])
def test_vocabulary_phrases_are_written_as_given(said, expected):
    assert written(said, phrases=SPEC_PHRASES) == expected


def test_currency_category_matches_the_amount_however_said():
    phrases = (Phrase("$25.00", (), "currency"),)
    assert written("it is twenty five dollars", phrases=phrases) == "It is $25.00."
    assert written("twenty five dollars and fifty cents", phrases=phrases) == "$25.50."


def test_app_vocabulary_applies_with_the_sessions_own():
    stage = TextStage(vocabulary=lambda: (Phrase("ACME", ("a c m e",)),))
    out = stage.write(spoken("a c m e and i triple e"), UNREDACTED, stage.context("t", "c"), SPEC_PHRASES)
    assert out.text == "ACME and IEEE."


# -- detailed tokens -----------------------------------------------------------

def test_a_merged_token_spans_the_times_of_its_words():
    stage = TextStage()
    utterance = spoken("it is twenty two dollars")
    out = stage.write(utterance, UNREDACTED, stage.context("t", "c"))
    words = utterance.words
    tokens = transcript_message(out, detailed_tokens=True)["utterance"][0]["tokens"]
    assert tokens == [
        {"content": "It", "start": words[0].start_ms, "end": words[0].end_ms},
        {"content": "is", "start": words[1].start_ms, "end": words[1].end_ms},
        {"content": "$22.00", "start": words[2].start_ms, "end": words[4].end_ms,
         "punctuationAfter": "."},
    ]


def test_spanish_question_tokens_carry_both_marks():
    stage = TextStage()
    out = stage.write(spoken("cuál es"), Params(language="es-US", redaction_output="unredacted"),
                      stage.context("t", "c"))
    tokens = transcript_message(out, detailed_tokens=True)["utterance"][0]["tokens"]
    assert tokens[0]["punctuationBefore"] == "¿" and tokens[0]["content"] == "Cuál"
    assert tokens[-1]["punctuationAfter"] == "?"
    assert out.text == "¿Cuál es?"


def test_the_text_is_the_tokens_with_their_punctuation():
    stage = TextStage()
    out = stage.write(spoken("what is twenty two"), UNREDACTED, stage.context("t", "c"))
    rebuilt = " ".join(w.punctuation_before + w.text + w.punctuation_after for w in out.words)
    assert rebuilt == out.text == "What is 22?"
