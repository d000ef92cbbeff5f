"""
Decoding is scheduled oldest audio first across streams (earliest deadline
first), and how far behind the streams are is measured.
"""

from __future__ import annotations

import threading

import pytest_twisted
from prometheus_client import REGISTRY
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from zope.interface import implementer
from zope.interface.verify import verifyObject

from mgateway.asr.scheduler import DecodeScheduler
from mgateway.asr.transcriber import StreamTranscriber
from mgateway.interfaces import IEndpointing, IRecognizer
from mgateway.transcript import Utterance
from tests.support.asr_pools import pool  # noqa: F401 (fixtures)
from tests.support.audio import until


def job_starter(started: list, jobs: dict):
    """Makes named jobs that record their start in C{started} and leave their Deferred in C{jobs}."""
    def job(name):
        def start():
            started.append(name)
            jobs[name] = Deferred()
            return jobs[name]
        return start
    return job


def test_a_free_slot_takes_the_job_whose_audio_is_oldest_not_the_first_queued():
    clock = Clock()
    scheduler = DecodeScheduler(slots=1, clock=clock)
    started, jobs = [], {}
    job = job_starter(started, jobs)

    scheduler.submit(5.0, job("first"))
    scheduler.submit(3.0, job("younger"))
    scheduler.submit(1.0, job("oldest"))
    assert (started, scheduler.queue_depth) == (["first"], 2)

    jobs["first"].callback(None)
    assert started == ["first", "oldest"]
    jobs["oldest"].callback(None)
    jobs["younger"].callback(None)
    assert started == ["first", "oldest", "younger"]
    assert scheduler.queue_depth == 0


def test_a_job_that_may_end_an_utterance_goes_before_older_audio():
    scheduler = DecodeScheduler(slots=1, clock=Clock())
    started, jobs = [], {}
    job = job_starter(started, jobs)

    scheduler.submit(0.0, job("running"))
    scheduler.submit(1.0, job("oldest"))
    scheduler.submit(4.0, job("ending later"), finalising=True)
    scheduler.submit(3.0, job("ending"), finalising=True)
    scheduler.submit(2.0, job("older"))
    for name in ("running", "ending", "ending later", "oldest"):
        jobs[name].callback(None)

    assert started == ["running", "ending", "ending later", "oldest", "older"]


def test_idle_work_starts_only_while_no_streams_job_waits_and_one_piece_at_a_time():
    scheduler = DecodeScheduler(slots=2, clock=Clock())
    started, jobs = [], {}
    job = job_starter(started, jobs)

    scheduler.submit_idle(job("idle 1"))
    scheduler.submit_idle(job("idle 2"))
    assert started == ["idle 1"], "never two at a time: a thread stays free for the streams"
    scheduler.submit(0.0, job("stream a"))
    scheduler.submit(1.0, job("stream b"))
    assert started == ["idle 1", "stream a"]

    jobs["idle 1"].callback(None)
    assert started == ["idle 1", "stream a", "stream b"], "a stream's job goes before idle work"
    jobs["stream a"].callback(None)
    assert started[-1] == "idle 2"
    assert scheduler.queue_depth == 0


def test_idle_work_that_fails_is_logged_and_gives_its_slot_back():
    scheduler = DecodeScheduler(slots=1, clock=Clock())
    started, jobs = [], {}
    job = job_starter(started, jobs)
    scheduler.submit_idle(job("idle"))
    scheduler.submit(0.0, job("stream"))
    with capturedLogs() as events:
        jobs["idle"].errback(RuntimeError("no model"))
    assert started == ["idle", "stream"]
    assert [e for e in events if e.get("log_failure") is not None and "idle" in e["log_format"]]


def test_a_job_with_nothing_left_to_do_gives_its_slot_to_the_next():
    scheduler = DecodeScheduler(slots=1, clock=Clock())
    started = []
    blocker = Deferred()
    scheduler.submit(0.0, lambda: blocker)
    scheduler.submit(1.0, lambda: None)
    scheduler.submit(2.0, lambda: started.append("next") or Deferred())
    blocker.callback(None)
    assert started == ["next"]


def test_a_stream_far_behind_is_on_the_metrics_and_logged_until_it_catches_up():
    clock = Clock()
    scheduler = DecodeScheduler(slots=1, clock=clock)
    clock.advance(10)
    with capturedLogs() as events:
        scheduler.submit(7.5, Deferred, stream="stream-behind")
        assert REGISTRY.get_sample_value("asapp_mg_asr_stream_lag_seconds", {"stream": "stream-behind"}) == 2.5
        scheduler.forget("stream-behind")
    assert REGISTRY.get_sample_value("asapp_mg_asr_stream_lag_seconds", {"stream": "stream-behind"}) is None
    assert [e["lag_ms"] for e in events if e.get("stream") == "stream-behind"] == [2500]


@implementer(IRecognizer)
class Gated:
    """Records what it decodes, in one list shared by every stream; waits for C{gate} first."""

    def __init__(self, name, decoded, gate):
        self.name, self.decoded, self.gate = name, decoded, gate

    def accept(self, pcm):
        self.gate.wait(10)
        if pcm:
            self.decoded.append(pcm.decode())
        return [Utterance(pcm.decode(), 0, 10)]

    def finish(self):
        return []


@pytest_twisted.ensureDeferred
async def test_a_stream_whose_job_ran_long_goes_before_a_stream_with_younger_audio(pool):  # noqa: F811
    clock = Clock()
    scheduler = DecodeScheduler(slots=1, clock=clock)
    decoded, gate = [], threading.Event()
    streams = {
        name: StreamTranscriber(lambda name=name: Gated(name, decoded, gate), pool, reactor, lambda u: None,
                                scheduler=scheduler, name=name)
        for name in ("a", "b")
    }

    streams["a"].feed(b"a1")  # decoding, held at the gate
    clock.advance(1)
    streams["a"].feed(b"a2")  # waits for a's job to end
    clock.advance(1)
    streams["b"].feed(b"b1")  # queued first, but its audio is younger than a2
    assert scheduler.queue_depth == 1
    gate.set()
    await gatherResults([stream.finish() for stream in streams.values()])

    assert decoded == ["a1", "a2", "b1"]



@implementer(IRecognizer, IEndpointing)
class Ending(Gated):
    """A L{Gated} whose endpointer needs C{silence_needed_ms} more of non-speech (None: heard no speech)."""

    def __init__(self, name, decoded, gate, silence_needed_ms):
        super().__init__(name, decoded, gate)
        self.silence_needed_ms = silence_needed_ms

    def finish(self):
        self.gate.wait(10)
        self.decoded.append(f"{self.name} flushed")
        return []


def test_an_ending_recognizer_provides_iendpointing():
    assert verifyObject(IEndpointing, Ending("a", [], threading.Event(), 20.0))


@pytest_twisted.ensureDeferred
async def test_the_streams_whose_next_job_may_end_an_utterance_are_decoded_before_older_audio(pool):  # noqa: F811
    clock = Clock()
    scheduler = DecodeScheduler(slots=1, clock=clock)
    decoded, delivered, gate = [], [], threading.Event()
    # 2 bytes of audio are 0.125 ms: enough for "ending" only.
    needs = {"speaking": 500.0, "no speech": None, "ending": 0.1, "flushing": 500.0}
    streams = {
        name: StreamTranscriber(lambda name=name: Ending(name[0], decoded, gate, needs[name]), pool, reactor,
                                delivered.append, scheduler=scheduler, name=name)
        for name in needs
    }
    gate.set()
    for stream in streams.values():  # each stream's first job makes its recogniser
        stream.feed(b"0")
    await until(reactor, lambda: len(delivered) == len(streams))
    gate.clear()
    del decoded[:]

    streams["speaking"].feed(b"s1")  # decoding, held at the gate
    streams["speaking"].feed(b"s2")  # the oldest audio waiting, from now on
    clock.advance(1)
    streams["no speech"].feed(b"n1")
    clock.advance(1)
    streams["ending"].feed(b"e1")
    clock.advance(1)
    flushed = streams["flushing"].finish()
    assert scheduler.queue_depth == 3
    gate.set()
    await flushed
    await until(reactor, lambda: len(decoded) == 5)
    await gatherResults([stream.finish() for stream in streams.values()])

    assert decoded[:5] == ["s1", "e1", "f flushed", "s2", "n1"]
