# -*- test-case-name: tests.test_media_gateway_api,tests.test_direct_api,tests.test_twilio_api -*-
"""
The HTTP face of the gateway: the Start/Stop API, streaming-URL issuance,
after-call messages, and the WebSocket ingresses mounted on the same site.
"""

from __future__ import annotations

import json
from typing import Any

from klein import Klein
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from twisted.logger import Logger
from twisted.web.resource import Resource
from werkzeug.exceptions import MethodNotAllowed, NotFound

from mgateway.api.responses import error_body, generic_error, json_body, request_id
from mgateway.calls.errors import ApiError, bad_parameter, bad_transcribe_parameter, internal
from mgateway.calls.requests import check_id, parse_start, parse_stop
from mgateway.cluster.carry import INTERNAL_PATH, OPERATIONS, BadSignature
from mgateway.paths import DIRECT_STREAM_PATH, TWILIO_STREAM_PATH
from mgateway.tokens import DIRECT_AUDIENCE, TWILIO_AUDIENCE

log = Logger()

MESSAGE_LIMIT = 1000
START_STOP_OK = {"code": 1000, "description": "OK"}


def _json(request, max_bytes: int, error=None) -> Any:
    """The request's JSON body (None when empty), or an L{ApiError}."""
    error = error or (lambda message: generic_error(400, message))
    body = request.content.read(max_bytes + 1) if request.content is not None else b""
    if len(body) > max_bytes:
        raise generic_error(413)
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise error("request body is not valid JSON") from None
    except RecursionError:
        raise error("request body is nested too deeply") from None


def authenticated_app(auth, request) -> str:
    """The C{api_id} of the request's C{asapp-api-id} / C{asapp-api-secret}, or the 401."""
    header = lambda name: (request.getHeader(name) or None)
    app = auth.app_for(header("asapp-api-id"), header("asapp-api-secret"))
    if app is None:
        raise generic_error(401, "Missing or invalid asapp-api-id / asapp-api-secret")
    return app.api_id


class _ConfiguredPaths(Resource):
    """
    WebSocket resources at paths read from the configuration, served in front
    of the Klein app (whose routes are fixed when its class is defined). A
    path matches with or without its trailing slash.
    """

    isLeaf = True

    def __init__(self, app: Resource, resources: dict):
        super().__init__()
        self._app = app
        self._resources = {_without_slash(path): resource for path, resource in resources.items()}

    def render(self, request):
        path = _without_slash(request.path.decode("utf-8", "replace"))
        return self._resources.get(path, self._app).render(request)


def _without_slash(path: str) -> str:
    return path.rstrip("/") or "/"


class RestApi:
    """
    @param registry: the L{mgateway.calls.registry.CallRegistry}.
    @param store: the L{mgateway.interfaces.ITranscriptStore}.
    @param websockets: path -> twisted.web resource (Autobahn
        C{WebSocketResource}) for each WebSocket ingress.
    @param configured_websockets: the same, for ingresses whose path comes
        from the configuration (AudioHook).
    @param file_exporter: the L{mgateway.api.fileexporter.FileExporterApi}.
    @param configuration: the L{mgateway.api.configuration.ConfigurationApi}.
    @param health: the L{mgateway.api.health.Health} of C{/health}.
    """

    app = Klein()

    def __init__(self, *, auth, registry, store, tokens, public_url: str,
                 default_language: str, max_body_bytes: int, websockets: dict,
                 configured_websockets: dict | None = None, file_exporter, configuration,
                 health, carrier=None):
        self._auth = auth
        self._registry = registry
        self._store = store
        self._tokens = tokens
        self._public_url = public_url.rstrip("/")
        self._default_language = default_language
        self._max_body = max_body_bytes
        self._websockets = websockets
        self._configured_websockets = configured_websockets or {}
        self._file_exporter = file_exporter
        self._configuration = configuration
        self._health = health
        #: The L{mgateway.cluster.carry.Carrier} of several nodes, or None.
        self._carrier = carrier

    def resource(self):
        return _ConfiguredPaths(self.app.resource(), self._configured_websockets)

    def _authenticate(self, request) -> str:
        return authenticated_app(self._auth, request)

    @app.handle_errors(ApiError)
    def _api_error(self, request, failure):
        return error_body(request, failure.value)

    @app.handle_errors(NotFound)
    def _not_found(self, request, failure):
        return error_body(request, generic_error(404))

    @app.handle_errors(MethodNotAllowed)
    def _not_allowed(self, request, failure):
        return error_body(request, generic_error(405))

    @app.handle_errors(Exception)
    def _unexpected(self, request, failure):
        log.failure("unexpected error serving {path} (request {request_id})", failure,
                    path=request.path, request_id=request_id(request))
        return error_body(request, generic_error(500))

    # -- Start/Stop API ---------------------------------------------------

    @app.route("/mg-autotranscribe/v1/start-streaming", methods=["POST"])
    @app.route("/mg-autotranscribe/v1/start-streaming/", methods=["POST"])
    async def start_streaming(self, request):
        return await self._start_streaming(request, self._authenticate(request))

    async def _start_streaming(self, request, app: str, carried: bool = False):
        start = parse_start(_json(request, self._max_body, bad_parameter), self._default_language, app)
        await self._guarded(self._check_language(start.transcribe.language), request)
        owners = await self._carry(request, "start-streaming", start.namespace, start.guid, app, carried)
        if owners is not None:
            return owners
        streams = await self._guarded(self._registry.start(start), request)
        log.info("start-streaming {namespace}/{guid} (request {request_id})",
                 namespace=start.namespace, guid=start.guid, request_id=request_id(request))
        return json_body(request, 200, {
            "isOk": True,
            "autotranscribeResponse": {
                role: {"streamId": stream.stream_id, "status": START_STOP_OK}
                for role, stream in streams.items()
            },
        })

    @app.route("/mg-autotranscribe/v1/stop-streaming", methods=["POST"])
    @app.route("/mg-autotranscribe/v1/stop-streaming/", methods=["POST"])
    async def stop_streaming(self, request):
        return await self._stop_streaming(request, self._authenticate(request))

    async def _stop_streaming(self, request, app: str, carried: bool = False):
        stop = parse_stop(_json(request, self._max_body, bad_parameter))
        owners = await self._carry(request, "stop-streaming", stop.namespace, stop.guid, app, carried)
        if owners is not None:
            return owners
        stopped = await self._guarded(self._registry.stop(stop), request)
        log.info("stop-streaming {namespace}/{guid} (request {request_id})",
                 namespace=stop.namespace, guid=stop.guid, request_id=request_id(request))
        return json_body(request, 200, {
            "isOk": True,
            "autotranscribeResponse": {
                role: {
                    "streamId": stream.stream_id,
                    "status": START_STOP_OK,
                    "summary": summary.to_json(),
                }
                for role, (stream, summary) in stopped.items()
            },
        })

    async def _carry(self, request, operation: str, namespace: str, guid: str, app: str,
                     carried: bool) -> bytes | None:
        """
        The owner's answer when another live node holds the call (carried
        there by L{mgateway.cluster.carry}), or None to answer here. A
        request carried to this node is never carried on.
        """
        if self._carrier is None or carried or self._registry.holds(namespace, guid):
            return None
        record = await self._guarded(self._carrier.owner(namespace, self._registry.guids(namespace, guid)), request)
        if record is None:
            return None
        request.content.seek(0)
        body = request.content.read(self._max_body)
        status, answer = await self._carrier.carry(record, operation, body, app, request_id(request))
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", b"application/json")
        return answer

    @app.route(INTERNAL_PATH + "<operation>", methods=["POST"])
    async def carried(self, request, operation):
        """A start or stop another node carried here, signed with the cluster's secret."""
        if self._carrier is None or operation not in OPERATIONS:
            raise generic_error(404)
        body = request.content.read(self._max_body + 1) if request.content is not None else b""
        try:
            app, carried_id = self._carrier.verify(request, operation, body)
        except BadSignature as e:
            log.warn("refused a carried {operation}: {reason}", operation=operation, reason=str(e))
            raise generic_error(401, "Invalid cluster signature") from None
        request.asapp_request_id = carried_id
        request.content.seek(0)
        handler = self._start_streaming if operation == "start-streaming" else self._stop_streaming
        return await handler(request, app, carried=True)

    async def _check_language(self, language: str) -> None:
        """
        400-202 for a language no model is loaded for, whether or not the
        call exists: the whole request is checked before the call is looked up.
        """
        engine = self._registry.engine
        await engine.ready()
        if engine.canonical(language) is None:
            raise bad_transcribe_parameter(f"Language not supported: {language}")

    async def _guarded(self, awaitable, request):
        """Spec errors pass through; anything else is the spec's 500-201."""
        try:
            return await awaitable
        except ApiError:
            raise
        except Exception:
            log.failure("start/stop failed (request {request_id})", request_id=request_id(request))
            raise internal()

    # -- direct WebSocket API ----------------------------------------------

    @app.route("/autotranscribe/v1/streaming-url", methods=["POST"])
    def streaming_url(self, request):
        api_id = self._authenticate(request)
        body = _json(request, self._max_body) or {}
        if not isinstance(body, dict):
            raise generic_error(400, "request body must be a JSON object")
        # The schema allows any string: an empty one is as good as none.
        external_id = body.get("externalId")
        if external_id is not None and external_id != "":
            check_id(external_id, "externalId", lambda message: generic_error(400, message))
        claims = {"ext": external_id} if external_id else {}
        token = self._tokens.issue(DIRECT_AUDIENCE, api_id, **claims)
        return json_body(request, 200, {
            "streamingUrl": f"{self._base_url(request)}{DIRECT_STREAM_PATH}?token={token}"
        })

    def _base_url(self, request) -> str:
        """The configured public URL, or else the one the client used to reach us."""
        if self._public_url:
            return self._public_url
        scheme = "wss" if request.isSecure() else "ws"
        host = (request.getHeader("host") or "").strip()
        if not host:
            address = request.getHost()
            host = f"{address.host}:{address.port}"
        return f"{scheme}://{host}"

    @app.route(DIRECT_STREAM_PATH, branch=False)
    def direct_stream(self, request):
        return self._websockets[DIRECT_STREAM_PATH]

    # -- Twilio Media Streams ----------------------------------------------------

    @app.route("/mg-autotranscribe/v1/twilio-media-stream-url", methods=["GET"])
    def twilio_media_stream_url(self, request):
        api_id = self._authenticate(request)
        token = self._tokens.issue(TWILIO_AUDIENCE, api_id)
        # Twilio drops query strings from Stream URLs: the token is in the path.
        return json_body(request, 200, {
            "streamingUrl": f"{self._base_url(request)}{TWILIO_STREAM_PATH}/{token}"
        })

    @app.route(TWILIO_STREAM_PATH, branch=True)
    def twilio_stream(self, request):
        return self._websockets[TWILIO_STREAM_PATH]

    # -- after-call -----------------------------------------------------------

    @app.route("/conversation/v1/conversation/messages", methods=["GET"])
    async def messages(self, request):
        self._authenticate(request)
        external_id = (request.args.get(b"externalId") or [b""])[0].decode("utf-8", "replace")
        if not external_id:
            # The guide's curl sends the id as a JSON body on the GET.
            body = _json(request, self._max_body)
            if isinstance(body, dict) and isinstance(body.get("externalId"), str):
                external_id = body["externalId"]
        if not external_id:
            raise generic_error(400, "externalId is required")
        check_id(external_id, "externalId", lambda message: generic_error(400, message))
        stored = await self._store.messages(external_id, MESSAGE_LIMIT)
        return json_body(request, 200, {"items": [m.to_json() for m in stored]})

    # -- File Exporter ------------------------------------------------------------

    @app.route("/fileexporter/v1/static/<operation>", methods=["POST"])
    async def file_exporter(self, request, operation):
        api_id = self._authenticate(request)
        body = _json(request, self._max_body)
        answer = await self._file_exporter.answer(operation, body, api_id, self._base_url(request))
        return json_body(request, 200, answer)

    @app.route("/fileexporter/v1/files/<token>/<name>", methods=["GET"])
    def feed_file(self, request, token, name):
        """A signed download URL: the token is the credential, no API headers."""
        return self._file_exporter.download(token, name)

    @app.route("/mg-autotranscribe/v1/webhook-failures", methods=["GET"])
    async def webhook_failures(self, request):
        """The utterances of a conversation that a webhook target did not get, newest first."""
        self._authenticate(request)
        external_id = (request.args.get(b"externalId") or [b""])[0].decode("utf-8", "replace")
        if not external_id:
            raise generic_error(400, "externalId is required")
        check_id(external_id, "externalId", lambda message: generic_error(400, message))
        failures = await self._store.webhook_failures(external_id, MESSAGE_LIMIT)
        return json_body(request, 200, {"items": [f.to_json() for f in failures]})

    # -- Configuration API --------------------------------------------------------

    @app.route("/configuration/v1/", branch=True)
    def configuration(self, request):
        """The Configuration API (L{mgateway.api.configuration})."""
        return self._configuration.resource()

    @app.route("/health", methods=["GET"])
    async def health(self, request):
        """Readiness for balancers (L{mgateway.api.health}); no credentials."""
        report = await self._health.report()
        return json_body(request, report.code, report.to_json())

    @app.route("/metrics", methods=["GET"])
    def metrics(self, request):
        """Prometheus metrics: webhook deliveries, recognisers, Twilio frames; no credentials, as /health."""
        request.setHeader("Content-Type", CONTENT_TYPE_LATEST)
        return generate_latest(REGISTRY)
