# -*- test-case-name: tests.test_config -*-
"""
The configuration as the gateway uses it: one frozen value per section of the
file, L{Config} holding them all, and L{secret_digest}, the form an app's
secret is kept and compared in.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from pathlib import Path

import attrs

from mgateway.config.cluster import ClusterConfig
from mgateway.config.operation import LimitsConfig, LoggingConfig


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
    @ivar spare_max_audio_seconds: a spare recogniser that has decoded this
        much audio is freed when its stream ends (0: spares are kept for ever).
    @ivar malloc_trim: hand freed memory back to the system (glibc's
        C{malloc_trim}) each time a stream is done with its recogniser.
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
    spare_max_audio_seconds: int = 300
    malloc_trim: bool = True

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
    limits: LimitsConfig = LimitsConfig()
    logging: LoggingConfig = LoggingConfig()
    cluster: ClusterConfig = ClusterConfig()

    def missing_languages(self) -> tuple[LanguageConfig, ...]:
        """The configured languages that are disabled because their model is not there."""
        return tuple(lang for lang in self.asr.languages if lang.model_path is None)

