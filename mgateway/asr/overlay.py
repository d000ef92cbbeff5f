# -*- test-case-name: tests.test_asr -*-
"""
Decoding settings for a Vosk model, without touching the installed model.

PyPI's vosk 0.3.45 has no endpointer setters (C{SetEndpointerDelays} arrived
in v0.3.50): Kaldi's options are read once, from the model's C{conf/} files,
when the model is loaded. So the gateway loads each model through an overlay
directory: symlinks to every file of the model, except a rewritten copy of
C{conf/model.conf}.

C{model.conf} gets the endpoint rules (Kaldi C{OnlineEndpointConfig}, in
seconds of audio):

    - rule 2 ends an utterance after C{endpoint_silence_ms} of trailing
      silence when the decoder is confident it reached a sentence end;
    - rules 3 and 4 wait 500 ms and 1500 ms longer when it is less sure
      (the stock models ship 0.5 / 1.0 / 2.0, i.e. C{endpoint_silence_ms}
      = 500);
    - rule 5 cuts an utterance that reached C{max_utterance_ms}, silence or
      not (C{must-contain-nonsilence=false}).

Rule 1 (five seconds of silence with nothing decoded) stays as the model has it.

The model's feature options (C{conf/mfcc.conf}) are left as the model ships
them, Kaldi's dither included. An earlier overlay set C{--dither=0} for
reproducible decodes, and that changed what the model hears: Vosk upsamples
8 kHz call audio for a 16 kHz model, so the band above 4 kHz is empty but
for the dither, and without it the upper mel bins fall to Kaldi's energy
floor, far from anything the model was trained on. The words then differed
from plain Vosk's on the same audio from the first utterance on. Kaldi
draws its dither from the C library's C{rand()}, so a decode depends a
little on what the process decoded before; tests that compare decodes
exactly seed that generator (C{srand}) first.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

#: Milliseconds added to the configured trailing silence for Kaldi rules 3 and 4.
RULE3_EXTRA_MS = 500
RULE4_EXTRA_MS = 1500

_MODEL_CONF = Path("conf") / "model.conf"
_MARK = "# set by asapp-mg (see mgateway/asr/overlay.py)"


class UntunableModel(Exception):
    """
    The model has no C{conf/model.conf}: it is of Vosk's first layout, whose
    decoding options are built into Vosk, so they cannot be set.
    """

    def __init__(self, model_dir: Path):
        super().__init__(f"{model_dir} has no {_MODEL_CONF}: its decoding options cannot be configured")
        self.model_dir = model_dir


def endpoint_options(endpoint_silence_ms: int, max_utterance_ms: int) -> dict[str, str]:
    """The Kaldi options, without their C{--}, that the overlay sets in C{model.conf}."""
    return {
        "endpoint.rule2.min-trailing-silence": _seconds(endpoint_silence_ms),
        "endpoint.rule3.min-trailing-silence": _seconds(endpoint_silence_ms + RULE3_EXTRA_MS),
        "endpoint.rule4.min-trailing-silence": _seconds(endpoint_silence_ms + RULE4_EXTRA_MS),
        "endpoint.rule5.min-utterance-length": _seconds(max_utterance_ms),
        "endpoint.rule5.must-contain-nonsilence": "false",
    }


def _seconds(ms: int) -> str:
    return str(ms / 1000)


def rewrite_conf(original: str, options: dict[str, str]) -> str:
    """
    A Kaldi configuration file with C{options} set: lines setting one of them
    are dropped, every other line is kept, and the options are appended.
    """
    kept = [line for line in original.splitlines() if _option_name(line) not in options]
    added = [f"--{name}={value}" for name, value in options.items()]
    return "\n".join(kept + [_MARK] + added) + "\n"


def _option_name(line: str) -> str | None:
    option = line.split("#", 1)[0].strip()
    if not option.startswith("--"):
        return None
    return option[2:].split("=", 1)[0]


def endpoint_overlay(
    model_dir: Path, overlay_root: Path, endpoint_silence_ms: int, max_utterance_ms: int
) -> Path:
    """
    The overlay of C{model_dir} with these settings, built under
    C{overlay_root} unless it exists already.

    Its name holds a digest of the model's path, its file names, the
    rewritten files' originals and the settings, so a changed setting or an
    upgraded model gets a fresh overlay and an unchanged one is reused. It is
    built in a temporary directory and renamed into place, so a crash or a
    second process never leaves a half-built overlay behind.

    @raise UntunableModel: the model has no C{conf/model.conf}.
    @raise OSError: the overlay cannot be written.
    """
    model_dir = model_dir.resolve()
    conf_dir = model_dir / "conf"
    if not (model_dir / _MODEL_CONF).is_file():
        raise UntunableModel(model_dir)
    options = {"model.conf": endpoint_options(endpoint_silence_ms, max_utterance_ms)}
    originals = {name: (conf_dir / name).read_text() for name in options if (conf_dir / name).is_file()}
    entries = sorted(p.name for p in model_dir.iterdir())
    conf_entries = sorted(p.name for p in conf_dir.iterdir())

    digest = hashlib.sha256()
    for part in [str(model_dir), entries, conf_entries, sorted(originals.items()), sorted(options.items())]:
        digest.update(repr(part).encode())
    overlay = overlay_root / f"{model_dir.name}-{digest.hexdigest()[:16]}"
    if overlay.is_dir():
        return overlay

    overlay_root.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{overlay.name}.", dir=overlay_root))
    try:
        for name in entries:
            if name != "conf":
                (building / name).symlink_to(model_dir / name)
        (building / "conf").mkdir()
        for name in conf_entries:
            if name in originals:
                (building / "conf" / name).write_text(rewrite_conf(originals[name], options[name]))
            else:
                (building / "conf" / name).symlink_to(conf_dir / name)
        building.chmod(0o755)
        os.rename(building, overlay)
    except OSError:
        shutil.rmtree(building, ignore_errors=True)
        if overlay.is_dir():  # another process built the same overlay first
            return overlay
        raise
    return overlay
