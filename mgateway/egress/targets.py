# -*- test-case-name: tests.test_webhook_targets -*-
"""
Several webhook targets: each utterance goes to every target that takes its
namespace and its app, each target with its own queue, timeout, concurrency and
credentials, so that a slow or failing receiver holds up only itself.
"""

from __future__ import annotations

from typing import Callable

import attrs
from treq.client import HTTPClient
from twisted.internet.defer import Deferred, DeferredList
from twisted.web.client import Agent
from zope.interface import implementer

from mgateway.config import WebhookConfig
from mgateway.store.failure import WebhookFailure
from mgateway.egress.oauth2 import ClientCredentials, TokenSource
from mgateway.egress.tls import TlsFiles, trust_policy
from mgateway.egress.webhook import WebhookSink
from mgateway.interfaces import ITranscriptSink
from mgateway.transcript import TranscriptEvent


@attrs.frozen
class Route:
    """A target's sink and the namespaces and apps it takes (empty: all)."""

    sink: WebhookSink
    namespaces: tuple[str, ...] = ()
    apps: tuple[str, ...] = ()

    def takes(self, event: TranscriptEvent) -> bool:
        return ((not self.namespaces or event.namespace in self.namespaces)
                and (not self.apps or event.app in self.apps))


@implementer(ITranscriptSink)
class WebhookRouter:
    """Hands each utterance to the sink of every target that takes it."""

    def __init__(self, routes: list[Route]):
        self.routes = routes

    def deliver(self, event: TranscriptEvent) -> None:
        for route in self.routes:
            if route.takes(event):
                route.sink.deliver(event)

    def drain(self, timeout: float) -> Deferred:
        """Fires with C{True} once every target has drained, C{False} if one gave up."""
        drains = DeferredList([route.sink.drain(timeout) for route in self.routes])
        return drains.addCallback(lambda results: all(ok and drained for ok, drained in results))

    def close(self) -> Deferred:
        closes = DeferredList([route.sink.close() for route in self.routes], consumeErrors=True)
        return closes.addCallback(lambda _: None)


def make_webhook_router(config: WebhookConfig, reactor, *,
                        on_failure: Callable[[WebhookFailure], None]) -> WebhookRouter | None:
    """The router over every configured target; L{None} when there is none."""
    targets = config.all_targets()
    if not targets:
        return None
    return WebhookRouter([Route(_sink(target, reactor, on_failure), target.namespaces, target.apps)
                          for target in targets])


def _sink(target: WebhookConfig, reactor, on_failure) -> WebhookSink:
    tokens = None
    if target.auth == "oauth2":
        credentials = ClientCredentials(
            token_url=target.token_url, client_id=target.client_id,
            client_secret=target.client_secret, client_auth=target.client_auth,
            scope=target.scope, audience=target.audience,
        )
        client = HTTPClient(Agent(reactor, contextFactory=trust_policy(target.token_ca_file)))
        tokens = TokenSource(credentials, http_client=client, clock=reactor,
                             timeout_seconds=target.timeout_seconds, target=target.name)
    return WebhookSink(
        target.url,
        reactor=reactor,
        timeout_seconds=target.timeout_seconds,
        concurrency=target.concurrency,
        queue_size=target.queue_size,
        auth=target.auth,
        secret_name=target.secret_name,
        secret=target.secret,
        secret_in=target.secret_in,
        tls=TlsFiles(ca_file=target.ca_file, client_cert=target.client_cert,
                     client_key=target.client_key,
                     passphrase_file=target.client_key_passphrase_file),
        token_source=tokens,
        retries=target.retries,
        target=target.name,
        on_failure=on_failure,
    )
