"""
The gateway hears what plain Vosk hears: the same speech fixtures through the
gateway's transcriber path (the model overlay, a warm spare or a recycled
recogniser, 20 ms chunks fed through L{StreamTranscriber} on the ASR pool,
each stream's voice-activity detector) give the same words, with the same
times and confidences (to a hundredth or two on a recycled recogniser), as
a fresh C{KaldiRecognizer} on the packaged model
fed 100 ms chunks, as a vosk-server client feeds it, and finalised at the
same points. That is the one intended difference: the gateway's endpointer
(L{mgateway.asr.endpointer}) ends an utterance where Kaldi's rules would
only later (or, in digital silence, not at all), so plain Vosk is asked for
its C{FinalResult()} there too (ahead of the decision, where the gateway
finalises). When an utterance ends changes, not what is heard; a pause the
gateway finalised ahead in that turned to speech again is not a cut.

Both decodes run in a process of their own (L{tests.support.vosk_parity}),
with Kaldi's dither seeded before each.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mgateway.asr.endpointer import FINALISE_AHEAD_MS
from mgateway.transcript import Utterance, Word
from tests.support.speech import BYTES_PER_MS
from tests.support.vosk_parity import SHORT_PAUSE, STREAMS, as_vosk_results, plain_as_results

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.vosk_parity", str(tmp_path_factory.mktemp("overlays"))],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=True,
    )
    return json.loads(done.stdout.splitlines()[-1])["runs"]


def test_the_gateway_gives_plain_vosks_words_and_times_on_every_fixture(runs):
    assert [run["name"] for run in runs] == list(STREAMS * 2)
    for run in runs:
        assert run["gateway"], run["name"]
        if run["name"] == SHORT_PAUSE:
            # Decoded again where speech resumed: the recogniser gives plain Vosk's words exactly once
            # the dither the decode it let go drew is given back; the gateway's (a warm spare, the
            # dither drawn in its own order) are those words to the dither's difference.
            assert_same(run["dither_given_back"]["utterances"], run["plain"], run)
            assert_alike(run["gateway"], run["plain"], run)
        else:
            assert_same(run["gateway"], run["plain"], run)


def assert_alike(gateway: list[dict], plain: list[dict], run: dict) -> None:
    """The same utterances and number of words, each word's times within L{DITHER_MS}, one word in ten another."""
    assert [len(r["result"]) for r in gateway] == [len(r["result"]) for r in plain], run
    pairs = [(g, p) for gr, pr in zip(gateway, plain) for g, p in zip(gr["result"], pr["result"])]
    for (_, g_start, g_end, _), (_, p_start, p_end, _) in pairs:
        assert abs(g_start - p_start) <= DITHER_MS and abs(g_end - p_end) <= DITHER_MS, run
    assert sum(g[0] != p[0] for g, p in pairs) <= len(pairs) // 10, run


#: How far Kaldi's dither alone has been seen to move a word's times on the
#: fixtures (24-30 ms for customer.wav's second sentence).
DITHER_MS = 60


def assert_same(gateway: list[dict], plain: list[dict], run: dict) -> None:
    assert without_confidences(gateway) == without_confidences(plain), run
    for gateway_confidence, plain_confidence in zip(confidences(gateway), confidences(plain)):
        assert gateway_confidence == pytest.approx(plain_confidence, abs=CONFIDENCE_TOLERANCE), run


#: A recogniser recycled from another stream (the second fixture onwards) has
#: been seen to give a word's confidence a few thousandths away from a fresh
#: one's (agent.wav after customer.wav: 0.4838 for 0.4767), the same words at
#: the same times: Kaldi keeps some state across FinalResult().
CONFIDENCE_TOLERANCE = 0.02


def without_confidences(results: list[dict]) -> list:
    return [(r["text"], [word[:3] for word in r["result"]]) for r in results]


def confidences(results: list[dict]) -> list[float]:
    return [word[3] for r in results for word in r["result"]]


def test_plain_vosk_is_finalised_ahead_of_each_of_the_endpointers_decisions_and_only_there(runs):
    by_name = {run["name"]: run for run in runs}
    for name in ("customer.wav", "agent.wav"):
        finalised, decisions = by_name[name]["finalise_at"], by_name[name]["decisions"]
        assert len(finalised) == len(decisions) == 2, name
        for at_bytes, decision_ms in zip(finalised, decisions):
            # The whole slices Vosk had a little over FINALISE_AHEAD_MS before the decision.
            assert decision_ms - FINALISE_AHEAD_MS - 100 < at_bytes // BYTES_PER_MS <= decision_ms - FINALISE_AHEAD_MS
    assert by_name["single.wav"]["finalise_at"] == []


def test_a_pause_finalised_ahead_that_turns_to_speech_again_is_decoded_again_as_vosk_not_cut_there(runs):
    for run in runs:
        if run["name"] == SHORT_PAUSE:
            assert [ends for _, ends in run["cuts"]] == [False], "finalised ahead in the short pause, not ended"
            assert run["finalise_at"] == [], "plain Vosk is not cut there"
            (cut_ms, _), = run["cuts"]
            for recogniser in (run["recogniser"], run["dither_given_back"]):
                (resumed_ms,) = recogniser["redecoded_ms"]
                assert cut_ms < resumed_ms < cut_ms + 500, "decoded again where speech resumed"
            assert len(run["gateway"]) == 1, run["gateway"]
            starts = [start for _, start, *_ in run["gateway"][0]["result"]]
            assert starts[0] < cut_ms - 400 < cut_ms < starts[-1], "words from either side of the pause"


def test_a_word_result_converts_both_ways_alike():
    utterance = Utterance("a b", 450, 780, (Word("a", 450, 600, 0.5), Word("b", 600, 780, 1.0)))
    vosk_result = {"text": "a b", "result": [
        {"word": "a", "start": 0.45, "end": 0.6, "conf": 0.5}, {"word": "b", "start": 0.6, "end": 0.78, "conf": 1.0}
    ]}
    assert as_vosk_results([utterance]) == plain_as_results([vosk_result])
