# -*- test-case-name: tests.test_lifecycle,tests.test_twistd_plugin -*-
"""
Builds the running gateway from a parsed configuration.

The twistd plugin and the tests both call L{make_service}; nothing here parses
options or touches global state.
"""

from __future__ import annotations

from datetime import timedelta

from autobahn.twisted.resource import WebSocketResource
from twisted.internet.defer import DeferredList, ensureDeferred, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.web.server import Site

from mgateway.admission import Admission
from mgateway.api.configuration import ConfigurationApi
from mgateway.api.fileexporter import make_file_exporter_api
from mgateway.api.health import Health
from mgateway.api.rest import RestApi
from mgateway.asr.models import ModelRegistry
from mgateway.asr.pool import ASRThreadPool
from mgateway.asr.scheduler import DecodeScheduler, IdleWork
from mgateway.asr.warm import WhenIdle
from mgateway.calls.namespaces import AMAZON_CONNECT, DIRECT, GENESYS_AUDIOHOOK, SIPREC, TWILIO
from mgateway.calls.registry import CallRegistry
from mgateway.cluster.carry import Carrier
from mgateway.cluster.directory import SQLCallDirectory
from mgateway.cluster.membership import Membership
from mgateway.cluster.secrets import SIGNING_KEY, shared_secret
from mgateway.calls.roles import channel_roles, media_line_roles, sender_roles, track_roles
from mgateway.config import AsrConfig, Config, StoreConfig, WebhookConfig
from mgateway.egress.failures import failure_recorder
from mgateway.egress.recordings import Recordings
from mgateway.egress.store_sink import StoreSink
from mgateway.memory import MallocTrim
from mgateway.egress.targets import WebhookRouter, make_webhook_router
from mgateway.export.service import make_exporter
from mgateway.ingress.audiohook.websocket import AudioHookFactory
from mgateway.ingress.direct.websocket import DirectStreamFactory
from mgateway.ingress.kvs.source import make_amazon_connect
from mgateway.ingress.siprec.service import SiprecListeners
from mgateway.ingress.twilio.websocket import TwilioStreamFactory
from mgateway.ingress.wsserver import Admitted
from mgateway.interfaces import IWebhookFailureLog
from mgateway.lifecycle import InOrder, Listener, Step, within
from mgateway.logs import JsonLog
from mgateway.paths import DIRECT_STREAM_PATH, TWILIO_STREAM_PATH
from mgateway.sip.callid import decode_metadata_ucid
from mgateway.speech import SpeechEngine
from mgateway.store.backends import open_store
from mgateway.store.retention import RetentionService
from mgateway.text.redaction import default_enabled
from mgateway.text.settings import TextSettings
from mgateway.text.stage import TextStage
from mgateway.tokens import TokenSigner, signing_key

log = Logger()


def make_store(store: StoreConfig, reactor):
    """The transcript store of the C{[store]} section."""
    return open_store(store.backend, dsn=store.dsn, sqlite_path=store.sqlite_path, reactor=reactor)


def make_retention(store: StoreConfig, transcripts, reactor) -> RetentionService:
    """The purge of the C{[store]} section's retention."""
    return RetentionService(
        transcripts,
        clock=reactor,
        retention=timedelta(days=store.retention_days),
        interval_seconds=store.purge_interval_seconds,
    )


def configured_entities(config: Config) -> frozenset[str]:
    """The redaction entities on by the config file (the Configuration API may change them)."""
    return frozenset((default_enabled() | set(config.redaction.enabled)) - set(config.redaction.disabled))


def make_recordings(config: Config, reactor) -> Recordings:
    """The consented recordings of the C{[recordings]} section, kept for the C{[store]}'s retention."""
    return Recordings(
        config.recordings.directory, reactor, reactor,
        retention_seconds=config.store.retention_days * 86400,
        purge_interval_seconds=config.store.purge_interval_seconds,
    )


def make_models(asr: AsrConfig, data_dir, pool: ASRThreadPool, reactor, when_idle: WhenIdle | None = None
                ) -> ModelRegistry:
    """
    The models of the C{[asr]} section; their endpointing overlays are kept
    under C{data_dir}, their retired spares replaced through C{when_idle}.
    """
    return ModelRegistry(
        [(lang.language, lang.model_path, lang.required) for lang in asr.languages],
        overlay_root=data_dir / "model-overlays",
        endpoint_silence_ms=asr.endpoint_silence_ms,
        max_utterance_ms=asr.max_utterance_ms,
        threadpool=pool.threadpool,
        reactor=reactor,
        spares=asr.warm_recognizers,
        vad_threshold=asr.endpointer_threshold,
        spare_max_audio_seconds=asr.spare_max_audio_seconds,
        release_memory=MallocTrim() if asr.malloc_trim else None,
        when_idle=when_idle,
    )


def make_webhook(hook: WebhookConfig, reactor, failures: IWebhookFailureLog) -> WebhookRouter | None:
    """Every target of the C{[webhook]} section, their failures recorded in C{failures}."""
    return make_webhook_router(hook, reactor, on_failure=failure_recorder(failures, reactor))


def namespace_sinks(store_sink, webhook) -> dict:
    """
    Which sinks each namespace's utterances go to. Media-gateway calls go to
    the store and the webhook (when one is configured); a direct stream's go
    to the store, and back on its own socket (a sink of that call).
    """
    media_gateway = (store_sink,) + ((webhook,) if webhook is not None else ())
    return {SIPREC: media_gateway, TWILIO: media_gateway, GENESYS_AUDIOHOOK: media_gateway,
            AMAZON_CONNECT: media_gateway, DIRECT: (store_sink,)}


def make_membership(config: Config, store, reactor) -> Membership | None:
    """This node's part in the C{[cluster]}, or None for a single node."""
    cluster = config.cluster
    if not cluster.enabled:
        return None
    return Membership(SQLCallDirectory(store), cluster.node_id, cluster.internal_url, reactor,
                      cluster.heartbeat_seconds, cluster.dead_after_seconds)


def make_carrier(config: Config, membership: Membership | None, reactor) -> Carrier | None:
    """What carries a start or stop to the node holding the call, or None for a single node."""
    if membership is None:
        return None
    return Carrier(membership, config.cluster.secret, reactor, reactor,
                   timeout_seconds=config.cluster.dead_after_seconds)


def load_signing_key(config: Config, store):
    """
    The configured key; else, with PostgreSQL, the one every node of the
    database shares (created by the first); else the one in C{data_dir}.
    """
    if not config.auth.token_secret and config.store.backend == "postgresql":
        return shared_secret(store, SIGNING_KEY)
    return signing_key(config.auth.token_secret, config.gateway.data_dir)


class Gateway(InOrder):
    """
    The whole gateway: a tree of services that start in this order, each once
    the one before it is ready, and stop in the reverse order, each once the
    one after it has stopped (see L{InOrder}):

     1. the ASR thread pool;
     2. the transcript store (connected, its schema migrated);
     3. retention (a purge at once, then every interval), then, with a
        C{[cluster] node_id}, this node's heartbeat (its earlier run's calls
        marked ended first);
     4. the text settings: the Configuration API's custom vocabulary and
        redaction policies, read from the store at once and then every
        C{redaction.refresh_seconds};
     5. the consented recordings: old ones purged at once and then every
        interval; on stop, after the calls, whatever they wrote is put on
        disk and the writer's thread stops;
     6. the sinks: the store sink, then the webhook; each drains on stop
        (the webhook within C{gateway.shutdown_grace_seconds});
     7. the calls: on stop, every direct and AudioHook session is told the
        service is going away and every call is flushed, so the last words
        of each reach the sinks (each through the text stages, which run in
        the registry for every call);
     8. the File Exporter's daily build (a build under way finishes before
        the calls stop);
     9. the signing key of streaming URLs and File Exporter downloads (read,
        or created once in C{gateway.data_dir}, or with PostgreSQL in the
        database, shared by its nodes), then one listener per C{http.listen} endpoint
        (the REST API, the Configuration API and the WebSocket ingresses);
    10. SIPREC (SIP over UDP, TCP and TLS, and the RTP ports): on stop, a BYE
        to every recording, each call flushed;
    11. the model loader, last, so that a recording client or a Genesys
        probe is answered at once however long the models take: start
        requests wait for them, and new calls are refused (L{Admission})
        until they are loaded.

    Its stop drains first: from then on new calls are refused. The JSON
    log (C{logging.json_file}), when configured, is the first child and the
    last to stop.

    @ivar listening: fires with the HTTP ports once all of it is ready.
    """

    def __init__(self, config: Config, reactor):
        super().__init__()
        self.config = config
        self.reactor = reactor
        data_dir = config.gateway.data_dir
        grace = config.gateway.shutdown_grace_seconds

        pool = ASRThreadPool(config.asr.threads)
        scheduler = DecodeScheduler(pool.threadpool.max, reactor)
        self.models = make_models(config.asr, data_dir, pool, reactor,
                                  when_idle=IdleWork(scheduler, pool.threadpool, reactor))
        self.engine = SpeechEngine(self.models, pool.threadpool, reactor, scheduler=scheduler)
        self.store = make_store(config.store, reactor)
        self.store_sink = StoreSink(self.store, clock=reactor)
        self.webhook = make_webhook(config.webhook, reactor, self.store)
        self.amazonconnect = make_amazon_connect(config.amazonconnect, reactor)
        self.text_settings = TextSettings(
            self.store, reactor, configured_entities(config), config.redaction.refresh_seconds)
        self.recordings = make_recordings(config, reactor)
        self.membership = make_membership(config, self.store, reactor)
        self.text = TextStage(entities=self.text_settings.entities, vocabulary=self.text_settings.vocabulary,
                              force_redaction=config.redaction.always)
        self.registry = CallRegistry(
            self.engine,
            namespace_sinks(self.store_sink, self.webhook),
            reactor,
            mappers={
                SIPREC: media_line_roles(config.sip.media_line_order),
                TWILIO: track_roles,
                GENESYS_AUDIOHOOK: channel_roles,
                AMAZON_CONNECT: self.amazonconnect.roles,
                DIRECT: sender_roles,
            },
            media_sources={AMAZON_CONNECT: self.amazonconnect},
            guid_forms={SIPREC: decode_metadata_ucid},
            text=self.text,
            recordings=self.recordings,
            on_change=self.membership.changed if self.membership is not None else None,
        )
        self.admission = make_admission(config, self.registry)
        self.tokens = TokenSigner(None, config.auth.token_ttl_seconds, reactor)
        self.file_exporter = make_file_exporter_api(config, reactor)
        self.direct = DirectStreamFactory(
            tokens=self.tokens,
            registry=self.registry,
            clock=reactor,
            idle_timeout=config.direct.idle_timeout_seconds,
            max_duration=config.direct.max_duration_seconds,
            max_message_bytes=config.direct.max_message_bytes,
            default_language=config.asr.default_language,
            force_redaction=self.text.force_redaction,
            admission=self.admission,
        )
        self.twilio = TwilioStreamFactory(
            tokens=self.tokens,
            registry=self.registry,
            public_url=config.http.public_url,
            auth_token=config.twilio.auth_token,
            max_message_bytes=config.twilio.max_message_bytes,
            max_gap_ms=config.twilio.max_gap_ms,
            clock=reactor,
            max_lead_ms=config.twilio.max_lead_ms,
            media_timeout=config.twilio.media_timeout_seconds,
            reconnect_grace=config.twilio.reconnect_grace_seconds,
            ping_interval=config.twilio.ping_interval_seconds,
            ping_timeout=config.twilio.ping_timeout_seconds,
        )
        self.audiohook = AudioHookFactory(
            registry=self.registry,
            clock=reactor,
            keys=config.audiohook.keys,
            auth_failure=config.audiohook.auth_failure,
            max_message_bytes=config.audiohook.max_message_bytes,
            allow_l16=config.audiohook.allow_l16,
            on_stop=config.audiohook.on_stop,
            languages=self.models.available,
        )
        self.api = RestApi(
            auth=config.auth,
            registry=self.registry,
            store=self.store,
            tokens=self.tokens,
            public_url=config.http.public_url,
            default_language=config.asr.default_language,
            max_body_bytes=config.http.max_body_bytes,
            websockets={
                DIRECT_STREAM_PATH: WebSocketResource(self.direct),
                TWILIO_STREAM_PATH: Admitted(WebSocketResource(self.twilio), self.admission, 2, "Twilio"),
            },
            configured_websockets={config.audiohook.path: Admitted(
                WebSocketResource(self.audiohook), self.admission, 2, "AudioHook")},
            file_exporter=self.file_exporter,
            configuration=ConfigurationApi(settings=self.text_settings, store=self.store,
                                           auth=config.auth, max_body_bytes=config.http.max_body_bytes),
            health=Health(registry=self.registry, store=self.store, admission=self.admission, clock=reactor),
            carrier=make_carrier(config, self.membership, reactor),
        )
        self.siprec = (SiprecListeners(config.sip, self.registry, reactor, self.admission)
                       if config.sip.enabled else None)

        # The tree, in start order.
        if config.logging.json_file is not None:
            JsonLog(config.logging.json_file, self.registry).setServiceParent(self)
        pool.setName("asr threads")
        pool.setServiceParent(self)
        Step("store", start=self.store.start, stop=self.store.close).setServiceParent(self)
        retention = make_retention(config.store, self.store, reactor)
        retention.setName("retention")
        retention.setServiceParent(self)
        if self.membership is not None:
            Step("cluster", start=lambda: ensureDeferred(self.membership.start()),
                 stop=self.membership.stop).setServiceParent(self)
        self.text_settings.setName("text settings")
        self.text_settings.setServiceParent(self)
        self.recordings.setName("recordings")
        self.recordings.setServiceParent(self)
        Step("store sink", stop=self.store_sink.drain).setServiceParent(self)
        if self.webhook is not None:
            Step("webhook", stop=lambda: self._drain_webhook(grace)).setServiceParent(self)
        Step("calls", stop=lambda: self._flush_calls(grace)).setServiceParent(self)
        self.exports = make_exporter(config, self.store, reactor, parent=self)
        Step("token key", start=lambda: maybeDeferred(load_signing_key, config, self.store).addCallback(
            self._use_signing_key)).setServiceParent(self)
        site = Site(self.api.resource())
        self.listeners = [
            Listener(description, serverFromString(reactor, description), site)
            for description in config.http.listen
        ]
        for listener in self.listeners:
            listener.setServiceParent(self)
        if self.siprec is not None:
            Step("siprec", start=self.siprec.listen, stop=self.siprec.stop).setServiceParent(self)
        Step("models", start=self._load_models).setServiceParent(self)
        self.listening = None

    @property
    def ports(self) -> list:
        """The HTTP ports listening now."""
        return [listener.port for listener in self.listeners if listener.port is not None]

    def startService(self):
        super().startService()
        self.listening = self.ready.addCallback(lambda _: self.ports)
        self.listening.addErrback(self._fatal)

    def stopService(self):
        """
        New calls are refused from the first moment (SIP 503, WebSocket
        upgrades 503, direct streams 5001); the tree then stops in reverse
        order, and the stop is done within C{gateway.shutdown_grace_seconds}
        whatever is still unfinished (logged).
        """
        self.admission.drain()
        return within(super().stopService(), self.config.gateway.shutdown_grace_seconds, self.reactor,
                      "stopping asapp-mg", lambda: self.stopping)

    def _use_signing_key(self, key: bytes) -> None:
        """Streaming URLs and File Exporter downloads are signed with one key."""
        self.tokens.use_key(key)
        self.file_exporter.tokens.use_key(key)

    async def _drain_webhook(self, grace: float) -> None:
        await self.webhook.drain(grace)
        await self.webhook.close()

    def _flush_calls(self, grace: float):
        return DeferredList(
            [self.direct.shut_down(), self.audiohook.shut_down(grace), self.twilio.shut_down(),
             self.amazonconnect.shut_down(), self.registry.shut_down()],
            consumeErrors=True,
        )

    async def _load_models(self) -> None:
        await self.models.load()
        available = sorted(self.models.available())
        log.info("languages available: {languages}", languages=", ".join(available) or "none")

    def _fatal(self, failure):
        log.failure("asapp-mg cannot start", failure)
        if self.reactor.running:
            self.reactor.stop()


def make_admission(config: Config, registry: CallRegistry) -> Admission:
    """Whether the node takes new calls: the C{[limits]} section against the streams the registry holds."""
    return Admission(
        max_streams=config.limits.streams(config.asr.threads),
        in_use=registry.streams_in_use,
        loaded=lambda: registry.engine.loaded,
        retry_after=config.limits.retry_after_seconds,
    )


def make_service(config: Config, reactor=None) -> Gateway:
    if reactor is None:
        from twisted.internet import reactor
    return Gateway(config, reactor)
