# -*- test-case-name: tests.test_webhook_connections -*-
"""
Persistent HTTP connections for the webhook that never lose a POST to a
connection the receiver has already given up on.

A receiver may close an idle keep-alive connection at the moment the next
POST goes out on it, or answer HTTP/1.0 (Python's C{http.server} does) and
close after every response. Twisted's pool then hands out a dead
connection and the POST fails with "Connection was closed cleanly", and
Twisted retries only idempotent requests without a body. L{WebhookPool}
makes both cases safe:

  - a response in HTTP/1.0 never goes back to the pool (Twisted already
    keeps C{Connection: close} out of it);
  - a POST on a reused connection that failed before any byte of the
    response fails with L{StaleConnection}, so that the caller can send it
    once more on a new connection. The receiver cannot have acted on a
    request it never answered on a connection it had closed, which is what
    makes the one resend safe; a POST on a new connection is never resent
    here.
"""

from __future__ import annotations

import attrs
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.python.failure import Failure
from twisted.web.client import (
    HTTPConnectionPool,
    RequestNotSent,
    RequestTransmissionFailed,
    ResponseNeverReceived,
)
from twisted.web.iweb import IResponse
from zope.interface import implementer

#: The first version whose connections persist without being asked to.
_PERSISTENT_VERSION = (b"HTTP", 1, 1)


class StaleConnection(Exception):
    """
    A request on a reused connection failed before any byte of its response
    arrived: the receiver had closed the connection. C{reasons} holds the
    failures Twisted gave.
    """

    def __init__(self, reasons: list[Failure]):
        super().__init__("the reused connection was closed before the request was answered")
        self.reasons = reasons


class WebhookPool(HTTPConnectionPool):
    """
    An L{HTTPConnectionPool} whose connections report a stale reuse as
    L{StaleConnection} and never keep an HTTP/1.0 connection.
    """

    # Twisted's own retry skips POSTs; the resend is the caller's, with a fresh body.
    retryAutomatically = False

    def getConnection(self, key, endpoint: IStreamClientEndpoint) -> Deferred:
        opening = _Opening(endpoint)
        d = super().getConnection(key, opening)
        return d.addCallback(lambda connection: _Connection(connection, reused=not opening.opened))


@implementer(IStreamClientEndpoint)
@attrs.define
class _Opening:
    """An endpoint that notes whether the pool had to open a new connection."""

    _endpoint: IStreamClientEndpoint
    opened: bool = False

    def connect(self, factory):
        self.opened = True
        return self._endpoint.connect(factory)


@attrs.frozen
class _Connection:
    """One request on a pooled connection, seen through the rules above."""

    #: A L{twisted.web._newclient.HTTP11ClientProtocol}.
    _connection: object
    _reused: bool

    def request(self, request) -> Deferred:
        d = self._connection.request(request)
        return d.addCallbacks(self._answered, self._failed, callbackArgs=(request,))

    def _answered(self, response: IResponse, request) -> IResponse:
        if response.version < _PERSISTENT_VERSION:
            # Read once the body ends; a body-less response has already put
            # the connection back in the pool, and abort() takes it out again.
            request.persistent = False
            if self._connection.state == "QUIESCENT":
                self._connection.abort()
        return response

    def _failed(self, failure: Failure):
        if (
            self._reused
            and failure.check(RequestNotSent, RequestTransmissionFailed, ResponseNeverReceived)
            and not any(reason.check(CancelledError) for reason in getattr(failure.value, "reasons", ()))
        ):
            raise StaleConnection(getattr(failure.value, "reasons", [failure]))
        return failure
