"""
Builds the running gateway from a parsed configuration.

The twistd plugin and the tests both call L{make_service}; nothing here parses
options or touches global state.
"""

from __future__ import annotations

from datetime import timedelta

from autobahn.twisted.resource import WebSocketResource
from twisted.application.service import MultiService
from twisted.internet.defer import DeferredList, ensureDeferred
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.web.server import Site

from mgateway.api.rest import RestApi
from mgateway.api.tokens import TokenSigner, signing_key
from mgateway.asr.models import ModelRegistry
from mgateway.asr.pool import ASRThreadPool
from mgateway.calls.registry import CallRegistry
from mgateway.calls.roles import channel_roles, media_line_roles, track_roles
from mgateway.config import Config
from mgateway.egress.store_sink import StoreSink
from mgateway.egress.webhook import WebhookSink
from mgateway.ingress.audiohook.websocket import AudioHookFactory
from mgateway.ingress.direct.websocket import DirectStreamFactory
from mgateway.ingress.siprec.service import SiprecListeners
from mgateway.ingress.twilio.websocket import TwilioStreamFactory
from mgateway.paths import DIRECT_STREAM_PATH, TWILIO_STREAM_PATH
from mgateway.speech import SpeechEngine
from mgateway.store.retention import RetentionService

log = Logger()


def make_store(config: Config, reactor):
    if config.store.backend == "postgresql":
        from mgateway.store.postgres import PostgresTranscriptStore

        return PostgresTranscriptStore(config.store.dsn, reactor)
    from mgateway.store.sqlite import SQLiteTranscriptStore

    return SQLiteTranscriptStore(config.store.sqlite_path, reactor)


def make_webhook(config: Config, reactor) -> WebhookSink | None:
    hook = config.webhook
    if not hook.url:
        return None
    return WebhookSink(
        hook.url,
        reactor=reactor,
        timeout_seconds=hook.timeout_seconds,
        concurrency=hook.concurrency,
        queue_size=hook.queue_size,
        auth=hook.auth,
        secret_name=hook.secret_name,
        secret=hook.secret,
        secret_in=hook.secret_in,
        ca_file=hook.ca_file,
    )


class Gateway(MultiService):
    """
    The whole gateway. Start-up order: thread pool and store, then the models,
    then the listeners, so that nothing is accepted that cannot be served.
    Shut-down order: listeners, then sessions and calls (each flushed so the
    last words are delivered), then the sinks, then the store and the pool.

    @ivar listening: fires with the listening ports once the gateway serves.
    """

    def __init__(self, config: Config, reactor):
        super().__init__()
        self.config = config
        self.reactor = reactor
        data_dir = config.gateway.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)

        self.pool = ASRThreadPool(config.asr.threads)
        self.pool.setServiceParent(self)
        self.models = ModelRegistry(
            [(lang.language, lang.model_path, lang.required) for lang in config.asr.languages],
            overlay_root=data_dir / "model-overlays",
            endpoint_silence_ms=config.asr.endpoint_silence_ms,
            max_utterance_ms=config.asr.max_utterance_ms,
            threadpool=self.pool.threadpool,
            reactor=reactor,
            spares=config.asr.warm_recognizers,
            vad_threshold=config.asr.endpointer_threshold,
        )
        self.engine = SpeechEngine(self.models, self.pool.threadpool, reactor)

        self.store = make_store(config, reactor)
        self.store_sink = StoreSink(self.store)
        self.webhook = make_webhook(config, reactor)
        sinks = [self.store_sink] + ([self.webhook] if self.webhook else [])
        RetentionService(
            self.store,
            clock=reactor,
            retention=timedelta(days=config.store.retention_days),
            interval_seconds=config.store.purge_interval_seconds,
        ).setServiceParent(self)

        self.registry = CallRegistry(
            self.engine,
            sinks,
            reactor,
            mappers={
                "siprec": media_line_roles(config.sip.media_line_order),
                "twilio": track_roles,
                "genesysaudiohook": channel_roles,
            },
        )
        self.tokens = TokenSigner(
            signing_key(config.auth.token_secret, data_dir), config.auth.token_ttl_seconds, reactor
        )
        self.direct = DirectStreamFactory(
            tokens=self.tokens,
            engine=self.engine,
            sink=self.store_sink,
            clock=reactor,
            idle_timeout=config.direct.idle_timeout_seconds,
            max_duration=config.direct.max_duration_seconds,
            max_message_bytes=config.direct.max_message_bytes,
            default_language=config.asr.default_language,
        )
        self.twilio = TwilioStreamFactory(
            tokens=self.tokens,
            registry=self.registry,
            public_url=config.http.public_url,
            auth_token=config.twilio.auth_token,
            max_message_bytes=config.twilio.max_message_bytes,
            max_gap_ms=config.twilio.max_gap_ms,
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
                TWILIO_STREAM_PATH: WebSocketResource(self.twilio),
            },
            configured_websockets={config.audiohook.path: WebSocketResource(self.audiohook)},
        )
        self.siprec = SiprecListeners(config.sip, self.registry, reactor) if config.sip.enabled else None
        self.ports = []
        self.listening = None

    def startService(self):
        super().startService()
        self.listening = ensureDeferred(self._serve())
        self.listening.addErrback(self._fatal)

    async def _serve(self):
        """
        Open the store, then every listener, then load the models: a
        recording client or a Genesys probe is answered at once, however long
        the models take (start-streaming waits for them). Fires once all is
        ready, with the HTTP ports.
        """
        await self.store.start()
        site = Site(self.api.resource())
        for description in self.config.http.listen:
            port = await serverFromString(self.reactor, description).listen(site)
            self.ports.append(port)
            log.info("listening on {description}", description=description)
        if self.siprec is not None:
            await self.siprec.listen()
        await self.models.load()
        available = sorted(self.models.available())
        log.info("languages available: {languages}", languages=", ".join(available) or "none")
        return self.ports

    def _fatal(self, failure):
        log.failure("asapp-mg cannot start", failure)
        if self.reactor.running:
            self.reactor.stop()

    async def _stop(self):
        await DeferredList([p.stopListening() for p in self.ports], consumeErrors=True)
        self.ports = []
        if self.siprec is not None:
            await self.siprec.stop()
        grace = self.config.gateway.shutdown_grace_seconds
        await DeferredList(
            [self.direct.shut_down(), self.audiohook.shut_down(grace), self.registry.shut_down()],
            consumeErrors=True,
        )
        if self.webhook is not None:
            await self.webhook.drain(grace)
            await self.webhook.close()
        await self.store_sink.drain()
        await MultiService.stopService(self)
        await self.store.close()

    def stopService(self):
        return ensureDeferred(self._stop())


def make_service(config: Config, reactor=None) -> Gateway:
    if reactor is None:
        from twisted.internet import reactor
    return Gateway(config, reactor)
