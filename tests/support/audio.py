"""Speech fixtures and paced feeding of audio in 20 ms chunks."""

from __future__ import annotations

import wave
from pathlib import Path
from typing import Callable

from twisted.internet import task

SPEECH = Path(__file__).resolve().parent.parent / "fixtures" / "speech"
CHUNK_BYTES = 320  # 20 ms of 8 kHz 16-bit mono


def read_pcm(name: str) -> bytes:
    """The 16-bit 8 kHz mono PCM frames of a fixture WAV."""
    with wave.open(str(SPEECH / name), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2), name
        return w.readframes(w.getnframes())


def chunks(pcm: bytes, size: int = CHUNK_BYTES) -> list[bytes]:
    return [pcm[i : i + size] for i in range(0, len(pcm), size)]


def pace(reactor, items, send: Callable, per_tick: int = 10, interval: float = 0.002):
    """
    Call C{send} for each of C{items} (20 ms audio chunks, or frames carrying
    them), C{per_tick} at a time every C{interval} seconds: about 100 times
    faster than real time with the defaults, while still interleaving with
    everything else the reactor does.
    """
    items = list(items)

    def batches():
        for i in range(0, len(items), per_tick):
            for item in items[i : i + per_tick]:
                send(item)
            yield task.deferLater(reactor, interval, lambda: None)

    return task.cooperate(batches()).whenDone()


async def until(reactor, predicate: Callable[[], bool], attempts: int = 500, interval: float = 0.01):
    """
    Let the reactor run until C{predicate()} holds: for state that another
    connection changes (a frame sent on one socket, looked up by a REST call).
    """
    for _ in range(attempts):
        if predicate():
            return
        await task.deferLater(reactor, interval, lambda: None)
    raise AssertionError(f"{predicate} never held")
