# -*- test-case-name: tests.test_config -*-
"""
Reading the configuration file: L{load_config} reads and decodes it,
L{parse_config} turns the parsed TOML into a L{Config}, section by section.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from mgateway.config.cluster import _cluster
from mgateway.config.defaults import _DEFAULTS
from mgateway.config.ingress import _amazonconnect, _audiohook, _direct, _sip, _twilio
from mgateway.config.operation import _limits, _logging
from mgateway.config.sections import (
    _asr,
    _auth,
    _exporter,
    _gateway,
    _http,
    _recordings,
    _redaction,
    _store,
    _webhook,
)
from mgateway.config.table import _Table
from mgateway.config.values import Config
from mgateway.errors import ConfigError


def load_config(path: str | os.PathLike, base_dir: Path | None = None) -> Config:
    """
    Read the configuration file at C{path}.

    @param base_dir: what relative paths in the file resolve against; the
        current directory by default.
    @raise ConfigError: for anything that makes the file unusable.
    """
    source = Path(path)
    try:
        text = source.read_bytes().decode("utf-8")
    except OSError as e:
        raise ConfigError(f"{source}: cannot read the configuration file: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{source}: not UTF-8 text (bad byte at offset {e.start})") from e
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: invalid TOML: {e}") from e
    return parse_config(data, source, Path.cwd() if base_dir is None else base_dir)


def parse_config(data: dict, source: Path, base_dir: Path) -> Config:
    """Turn the parsed TOML document C{data} of file C{source} into a L{Config}."""
    base_dir = Path(base_dir).absolute()
    document = _Table(source, "", data, _DEFAULTS)
    gateway = _gateway(document.table("gateway"), base_dir)
    store = _store(document.table("store"), gateway.data_dir)
    return Config(
        source=source,
        gateway=gateway,
        http=_http(document.table("http")),
        auth=_auth(document.table("auth")),
        asr=_asr(document.table("asr"), base_dir),
        direct=_direct(document.table("direct")),
        twilio=_twilio(document.table("twilio")),
        audiohook=_audiohook(document.table("audiohook")),
        webhook=_webhook(document.table("webhook"), base_dir),
        store=store,
        sip=_sip(document.table("sip")),
        exporter=_exporter(document.table("exporter"), gateway.data_dir),
        amazonconnect=_amazonconnect(document.table("amazonconnect")),
        redaction=_redaction(document.table("redaction")),
        recordings=_recordings(document.table("recordings"), gateway.data_dir),
        limits=_limits(document.table("limits")),
        logging=_logging(document.table("logging"), base_dir),
        cluster=_cluster(document.table("cluster"), store.backend),
    )
