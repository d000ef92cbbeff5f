"""
What finalising an utterance costs Vosk, the largest part of the endpoint-
completing packet → webhook latency before the gateway finalised ahead of
its decisions: the SIPREC benchmarks' streams (one pause kind) cut where
the gateway finalises (FINALISE_AHEAD_MS before its voice-activity
detector decides, mgateway.asr.endpointer), decoded
by plain Vosk in 100 ms chunks (as the gateway feeds it), and at each cut
C{FinalResult()} (what the gateway calls) or C{Result()} (Vosk's mid-stream
endpoint, for comparison: it leaves the frames not yet decoded to the next
utterance, see mgateway.asr.vosk_recognizer) timed on its own::

    python bench/vosk_finalise.py --pause line --streams 3 --seconds 60
    python bench/vosk_finalise.py --finalise result ...

Prints the finaliser's milliseconds (mean, p50, p90, max) and Vosk's
decoding rate (seconds of CPU per second of audio, the finalisers included),
with the machine. One thread, nothing else running: run it on a quiet
machine.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import vosk

from mgateway.config import load_config
from media_plane import machine
from siprec_audio import PAUSES, RAW_CHUNK_BYTES, StreamAudio, fresh_recognizer, tuned_model
# Importable once siprec_audio has put the source tree on the path.
from tests.support.endpoints import endpointer_cuts, finalised_at_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(Path(__file__).with_name("siprec-gateway.toml")),
                        help="the gateway configuration whose model and endpoint silence to use")
    parser.add_argument("--pause", choices=PAUSES, default="line")
    parser.add_argument("--streams", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=60, help="audio per stream")
    parser.add_argument("--finalise", choices=("final", "result"), default="final",
                        help="FinalResult() (the gateway's) or Result() at each cut")
    options = parser.parse_args()
    vosk.SetLogLevel(-1)
    config = load_config(options.config)
    model = vosk.Model(str(tuned_model(config)))
    finalising, decoding, audio_seconds = [], 0.0, 0.0
    for seed in range(options.streams):
        pcm = StreamAudio(seed, options.seconds, options.pause).pcm
        # Where the gateway finalises: the whole 100 ms slices it had when the detector said to.
        pending = [finalised_at_bytes(ms) for ms, _ in endpointer_cuts(pcm, config.asr.endpoint_silence_ms)]
        recognizer = fresh_recognizer(model)
        finalise = recognizer.FinalResult if options.finalise == "final" else recognizer.Result
        began = time.process_time()
        for start in range(0, len(pcm), RAW_CHUNK_BYTES):
            recognizer.AcceptWaveform(pcm[start : start + RAW_CHUNK_BYTES])
            if pending and start + RAW_CHUNK_BYTES >= pending[0]:
                pending.pop(0)
                cut = time.perf_counter()
                finalise()
                finalising.append(1000 * (time.perf_counter() - cut))
        recognizer.FinalResult()
        decoding += time.process_time() - began
        audio_seconds += len(pcm) / 16000
    ordered = sorted(finalising)
    print(f"machine: {machine()}")
    finaliser = "FinalResult()" if options.finalise == "final" else "Result()"
    print(f"{options.streams} streams of {options.seconds} s, {options.pause} pauses, "
          f"{len(ordered)} utterances finalised with {finaliser}")
    print(f"finaliser ms: mean {statistics.mean(ordered):.1f}  p50 {ordered[len(ordered) // 2]:.1f}  "
          f"p90 {ordered[int(len(ordered) * 0.9)]:.1f}  max {ordered[-1]:.1f}")
    print(f"Vosk: {decoding / audio_seconds:.3f} s of CPU per second of audio")


if __name__ == "__main__":
    main()
