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

from mgateway.asr.scheduler import DecodeScheduler
from mgateway.asr.transcriber import StreamTranscriber
from mgateway.interfaces import IRecognizer
from mgateway.transcript import Utterance
from tests.support.asr_pools import pool  # noqa: F401 (fixtures)
from tests.support.audio import until


def test_a_free_slot_takes_the_job_whose_audio_is_oldest_not_the_first_queued():
    clock = Clock()
    scheduler = DecodeScheduler(slots=1, clock=clock)
    started, jobs = [], {}

    def job(name):
        def start():
            started.append(name)
            jobs[name] = Deferred()
            return jobs[name]
        return start

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
