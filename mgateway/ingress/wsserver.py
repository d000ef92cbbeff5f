# -*- test-case-name: tests.test_wsserver -*-
"""
What every WebSocket server of the gateway (the direct API, Twilio, AudioHook)
needs of Autobahn beyond its defaults: timers that fire when they are due, and
a close that never throws away what was already sent.

Autobahn schedules its connection timers (close handshake, opening handshake,
auto-ping) on txaio's batched timer, which rounds every deadline down to the
whole second (``int(now + delay) * 1000``): its 1 s close-handshake timeout
fires anywhere between 0 and 1 s after the close frame. On that timeout
Autobahn aborts the TCP connection, and an abort discards whatever the
transport still buffers, such as the C{finalResponse} written just before the
close. On a busy reactor that lost the final response of about one shutdown
in forty. Here the timers fire on time, the peer gets a few seconds to answer
the close, and a peer that does not answer has its connection closed only
after everything sent to it is written (aborted only if it stops reading).
"""

from __future__ import annotations

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.web.resource import Resource

log = Logger()

#: Seconds a peer has to answer our close frame before we close the socket.
CLOSE_HANDSHAKE_TIMEOUT = 2.0
#: Seconds after that for what we sent to be written before the socket is aborted.
FLUSH_GRACE = 5.0


class _DueCall:
    """A scheduled call as Autobahn expects one: cancelling it twice is harmless."""

    def __init__(self, delayed: IDelayedCall):
        self._delayed = delayed

    def cancel(self) -> None:
        if self._delayed.active():
            self._delayed.cancel()


class DueTimer:
    """Autobahn's factory timer interface (C{call_later}), firing when due."""

    def __init__(self, clock: IReactorTime):
        self._clock = clock

    def call_later(self, delay, func, *args, **kwargs) -> _DueCall:
        return _DueCall(self._clock.callLater(delay, func, *args, **kwargs))


class GatewayServerProtocol(WebSocketServerProtocol):
    """A server protocol whose close never discards what it has sent."""

    _flush_deadline: _DueCall | None = None

    def onCloseHandshakeTimeout(self) -> None:
        """
        The peer did not answer our close frame in time. Autobahn would abort
        the connection here; close it once what we sent is written instead.
        """
        self.closeHandshakeTimeoutCall = None
        if self.state == self.STATE_CLOSED:
            return
        self.wasClean = False
        self.wasNotCleanReason = "peer did not answer the close frame in time"
        self.wasCloseHandshakeTimeout = True
        self.dropConnection(abort=False)
        self._flush_deadline = self.factory.timer.call_later(FLUSH_GRACE, self._abort_unflushed)

    def _abort_unflushed(self) -> None:
        self._flush_deadline = None
        log.warn("WebSocket peer {peer} did not read what was sent before the close; aborting",
                 peer=self.peer)
        self.transport.abortConnection()

    def connectionLost(self, reason) -> None:
        if self._flush_deadline is not None:
            self._flush_deadline.cancel()
            self._flush_deadline = None
        super().connectionLost(reason)

    def onConnect(self, request):
        """
        The upgrade request: the factory's L{GatewayServerFactory.admit}
        may refuse it before anything of the request is looked at, then
        L{accept} answers it.
        """
        self.factory.admit(request)
        return self.accept(request)

    def accept(self, request):
        """
        Answer an admitted upgrade request (authenticate the peer): None or
        a Deferred, as Autobahn's C{onConnect}; raise
        L{autobahn.websocket.types.ConnectionDeny} to refuse it.
        """
        return None


class GatewayServerFactory(WebSocketServerFactory):
    """
    A server factory with on-time timers and a close handshake timeout of
    L{CLOSE_HANDSHAKE_TIMEOUT}. Its protocols should derive from
    L{GatewayServerProtocol}.

    @param timer_clock: the clock of the connection timers (the reactor).
    """

    def __init__(self, *args, timer_clock: IReactorTime | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.timer = DueTimer(timer_clock if timer_clock is not None else self.reactor)
        # Autobahn reads its timer from this attribute (see the module docstring).
        self._batched_timer = self.timer
        self.setProtocolOptions(closeHandshakeTimeout=CLOSE_HANDSHAKE_TIMEOUT)

    def admit(self, request) -> None:
        """
        The one place for upgrade-time refusals that concern this server
        rather than the peer (the models still loading, a node full or
        draining): raise L{autobahn.websocket.types.ConnectionDeny} to
        refuse the upgrade. Called first, from every protocol's
        C{onConnect}; this one admits every request.
        """


class Admitted(Resource):
    """
    A WebSocket resource whose upgrades are answered HTTP 503, with
    C{Retry-After}, when the node takes no new call (Twilio and Genesys retry
    or fail over on it). The direct API answers in its own terms instead
    (a C{finalResponse} with 5001 or 5002, see L{mgateway.ingress.direct}).

    @param streams: the participant streams a call of this ingress brings.
    @param what: the ingress, in log lines.
    """

    isLeaf = True

    def __init__(self, resource: Resource, admission, streams: int, what: str):
        super().__init__()
        self._resource = resource
        self._admission = admission
        self._streams = streams
        self._what = what

    def render(self, request):
        refusal = self._admission.refusal(self._streams)
        if refusal is None:
            return self._resource.render(request)
        log.info("{what} stream refused from {peer}: {reason}", what=self._what,
                 peer=request.getClientAddress(), reason=refusal.reason)
        request.setResponseCode(503)
        request.setHeader("Retry-After", str(refusal.retry_after))
        request.setHeader("Content-Type", "text/plain; charset=utf-8")
        return f"Service Unavailable: {refusal.description}\n".encode("utf-8")
