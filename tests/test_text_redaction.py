"""
Redaction on by default: each sensitive entity, context across utterances and
participants, what must stay, and a property over every split of a card
number into utterances.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mgateway.text.redaction import ENTITY_IDS, REQUIRED, default_enabled, has_card, luhn_valid
from mgateway.text.stage import TextStage
from tests.support.text import Params, spoken

REDACTED = Params()
BOTH = Params(redaction_output="redacted_and_unredacted")

DIGIT_WORDS = "zero one two three four five six seven eight nine".split()
TENS = {2: "twenty", 3: "thirty", 4: "forty", 5: "fifty", 6: "sixty", 7: "seventy", 8: "eighty", 9: "ninety"}
TEENS = "ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()

#: Test card numbers of the card networks (Luhn-valid).
VISA = "4111111111111111"
AMEX = "378282246310005"


def say_digits(digits: str) -> str:
    return " ".join(DIGIT_WORDS[int(d)] for d in digits)


def say_pair(pair: str) -> str:
    """Two digits said as a number ("forty one"), or one by one when they start with 0."""
    n = int(pair)
    if pair[0] == "0":
        return say_digits(pair)
    if n < 20:
        return TEENS[n - 10]
    return TENS[n // 10] + ("" if n % 10 == 0 else " " + DIGIT_WORDS[n % 10])


def conversation(*utterances: str, params=REDACTED, stage=None) -> list[str]:
    """The texts delivered for utterances of one conversation, in order."""
    stage = stage or TextStage()
    context = stage.context("siprec", "call-1")
    return [stage.write(spoken(u), params, context).text for u in utterances]


def test_luhn():
    assert luhn_valid(VISA) and luhn_valid(AMEX)
    assert not luhn_valid("4111111111111112")
    assert has_card("99" + VISA + "9")
    assert not has_card(VISA, fresh_from=len(VISA))


def test_the_default_policy():
    assert REQUIRED == {"CREDIT_CARD_NUMBER", "SSN", "NINE_DIGIT_NUMBER"}
    assert default_enabled() == set(ENTITY_IDS) - {"EMAIL"}


@pytest.mark.parametrize("said, expected", [
    # Card numbers: digit by digit and in groups.
    (f"my card is {say_digits(VISA)}", "My card is ################."),
    ("my card is " + " ".join(say_pair(VISA[i:i + 2]) for i in range(0, 16, 2)),
     "My card is ## ## ## ## ## ## ## ##."),
    (f"it is {say_digits(AMEX)}", "It is ###############."),
    # SSN and any other 9-digit number.
    ("my social is one two three four five six seven eight nine", "My social is #########."),
    ("the reference is nine eight seven six five four three two one", "The reference is #########."),
    # PINs and CVVs: 3 and 4 digits said one by one or in groups.
    ("my pin is one two three four", "My pin is ####."),
    ("the code on the back is seven three one", "The code on the back is ###."),
    ("it is twelve thirty four", "It is ## ##."),
    # 10-digit numbers and phone numbers.
    ("call me at five five five one two three four five six seven", "Call me at ############."),
    ("my number is one two three four five six seven", "My number is #######."),
])
def test_each_default_entity_is_redacted(said, expected):
    assert conversation(said) == [expected]


@pytest.mark.parametrize("said, expected", [
    ("it costs twenty five dollars and fifty cents", "It costs $25.50."),
    ("it is one thousand two hundred dollars", "It is $1200.00."),
    ("see you at three thirty p m", "See you at 3:30 PM."),
    ("i need two hundred fifty boxes", "I need 250 boxes."),
    ("we shipped one thousand five hundred units", "We shipped 1500 units."),
    ("that was in nineteen ninety nine", "That was in 1999."),
    ("it went up fifteen percent", "It went up 15%."),
    ("the twenty first of may", "The 21st of may."),
    ("i have two kids and one dog", "I have two kids and one dog."),
    ("it is forty two", "It is 42."),
    ("one point two five", "1.25."),
])
def test_times_prices_and_quantities_stay(said, expected):
    assert conversation(said) == [expected]


def test_a_card_number_split_over_two_utterances():
    first, second = say_digits(VISA[:8]), say_digits(VISA[8:])
    assert conversation(first, second) == ["41111111.", "########."]


def test_a_card_number_split_between_speakers():
    """Agent reads back half, customer says the rest: one conversation, one context."""
    stage = TextStage()
    context = stage.context("siprec", "call-1")
    agent = stage.write(spoken(f"so far {say_digits(VISA[:8])}"), REDACTED, context)
    customer = stage.write(spoken(say_digits(VISA[8:])), REDACTED, context)
    assert agent.text == "So far 41111111."
    assert customer.text == "########."


def test_a_card_number_resumed_after_the_other_participant_spoke():
    stage = TextStage()
    context = stage.context("siprec", "call-1")
    said = [("customer", f"it is {say_digits(VISA[:8])}"), ("agent", "go on"),
            ("customer", say_digits(VISA[8:]))]
    texts = [stage.write(spoken(text), REDACTED, context, speaker=who).text for who, text in said]
    assert texts == ["It is 41111111.", "Go on.", "########."]


def test_the_agents_question_makes_the_customers_digits_sensitive():
    stage = TextStage()
    context = stage.context("siprec", "call-1")
    question = stage.write(spoken("what's your pin"), REDACTED, context)
    answer = stage.write(spoken("one two"), REDACTED, context)
    assert (question.text, answer.text) == ("What's your pin?", "##.")


def test_a_cue_wears_off():
    assert conversation("what's your pin", "thanks", "okay", "one two") == [
        "What's your pin?", "Thanks.", "Okay.", "12."]


def test_pin_answer_after_question_when_pins_are_switched_off_stays():
    stage = TextStage(entities=lambda: frozenset(REQUIRED))
    assert conversation("what's your pin", "one two three four", stage=stage) == [
        "What's your pin?", "1234."]


def test_switched_off_entities_stay_and_required_ones_do_not():
    stage = TextStage(entities=lambda: frozenset(REQUIRED))
    assert conversation(
        "call five five five one two three four five six seven",
        f"card {say_digits(VISA)}",
        stage=stage,
    ) == ["Call 555-123-4567.", "Card ################."]


def test_email_is_off_for_voice_and_redacted_when_switched_on():
    said = "write to john dot smith at example dot com please"
    assert conversation(said) == ["Write to john dot smith at example dot com please."]
    stage = TextStage(entities=lambda: default_enabled() | {"EMAIL"})
    assert conversation(said, stage=stage) == ["Write to #### ### ##### ## ####### ### ### please."]


def test_redacted_and_unredacted_gives_both_texts():
    stage = TextStage()
    out = stage.write(spoken("my pin is one two three four"), BOTH, stage.context("t", "c"))
    assert out.text == "My pin is ####."
    assert out.unredacted_text == "My pin is 1234."


def test_unredacted_output_still_feeds_the_conversations_context():
    """One participant unredacted, the other redacted: the question still counts."""
    stage = TextStage()
    context = stage.context("direct", "conv")
    stage.write(spoken("what's your pin"), Params(redaction_output="unredacted"), context)
    assert stage.write(spoken("one two"), REDACTED, context).text == "##."


def test_conversations_do_not_share_context():
    stage = TextStage()
    stage.write(spoken(say_digits(VISA[:8])), REDACTED, stage.context("siprec", "a"))
    assert stage.write(spoken(say_digits(VISA[8:])), REDACTED, stage.context("siprec", "b")).text == "11111111."


def test_the_refusal_when_redaction_is_forced():
    assert TextStage().refusal(Params(redaction_output="unredacted")) is None
    forced = TextStage(force_redaction=True)
    assert forced.refusal(Params()) is None
    assert "always redact" in forced.refusal(Params(redaction_output="unredacted"))
    assert forced.refusal(Params(redaction_output="redacted_and_unredacted"))


# -- the property ----------------------------------------------------------------

def luhn_runs(texts: list[str]) -> list[str]:
    """
    Every Luhn-valid window of 13-19 digits in what was delivered: digits
    joined across group separators and utterance boundaries, as a reader
    putting the utterances side by side would.
    """
    joined = re.sub(r"(?<=\d)[ .\-]+(?=\d)", "", " ".join(t.rstrip(".?") for t in texts))
    found = []
    for run in re.findall(r"\d{13,}", joined):
        for length in range(13, 20):
            for start in range(0, len(run) - length + 1):
                window = run[start:start + length]
                if luhn_valid(window):
                    found.append(window)
    return found


def with_check_digit(body: str) -> str:
    for d in "0123456789":
        if luhn_valid(body + d):
            return body + d
    raise AssertionError("unreachable")


cards = st.integers(12, 18).flatmap(
    lambda n: st.text("0123456789", min_size=n, max_size=n)
).map(with_check_digit)


@settings(max_examples=150, deadline=None)
@given(
    card=cards,
    cuts=st.lists(st.integers(1, 18), max_size=5),
    grouped=st.booleans(),
    before=st.sampled_from(["", "my card is", "it's"]),
)
def test_no_output_holds_a_card_number_whatever_the_split(card, cuts, grouped, before):
    points = sorted({c for c in cuts if c < len(card)})
    parts = [card[a:b] for a, b in zip([0, *points], [*points, len(card)])]
    def say(part):
        if grouped and len(part) % 2 == 0:
            return " ".join(say_pair(part[i:i + 2]) for i in range(0, len(part), 2))
        return say_digits(part)
    utterances = [say(p) for p in parts]
    if before:
        utterances[0] = f"{before} {utterances[0]}"
    texts = conversation(*utterances)
    assert luhn_runs(texts) == [], (utterances, texts)


@settings(max_examples=100, deadline=None)
@given(
    card=cards,
    cuts=st.lists(st.integers(1, 18), min_size=1, max_size=4),
    interruptions=st.lists(st.booleans(), min_size=5, max_size=5),
)
def test_no_card_number_survives_the_other_participant_speaking_in_between(card, cuts, interruptions):
    """The customer's parts, read together, never show the card, whatever the agent says between them."""
    points = sorted({c for c in cuts if c < len(card)})
    parts = [card[a:b] for a, b in zip([0, *points], [*points, len(card)])]
    stage = TextStage()
    context = stage.context("siprec", "call-1")
    customer = []
    for part, interrupted in zip(parts, interruptions):
        customer.append(stage.write(spoken(say_digits(part)), REDACTED, context, speaker="customer").text)
        if interrupted:
            stage.write(spoken("okay go on"), REDACTED, context, speaker="agent")
    assert luhn_runs(customer) == [], (parts, customer)
