"""
The audio of the SIPREC benchmarks (bench/siprec_calls.py, bench/siprec_soak.py):
each stream's own order of the speech fixtures, its pauses of one kind, as
the RTP payloads a sender puts on the wire; and Vosk alone decoding the same
kind of audio, the baseline the gateway is quoted against.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import vosk

from mgateway.asr.endpointer import SpeechEndpointer
from mgateway.asr.overlay import endpoint_overlay
from mgateway.asr.vosk_recognizer import VoskRecognizer
from mgateway.media.g711 import ulaw_decode, ulaw_encode
from mgateway.media.g729 import G729Encoder
from mgateway.media.noise import comfort_noise
from mgateway.transcript import Utterance

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.support.speech: where the speech is in a fixture

from tests.support.speech import speech_spans  # noqa: E402

SPEECH = ROOT / "tests" / "fixtures" / "speech"
FIXTURES = ("customer.wav", "agent.wav", "single.wav")
#: line: the fixtures' own noise; comfort: the gateway's comfort noise;
#: zeros: digital silence (0xFF mu-law); missing: no packets; sid: G.729 with
#: Annex B voice activity detection (SID frames, then nothing, in the pauses).
PAUSES = ("line", "comfort", "zeros", "missing", "sid")
PACKET_MS = 20
PACKET_SAMPLES = 160
PCMU, G729 = 0, 18
#: How much audio Vosk gets per call in the raw baseline: the gateway's own slice.
RAW_CHUNK_BYTES = 1600
#: Silence that separates two sentences when they are counted. The shortest
#: pause between the fixtures' sentences is 0.7 s (single.wav's 0.2 s tail,
#: then the next file's 0.5 s lead-in), longer than the endpointer's 0.5 s, so
#: it ends an utterance; inside a sentence no pause reaches 0.1 s.
SENTENCE_GAP_MS = 600


def read_pcm(name: str) -> bytes:
    with wave.open(str(SPEECH / name), "rb") as w:
        return w.readframes(w.getnframes())


def g729_packets(pcm: bytes) -> tuple[list[bytes | None], list[int]]:
    """
    C{pcm} through G.729 with Annex B VAD, two 10 ms frames a packet: speech
    frames, a 2-octet SID frame where the encoder sends one, no packet where
    it sends nothing. Returns (payload or C{None}, RTP timestamp offset).
    """
    frames = G729Encoder(vad=True).encode(pcm[: len(pcm) // 320 * 320])
    payloads, offsets = [], []
    for packet in range(len(frames) // 2):
        pair = frames[2 * packet : 2 * packet + 2]
        payloads.append(b"".join(pair) or None)
        offsets.append(packet * PACKET_SAMPLES + (80 if not pair[0] and pair[1] else 0))
    return payloads, offsets


class StreamAudio:
    """
    One benchmark stream: the fixtures in an order drawn from C{seed}, each
    repeated only after all were used, cut to C{seconds}; its pauses made of
    C{pause}. C{packets[i]}: the payload of packet C{i} (C{None}: not sent),
    C{timestamps[i]} its RTP timestamp offset, C{payload_type} theirs.
    Speech at -40 dBFS and above, joined across gaps under L{SENTENCE_GAP_MS}, is not a pause.
    """

    def __init__(self, seed: int, seconds: int, pause: str):
        rng = random.Random(seed)
        wanted = seconds * 8000 * 2
        pieces, length = [], 0
        while length < wanted:
            order = list(FIXTURES)
            rng.shuffle(order)
            for name in order:
                pieces.append(read_pcm(name))
                length += len(pieces[-1])
        pcm = bytearray(b"".join(pieces)[:wanted])
        samples = len(pcm) // 2
        speech = np.zeros(samples, dtype=bool)
        spans = speech_spans(bytes(pcm), min_gap_ms=SENTENCE_GAP_MS)
        for start_ms, end_ms in spans:
            speech[start_ms * 8 : end_ms * 8] = True
        self.sentences = len(spans)
        if pause in ("comfort", "zeros", "missing"):
            filler = np.frombuffer(comfort_noise(samples) if pause == "comfort" else bytes(2 * samples), "<i2")
            audio = np.frombuffer(bytes(pcm), "<i2").copy()
            audio[~speech] = filler[~speech]
            pcm = bytearray(audio.tobytes())
        count = samples // PACKET_SAMPLES
        if pause == "sid":
            self.payload_type = G729
            self.packets, self.timestamps = g729_packets(bytes(pcm))
            #: What Vosk alone decodes in the baseline: the speech with its line noise.
            self.pcm = bytes(pcm)
            return
        self.payload_type = PCMU
        mu_law = ulaw_encode(bytes(pcm))
        per_packet = speech[: count * PACKET_SAMPLES].reshape(-1, PACKET_SAMPLES).any(axis=1)
        self.packets = [None if pause == "missing" and not in_speech else mu_law[i * PACKET_SAMPLES : (i + 1) * PACKET_SAMPLES]
                        for i, in_speech in enumerate(per_packet)]
        self.timestamps = [i * PACKET_SAMPLES for i in range(count)]
        #: What the gateway decodes: the audio as it comes out of G.711.
        self.pcm = ulaw_decode(mu_law)


def streams_for(calls: int, level_seed: int, seconds: int, pause: str) -> list[tuple[StreamAudio, StreamAudio]]:
    """Audio no stream of the run carried before: each stream's own order of the fixtures."""
    return [tuple(StreamAudio(level_seed * 1000 + 2 * call + leg, seconds, pause) for leg in (0, 1))
            for call in range(calls)]


# -- raw Vosk, the baseline ---------------------------------------------------------


def decode(recognizer: vosk.KaldiRecognizer, pcm: bytes) -> vosk.KaldiRecognizer:
    """All of C{pcm} through C{recognizer} in 100 ms chunks, to a final result."""
    for start in range(0, len(pcm), RAW_CHUNK_BYTES):
        recognizer.AcceptWaveform(pcm[start : start + RAW_CHUNK_BYTES])
    recognizer.FinalResult()
    return recognizer


def fresh_recognizer(model: vosk.Model) -> vosk.KaldiRecognizer:
    recognizer = vosk.KaldiRecognizer(model, 8000)
    recognizer.SetWords(True)
    return recognizer


def raw_vosk_rate(model: vosk.Model, streams: list[bytes], threads: int) -> float:
    """
    Decode C{streams} with Vosk alone, C{threads} at a time, as fast as it
    goes, each on a fresh recogniser (as vosk-server does): the real-time
    streams that rate amounts to.
    """
    with ThreadPoolExecutor(threads) as pool:
        began = time.monotonic()
        list(pool.map(lambda pcm: decode(fresh_recognizer(model), pcm), streams))
        wall = time.monotonic() - began
    return sum(len(pcm) for pcm in streams) / 16000 / wall


def rss_bytes(pid: str | int = "self") -> int:
    """The resident set size of process C{pid} now."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"no VmRSS for process {pid}")


def recognizer_rss(model: vosk.Model, pcm: bytes, silence_ms: int) -> int:
    """
    What one stream's recogniser holds once it has decoded C{pcm} as the
    gateway decodes it (L{VoskRecognizer} with its voice-activity detector,
    utterances finalised at its pauses): this process's RSS with it less
    without it (the model already loaded and touched).
    """
    # The model's pages in before the measure; this first recogniser is kept
    # alive so that the measured one cannot reuse memory it would free.
    first, _ = gateway_decode(model, pcm, silence_ms)
    before = rss_bytes()
    measured, _ = gateway_decode(model, pcm, silence_ms)
    grown = rss_bytes() - before
    del measured, first
    return grown


def gateway_decode(model: vosk.Model, pcm: bytes, silence_ms: int) -> tuple[VoskRecognizer, list[Utterance]]:
    """
    C{pcm} through a new gateway recogniser in 20 ms packets: the recogniser,
    not yet finished (its stream still on), and the utterances it gave.
    """
    recognizer = VoskRecognizer(model, endpointer=SpeechEndpointer(silence_ms))
    utterances = []
    for start in range(0, len(pcm), 2 * PACKET_SAMPLES):
        utterances += recognizer.accept(pcm[start : start + 2 * PACKET_SAMPLES])
    return recognizer, utterances


def tuned_model(config) -> Path:
    """The model of the default language, through the same overlay the gateway loads."""
    language = next(lang for lang in config.asr.languages if lang.language == config.asr.default_language)
    if language.model_path is None:
        raise SystemExit(f"no model for {language.language} at {language.model}")
    return endpoint_overlay(language.model_path, Path(tempfile.mkdtemp(prefix="bench-overlay-")),
                            config.asr.endpoint_silence_ms, config.asr.max_utterance_ms)
