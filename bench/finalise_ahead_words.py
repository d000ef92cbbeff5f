"""
What finalising ahead of the endpointer's decision does to the words: the
gateway finalises Vosk when a pause has run to FINALISE_AHEAD_MS short of
the silence that ends an utterance (mgateway.asr.endpointer), and when
speech resumes before the silence is complete, it decodes the utterance's
audio again as one (mgateway.asr.vosk_recognizer). The speech fixtures have
no pause that long inside a sentence, so one is made: at each gap between
two words of a sentence in turn, a pause of --pause-ms of -50 dBFS noise is
inserted. The utterance around it is decoded four ways: by plain Vosk
finalised where the gateway delivers utterances (the reference); by the
gateway's recogniser (20 ms packets, its detector); by plain Vosk also cut
at the pause, the two results joined (what the gateway would deliver if it
did not decode again); and by the reference with Kaldi's dither drawn from
another seed, for scale (the Korean small model on these fixtures changes
words on any small difference in what it hears)::

    python bench/finalise_ahead_words.py --pause-ms 350 400 450

Prints, per pause length, how many of the insertions were finalised ahead
and not ended (the others ended the utterance or were not long enough), the
words each way changed against the reference, and the audio the gateway
decoded again, with the machine.
"""

from __future__ import annotations

import argparse
import difflib
from pathlib import Path

import vosk

from mgateway.config import load_config
from media_plane import machine
from siprec_audio import FIXTURES, gateway_decode, read_pcm, tuned_model
# Importable once siprec_audio has put the source tree on the path.
from tests.support.endpoints import endpointer_cuts, finalised_at_bytes
from tests.support.kaldi_random import seed_kaldi_dither
from tests.support.pauses import line_noise
from tests.support.speech import BYTES_PER_MS, RATE
from tests.support.vosk_parity import as_vosk_results, plain_as_results, plain_vosk

OTHER_SEED = 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(Path(__file__).with_name("siprec-gateway.toml")),
                        help="the gateway configuration whose model and endpoint silence to use")
    parser.add_argument("--pause-ms", type=int, nargs="+", default=[350, 400, 450])
    options = parser.parse_args()
    vosk.SetLogLevel(-1)
    config = load_config(options.config)
    silence_ms = config.asr.endpoint_silence_ms
    model = vosk.Model(str(tuned_model(config)))
    print(f"machine: {machine()}")
    print(f"endpoint silence {silence_ms} ms; a pause inserted at each gap between two words of a sentence")
    print("pause ms  gaps  finalised ahead,  words changed against Vosk not cut there     words in  decoded")
    print("                not ended         gateway  cut and joined  another dither seed  them      again s")
    for pause_ms in options.pause_ms:
        gaps = split = by_gateway = by_cut = by_dither = words_in = 0
        again_ms = 0
        for name in FIXTURES:
            pcm = read_pcm(name)
            for gap_ms in word_gaps(model, pcm):
                gaps += 1
                at = gap_ms * BYTES_PER_MS
                paused = pcm[:at] + line_noise(pause_ms * RATE // 1000, seed=gap_ms) + pcm[at:]
                cuts = endpointer_cuts(paused, silence_ms)
                if not [ms for ms, ends in cuts if not ends and gap_ms <= ms <= gap_ms + pause_ms + 100]:
                    continue
                split += 1
                delivered = tuple(finalised_at_bytes(ms) for ms, ends in cuts if ends)
                span = delivered_span(cuts, gap_ms)
                reference = words_between(plain_as_results(plain_vosk(model, paused, delivered)), span)
                gateway, again = gateway_results(model, paused, silence_ms)
                cut = plain_as_results(plain_vosk(model, paused, tuple(finalised_at_bytes(ms) for ms, _ in cuts)))
                dithered = plain_as_results(plain_vosk(model, paused, delivered, dither_seed=OTHER_SEED))
                by_gateway += changed_words(reference, words_between(gateway, span))
                by_cut += changed_words(reference, words_between(cut, span))
                by_dither += changed_words(reference, words_between(dithered, span))
                words_in += len(reference)
                again_ms += again
        print(f"{pause_ms:8}  {gaps:4}  {split:16}  {by_gateway:7}  {by_cut:14}  {by_dither:19}  "
              f"{words_in:8}  {again_ms / 1000:7.1f}")


def gateway_results(model: vosk.Model, pcm: bytes, silence_ms: int) -> tuple[list[dict], float]:
    """The gateway's recogniser on C{pcm}: its utterances as plain Vosk's results, and the ms it decoded again."""
    seed_kaldi_dither()
    recognizer, utterances = gateway_decode(model, pcm, silence_ms)
    utterances += recognizer.finish()
    return as_vosk_results(utterances), recognizer.decoded_again_ms


def word_gaps(model: vosk.Model, pcm: bytes) -> list[int]:
    """The middle of each gap between two words of one of Vosk's utterances, ms."""
    gaps = []
    for result in plain_as_results(plain_vosk(model, pcm)):
        words = result["result"]
        gaps += [(a[2] + b[1]) // 2 for a, b in zip(words, words[1:])]
    return gaps


def words_between(results: list[dict], span_ms: tuple[float, float]) -> list[str]:
    """The words of C{results} (as L{plain_as_results} gives them) that start in C{span_ms}: one utterance's."""
    return [word for result in results for word, start, *_ in result["result"] if span_ms[0] <= start < span_ms[1]]


def delivered_span(cuts: list[tuple[int, bool]], ms: int) -> tuple[float, float]:
    """Between the gateway's deliveries around C{ms}: where Vosk was finalised for the utterances before and after."""
    ends = [finalised_at_bytes(cut) / BYTES_PER_MS for cut, delivered in cuts if delivered]
    return max([0.0] + [end for end in ends if end <= ms]), min([float("inf")] + [end for end in ends if end > ms])


def changed_words(before: list[str], after: list[str]) -> int:
    """Words substituted, inserted or deleted between the two (the larger side of each difference)."""
    matcher = difflib.SequenceMatcher(a=before, b=after, autojunk=False)
    return sum(max(i2 - i1, j2 - j1) for tag, i1, i2, j1, j2 in matcher.get_opcodes() if tag != "equal")


if __name__ == "__main__":
    main()
