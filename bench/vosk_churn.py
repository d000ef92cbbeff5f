"""
Vosk alone churning recognisers, the gateway's pattern without the gateway:
C{--streams} streams at a time, each a new C{KaldiRecognizer} (or a spare
taken last-in first-out from C{--spares}, as mgateway.asr.warm does, retired after
C{--retire-seconds} of audio) fed
C{--seconds} of the SIPREC benchmarks' audio in one-second jobs on
C{--threads} threads (a stream's jobs land on whichever thread is free, as
on the gateway's ASR pool), then dropped or given back. Every C{--every}
calls it prints this process's RSS, its anonymous and file-backed parts
(/proc/self/smaps_rollup) and the live recognisers, so that what glibc's
malloc does with Kaldi's memory can be told from what the gateway keeps::

    python bench/vosk_churn.py --calls 200 --threads 2 --streams 4 --seconds 25
    MALLOC_ARENA_MAX=2 python bench/vosk_churn.py ...
    python bench/vosk_churn.py --trim ...          # malloc_trim(0) after each call
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import os
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import vosk

from mgateway.config import load_config
from siprec_audio import RAW_CHUNK_BYTES, streams_for, tuned_model

MB = 1024 * 1024
JOB_BYTES = 16000  # one second of 8 kHz PCM per job


def memory() -> dict[str, int]:
    """Rss, Anonymous and the file-backed rest of this process, in bytes."""
    fields = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        name, value, *_ = line.split()
        fields[name.rstrip(":")] = int(value) * 1024
    return {"rss": fields["Rss"], "anon": fields["Anonymous"], "file": fields["Rss"] - fields["Anonymous"]}


class Churn:
    def __init__(self, model: vosk.Model, spares: int, trim, retire_samples: int):
        self.model = model
        self.spares = spares
        self.retire_samples = retire_samples
        #: Samples each live recogniser decoded in all.
        self.decoded: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.ready: collections.deque = collections.deque()
        self.lock = threading.Lock()
        self.live: weakref.WeakSet = weakref.WeakSet()
        self.trim = trim

    def take(self) -> vosk.KaldiRecognizer:
        with self.lock:
            if self.ready:
                return self.ready.pop()
        recognizer = vosk.KaldiRecognizer(self.model, 8000)
        recognizer.SetWords(True)
        self.live.add(recognizer)
        self.decoded[recognizer] = 0
        return recognizer

    def give_back(self, recognizer: vosk.KaldiRecognizer) -> None:
        recognizer.FinalResult()
        retire = self.retire_samples and self.decoded[recognizer] >= self.retire_samples
        with self.lock:
            if not retire and len(self.ready) < self.spares:
                self.ready.append(recognizer)
        del recognizer
        if self.trim is not None:
            self.trim(0)


def feed(churn: Churn, recognizer: vosk.KaldiRecognizer, pcm: bytes) -> None:
    churn.decoded[recognizer] += len(pcm) // 2
    for start in range(0, len(pcm), RAW_CHUNK_BYTES):
        recognizer.AcceptWaveform(pcm[start : start + RAW_CHUNK_BYTES])


def run(options) -> None:
    libc = ctypes.CDLL("libc.so.6")
    if options.arena_max:
        M_ARENA_MAX = -8
        libc.mallopt(M_ARENA_MAX, options.arena_max)
    vosk.SetLogLevel(-1)
    model = vosk.Model(str(tuned_model(load_config(options.config))))
    churn = Churn(model, options.spares, libc.malloc_trim if options.trim else None, options.retire_seconds * 8000)
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; {options.threads} threads, "
          f"{options.streams} streams of {options.seconds} s at a time, {options.spares} spares retired after {options.retire_seconds or '-'} s, "
          f"MALLOC_ARENA_MAX={os.environ.get('MALLOC_ARENA_MAX', '-')}, mallopt arena max {options.arena_max or '-'}, "
          f"trim after each call: {options.trim}", flush=True)
    print(f"model loaded: {memory()['rss'] / MB:.0f} MB", flush=True)
    print(" calls  minute  RSS MB  anon MB  file MB  live  spares", flush=True)
    began = time.monotonic()
    calls = 0
    with ThreadPoolExecutor(options.threads) as pool:
        seed = 0
        while calls < options.calls:
            seed += 1
            audio = [leg.pcm for call in streams_for((options.streams + 1) // 2, seed, options.seconds, "line")
                     for leg in call][: options.streams]
            recognizers = [churn.take() for _ in audio]
            for start in range(0, max(map(len, audio)), JOB_BYTES):
                jobs = [pool.submit(feed, churn, r, pcm[start : start + JOB_BYTES]) for r, pcm in zip(recognizers, audio)]
                for job in jobs:
                    job.result()
            # Given back on a pool thread, as the gateway's streams end.
            for job in [pool.submit(churn.give_back, r) for r in recognizers]:
                job.result()
            del recognizers
            calls += len(audio)
            if calls % options.every < len(audio) or calls >= options.calls:
                m = memory()
                print(f"{calls:6d} {(time.monotonic() - began) / 60:7.1f} {m['rss'] / MB:7.0f} {m['anon'] / MB:8.0f} "
                      f"{m['file'] / MB:8.0f} {len(churn.live):5d} {len(churn.ready):7d}", flush=True)
    print(f"load at the end {os.getloadavg()[0]:.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(Path(__file__).with_name("siprec-gateway.toml")),
                        help="the gateway configuration whose default language's model (and overlay) to load")
    parser.add_argument("--calls", type=int, default=200, help="streams in all")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--streams", type=int, default=4, help="streams at a time")
    parser.add_argument("--seconds", type=int, default=25, help="audio per stream")
    parser.add_argument("--spares", type=int, default=0, help="recognisers kept for the next streams (0: none)")
    parser.add_argument("--retire-seconds", type=int, default=0,
                        help="a spare that decoded this much audio is freed, not kept (0: never), as asr.spare_max_audio_seconds")
    parser.add_argument("--trim", action="store_true", help="malloc_trim(0) after each stream ends")
    parser.add_argument("--arena-max", type=int, default=0, help="mallopt(M_ARENA_MAX) at start (0: glibc's default)")
    parser.add_argument("--every", type=int, default=20, help="a row every this many streams")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
