# -*- test-case-name: tests.test_webhook,tests.test_webhook_post -*-
"""
The real-time webhook: one HTTPS POST of the spec's C{transcript} JSON per
utterance, to the customer's target.

Delivery is best effort, as the spec describes it. The utterances go through
a L{DeliveryQueue}: at most C{concurrency} POSTs are in flight, one at a time
per stream so that a stream's utterances arrive in order, and at most
C{queue_size} utterances wait behind them; when the queue is full the oldest
waiting utterance is dropped. A POST that times out, cannot connect or is
answered with a status other than 2xx is logged with the call id and counted,
and never retried (but see L{mgateway.egress.connections} for a stale reused
connection). L{WebhookSink.deliver} only enqueues, so a slow or dead target
never holds up transcription.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import attrs
from OpenSSL import SSL
from prometheus_client import Counter, Histogram
from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, Deferred, TimeoutError, ensureDeferred
from twisted.internet.error import ConnectError
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    HTTPConnectionPool,
    RequestNotSent,
    RequestTransmissionFailed,
    ResponseDone,
    ResponseNeverReceived,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IResponse
from zope.interface import implementer

from mgateway.egress.connections import StaleConnection, WebhookPool
from mgateway.store.failure import WebhookFailure
from mgateway.egress.oauth2 import TokenSource
from mgateway.egress.queue import DeliveryQueue
from mgateway.egress.tls import TlsFiles, trust_policy
from mgateway.interfaces import ITranscriptSink
from mgateway.transcript import TranscriptEvent
from mgateway.wire import webhook_body

log = Logger()

#: What became of an utterance handed to the webhook.
OUTCOMES = ("sent", "failed", "error", "dropped")

DELIVERIES = Counter(
    "asapp_mg_webhook_deliveries_total",
    "Utterances handed to the real-time webhook, by outcome: sent (2xx), "
    "failed (any other status), error (no answer: connection, TLS or timeout), "
    "dropped (never sent: the queue was full or the gateway was stopping).",
    ["outcome"],
)
for _outcome in OUTCOMES:
    DELIVERIES.labels(outcome=_outcome)

FAILURES = Counter(
    "asapp_mg_webhook_failures_total",
    "Utterances a webhook target did not get, by target and error (HTTP status, "
    "timeout, dropped, or the class of the connection, TLS or token error).",
    ["target", "error"],
)

LATENCY = Histogram(
    "asapp_mg_webhook_latency_seconds",
    "Utterances the webhook target answered 2xx: queued (from the transcript event's creation to its POST "
    "being sent) and answered (from the POST being sent to its answer).",
    ["stage"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
for _stage in ("queued", "answered"):
    LATENCY.labels(_stage)


@attrs.frozen
class WebhookStats:
    """
    Counts since the sink was made; C{timed_out} is the part of C{errors}
    that was a timeout.
    """

    sent: int
    failed: int
    errors: int
    timed_out: int
    dropped: int
    in_flight: int
    queued: int


@implementer(ITranscriptSink)
class WebhookSink:
    """
    POSTs each utterance to C{url}.

    @param reactor: opens the connections.
    @param clock: times the requests and L{drain}; the reactor by default.
    @param auth: C{"none"} or C{"secret"}: then C{secret} is sent under
        C{secret_name} as a header (C{secret_in="header"}) or as a URL query
        parameter (C{secret_in="query"}). The values are those that
        L{mgateway.config} accepts.
    @param ca_file: a PEM bundle of the only certificate authorities to trust;
        L{None} for the platform's trust store.
    @param tls: all the TLS files (custom CA, client certificate and key for
        mTLS), instead of C{ca_file}; read again when they change.
    @param http_client: a L{treq.client.HTTPClient} to use instead of the
        sink's own; C{ca_file} and the connection pool are then its business.
    @param token_source: OAuth2 bearer tokens to send; on a 401 the token is
        dropped and the POST sent once more with a new one.
    @param retries: how many times a POST whose connection failed before any
        byte of an answer (refused, reset, unreachable; not TLS, not a
        timeout) is sent again on a new connection; 0, the guides' "no
        retry", by default.
    @param target: the target's name, in logs, metrics and failure records.
    @param on_failure: called with a L{WebhookFailure} for every utterance
        not delivered (non-2xx, no answer, dropped).
    """

    def __init__(
        self,
        url: str,
        *,
        reactor,
        clock=None,
        timeout_seconds: float,
        concurrency: int,
        queue_size: int,
        auth: str = "none",
        secret_name: str = "",
        secret: str = "",
        secret_in: str = "header",
        ca_file: Path | None = None,
        tls: TlsFiles | None = None,
        http_client: HTTPClient | None = None,
        token_source: TokenSource | None = None,
        retries: int = 0,
        target: str = "default",
        on_failure: Callable[[WebhookFailure], None] = lambda failure: None,
    ):
        self._clock = reactor if clock is None else clock
        self._timeout = timeout_seconds
        self._url = url
        self._tokens = token_source
        self._retries = retries
        self._target = target
        self._on_failure = on_failure
        self._params, self._headers = _credentials(auth, secret_name, secret, secret_in)
        self._pool: HTTPConnectionPool | None = None
        #: Sends a POST again on a new connection when a reused one was stale.
        self._fresh_client = http_client
        if http_client is None:
            policy = trust_policy(ca_file, tls)
            self._pool = WebhookPool(reactor, persistent=True)
            self._pool.maxPersistentPerHost = concurrency
            http_client = HTTPClient(Agent(reactor, contextFactory=policy, pool=self._pool))
            self._fresh_client = HTTPClient(Agent(reactor, contextFactory=policy))
        self._client = http_client
        self._queue: DeliveryQueue[TranscriptEvent] = DeliveryQueue(
            self._send,
            clock=self._clock,
            concurrency=concurrency,
            queue_size=queue_size,
            on_drop=self._drop,
            key=lambda event: (event.conversation_id, event.stream_id),
        )
        self._counts = dict.fromkeys(OUTCOMES, 0)
        self._timed_out = 0

    @property
    def stats(self) -> WebhookStats:
        """A snapshot of the counts."""
        queue = self._queue.stats
        return WebhookStats(
            sent=self._counts["sent"],
            failed=self._counts["failed"],
            errors=self._counts["error"],
            timed_out=self._timed_out,
            dropped=self._counts["dropped"],
            in_flight=queue.in_flight,
            queued=queue.queued,
        )

    def deliver(self, event: TranscriptEvent) -> None:
        self._queue.put(event)

    def drain(self, timeout: float) -> Deferred:
        """
        Wait for every utterance handed over so far to be sent or given up on.

        @return: a L{Deferred} firing with C{True} once nothing waits and
            nothing is in flight, or with C{False} after C{timeout} seconds.
        """
        return self._queue.drain(timeout)

    def close(self) -> Deferred:
        """
        Stop for good: drop what waits, abandon the POSTs in flight (they count
        as errors) and close the pooled connections. Later utterances are
        dropped.
        """
        settled = self._queue.close()
        if self._pool is not None:
            settled.addCallback(lambda _: self._pool.closeCachedConnections())
        return settled.addCallback(lambda _: None)

    # -- sending -------------------------------------------------------------

    def _send(self, event: TranscriptEvent) -> Deferred:
        sent_at = self._clock.seconds()
        d = ensureDeferred(self._post(event))
        d.addTimeout(self._timeout, self._clock, onTimeoutCancel=_timed_out)
        return d.addCallbacks(
            self._answered, self._unanswered, callbackArgs=(event, sent_at), errbackArgs=(event,)
        )

    async def _post(self, event: TranscriptEvent) -> int:
        body = json.dumps(webhook_body(event), separators=(",", ":"), ensure_ascii=False)
        token = None if self._tokens is None else await self._tokens.token()
        response = await self._attempts(event, body, token)
        if response.code == 401 and token is not None:
            await _discard_body(response)
            self._tokens.invalidate(token)
            log.info(
                "webhook POST for {guid} (stream {stream_id}) answered 401; sending it again "
                "with a new token",
                guid=event.conversation_id,
                stream_id=event.stream_id,
            )
            token = await self._tokens.token()
            response = await self._attempts(event, body, token)
        await _discard_body(response)
        return response.code

    async def _attempts(self, event: TranscriptEvent, body: str, token: str | None) -> IResponse:
        """
        The answer to the POST: sent again on a new connection when a reused
        one was stale, and up to C{retries} times when it could not connect.
        """
        client, retries = self._client, self._retries
        while True:
            try:
                return await self._request(client, body, token)
            except StaleConnection as e:
                why, client = "met a connection the receiver had closed", self._fresh_client
                reason = "; ".join(_reason(reason) for reason in e.reasons)
            except Exception as e:
                if retries == 0 or not _never_connected(e):
                    raise
                retries -= 1
                why, client = f"could not connect ({retries} more tries)", self._fresh_client
                reason = _reason(Failure(e))
            log.info(
                "webhook POST for {guid} (stream {stream_id}) {why} ({reason}); "
                "sending it again on a new connection",
                guid=event.conversation_id,
                stream_id=event.stream_id,
                why=why,
                reason=reason,
            )

    def _request(self, client: HTTPClient, body: str, token: str | None) -> Deferred:
        headers = self._headers if token is None else self._headers | {
            "Authorization": f"Bearer {token}"}
        return client.request(
            "POST",
            self._url,
            params=self._params,
            data=body.encode("utf-8"),
            headers=headers,
            # A redirect is an answer like any other non-2xx: following it
            # would hand the utterance and the secret to another host.
            allow_redirects=False,
            unbuffered=True,
        )

    def _answered(self, status: int, event: TranscriptEvent, sent_at: float) -> None:
        if 200 <= status < 300:
            self._count("sent")
            LATENCY.labels("queued").observe(max(0.0, sent_at - event.created.timestamp()))
            LATENCY.labels("answered").observe(max(0.0, self._clock.seconds() - sent_at))
            log.debug(
                "webhook POST for {guid} (stream {stream_id}) answered {status}",
                guid=event.conversation_id,
                stream_id=event.stream_id,
                status=status,
            )
        else:
            self._count("failed")
            log.warn(
                "webhook POST for {guid} (stream {stream_id}) answered {status}; utterance dropped",
                guid=event.conversation_id,
                stream_id=event.stream_id,
                status=status,
            )
            self._failed(event, status=status, error=f"HTTP {status}", reason="")

    def _unanswered(self, failure: Failure, event: TranscriptEvent) -> None:
        self._count("error")
        if failure.check(TimeoutError):
            self._timed_out += 1
            log.warn(
                "webhook POST for {guid} (stream {stream_id}) timed out after {timeout}s; "
                "utterance dropped",
                guid=event.conversation_id,
                stream_id=event.stream_id,
                timeout=self._timeout,
            )
            self._failed(event, status=None, error="timeout", reason=f"{self._timeout}s")
        else:
            log.warn(
                "webhook POST for {guid} (stream {stream_id}) failed: {reason}; utterance dropped",
                guid=event.conversation_id,
                stream_id=event.stream_id,
                reason=_reason(failure),
            )
            self._failed(event, status=None, error=_error_class(failure), reason=_reason(failure))

    # -- bookkeeping ---------------------------------------------------------

    def _drop(self, event: TranscriptEvent, why: str) -> None:
        self._count("dropped")
        log.warn(
            "webhook utterance of {guid} (stream {stream_id}) dropped: {why}",
            guid=event.conversation_id,
            stream_id=event.stream_id,
            why=why,
        )
        self._failed(event, status=None, error="dropped", reason=why)

    def _failed(self, event: TranscriptEvent, *, status: int | None, error: str, reason: str) -> None:
        FAILURES.labels(target=self._target, error=error).inc()
        at = datetime.fromtimestamp(self._clock.seconds(), timezone.utc)
        self._on_failure(WebhookFailure.of(event, target=self._target, status=status, error=error,
                                           reason=reason, at=at))

    def _count(self, outcome: str) -> None:
        self._counts[outcome] += 1
        DELIVERIES.labels(outcome=outcome).inc()


def _credentials(
    auth: str, secret_name: str, secret: str, secret_in: str
) -> tuple[dict[str, str], dict[str, str]]:
    """
    The query parameters to add to the configured URL (treq encodes them as
    C{urlencode} does and leaves the URL's own query as it is) and the headers
    to send, with the secret where the operator wants it.
    """
    params: dict[str, str] = {}
    headers = {"Content-Type": "application/json"}
    if auth == "secret":
        if secret_in == "query":
            params[secret_name] = secret
        else:
            headers[secret_name] = secret
    return params, headers


def _timed_out(result, timeout: float):
    """Whatever cancelling a POST left behind, it failed because it took too long."""
    raise TimeoutError(timeout, "webhook POST")


def _never_connected(error: Exception) -> bool:
    """
    Whether a POST failed before any byte of an answer for want of a
    connection: refused, unreachable, reset or closed while sending, but not
    refused by TLS (that is the configuration, and fails closed) nor cancelled.
    """
    if isinstance(error, ConnectError):
        return True
    if not isinstance(error, (RequestNotSent, RequestTransmissionFailed, ResponseNeverReceived)):
        return False
    reasons = getattr(error, "reasons", [])
    return not any(reason.check(CancelledError, SSL.Error) for reason in reasons)


def _error_class(failure: Failure) -> str:
    """The name of what went wrong, looking inside Twisted's lists of causes."""
    causes = getattr(failure.value, "reasons", None)
    if causes:
        return _error_class(causes[0])
    return failure.type.__name__


def _reason(failure: Failure) -> str:
    """
    What went wrong, looking inside the lists of causes that
    L{twisted.web.client} wraps its errors in.
    """
    causes = getattr(failure.value, "reasons", None)
    if causes:
        return "; ".join(_reason(cause) for cause in causes)
    if failure.check(CancelledError):
        return "abandoned"
    return failure.getErrorMessage() or failure.type.__name__


class _DiscardBody(Protocol):
    """
    Reads a response body to its end and forgets it, so that the connection
    can carry the next POST.

    Cancelling C{done} closes the connection at once: C{stopProducing} on the
    body's transport (an C{IPushProducer}) drops the TCP connection, where
    C{loseConnection} would first wait for a TLS close from a server that has
    already stopped answering.
    """

    def __init__(self):
        self.done: Deferred = Deferred(lambda _: self.transport.stopProducing())

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(None)
        else:
            self.done.errback(reason)


def _discard_body(response: IResponse) -> Deferred:
    body = _DiscardBody()
    response.deliverBody(body)
    return body.done
