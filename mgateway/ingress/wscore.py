# -*- test-case-name: tests.test_wscore -*-
"""
The one Twisted shape of the gateway's WebSocket ingresses (the direct API,
Twilio, AudioHook): a protocol that only moves frames between Autobahn and a
sans-I/O ingress core (L{mgateway.ingress.events}), and the factory holding
what its sockets share.

The protocol feeds every message to the core (C{receive_text} /
C{receive_bytes}) and then drives it: each L{LegAudio} goes into the feed of
the socket's call, each event of the adapter's own goes to its handler,
the core's C{data_to_send()} is written, one timer on the factory's clock is
due when the core's C{get_timer()} says, and a L{Terminated} event closes
the socket with its close code (logged) once the frames before it are
written. A core told that its call delivered its last words
(L{CoreServerProtocol.after_flush}: the direct API's C{finalResponse},
AudioHook's C{closed}) is driven again then. An adapter says only how its
upgrade is accepted (building its core), what its own events mean, and what
a lost socket does to its call.
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from mgateway.ingress.events import LegAudio, Terminated
from mgateway.ingress.wsserver import GatewayServerFactory, GatewayServerProtocol

log = Logger()


class CoreServerProtocol(GatewayServerProtocol):
    """
    One socket driving one core. Subclasses set L{namespace} and
    L{handlers}, build L{core} in C{accept}, and may override the hooks
    L{opened}, L{terminated} and L{lost}.

    @ivar core: the socket's ingress core; None until the upgrade is accepted.
    @ivar media: the L{mgateway.interfaces.IMediaFeed} of the call the socket
        feeds, None while it feeds none.
    @ivar guid: the registry guid of that call, once attached.
    """

    #: The call registry namespace of the socket's calls.
    namespace: str
    #: C{{event type: handler(self, event)}} for the core's events that are
    #: the adapter's own; L{LegAudio} and L{Terminated} are handled here.
    handlers: Mapping[type, Callable] = {}
    core = None
    media = None
    guid: str | None = None
    _timer = None

    def onOpen(self):
        self.factory.sockets.add(self)
        self.opened()
        self.drive()

    def onMessage(self, payload: bytes, isBinary: bool):
        if self.core is None:
            return
        if isBinary:
            self.core.receive_bytes(payload)
        else:
            # Autobahn has checked that a text frame is UTF-8.
            self.core.receive_text(payload.decode("utf-8", "replace"))
        self.drive()

    def drive(self) -> None:
        """Carry out what the core asks, write its frames, arm its timer; close once it terminated."""
        terminated = None
        # Handling an event may cause more (a declined AudioHook open).
        while events := self.core.events():
            for event in events:
                if isinstance(event, LegAudio):
                    if self.media is not None:
                        self.media.audio(event.leg, event.pcm, filled=event.filled)
                elif isinstance(event, Terminated):
                    terminated = event
                elif (handler := self.handlers.get(type(event))) is not None:
                    handler(self, event)
        self.send_frames()
        self._arm_timer()
        if terminated is not None:
            self.terminated(terminated)

    def send_frames(self) -> None:
        """Write what the core has to send (text frames), while the socket is open."""
        for text in self.core.data_to_send():
            if self.state == self.STATE_OPEN:
                self.sendMessage(text.encode("utf-8"), isBinary=False)

    def _arm_timer(self) -> None:
        """One timer on the factory's clock, due when the core's next is; none once the socket is gone."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        deadline = self.core.get_timer() if self.state != self.STATE_CLOSED else None
        if deadline is not None:
            clock = self.factory.clock
            self._timer = clock.callLater(max(0.0, deadline - clock.seconds()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.core.handle_timer(self.factory.clock.seconds())
        self.drive()

    def attach(self, guid: str, legs: Iterable[str], **options) -> None:
        """
        Feed C{legs} of call C{guid} of L{namespace} (options as
        L{mgateway.interfaces.ICallRegistry.attach}).

        @raise mgateway.calls.errors.LegBusy: another feed has one of the legs.
        """
        self.media = self.factory.registry.attach(self.namespace, guid, legs, **options)
        self.guid = guid

    def hang_up(self) -> Deferred:
        """Let go of the call now: fires once it ended, flushed, if no other feed feeds it."""
        media, self.media = self.media, None
        if media is None:
            return succeed(None)
        return media.hang_up().addErrback(self.last_words_lost)

    def after_flush(self, flushing: Deferred, tell: Callable) -> None:
        """
        Once C{flushing} fires (the call ended, its last words delivered:
        L{hang_up}), hand what it fired with to C{tell} (the core's) and
        drive the core, so that what it held back for the flush goes out.
        """
        flushing.addCallback(tell).addCallback(lambda _: self.drive())

    def last_words_lost(self, failure) -> None:
        log.failure("call {namespace}/{guid}: ending it failed, its last words may be lost", failure,
                    namespace=self.namespace, guid=self.guid)

    def onClose(self, wasClean, code, reason):
        self.factory.sockets.discard(self)
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self.core is not None:
            self.lost(code)

    # -- hooks ------------------------------------------------------------

    def opened(self) -> None:
        """The socket is open, before its core is first driven."""

    def terminated(self, event: Terminated) -> None:
        """The core gave up on the connection: close it with the code (and reason) it says."""
        log.info("{namespace} call {guid}: closing the socket ({code}): {reason}", namespace=self.namespace,
                 guid=self.guid or "(none yet)", code=event.close_code, reason=event.reason)
        self.sendClose(code=event.close_code, reason=event.reason)

    def lost(self, code: int | None) -> None:
        """The socket is gone (closed with C{code}): the call ends, unless another feed feeds it."""
        self.hang_up()


class CoreServerFactory(GatewayServerFactory):
    """
    What the sockets of one WebSocket ingress share. Its protocols derive
    from L{CoreServerProtocol}.

    @param registry: the L{mgateway.interfaces.ICallRegistry} the sockets feed.
    @param clock: the cores' clock (their timers).
    @param max_frame_bytes: the transport's limit on a message and on a frame.
    @param protocol_options: more of Autobahn's protocol options.
    @ivar sockets: the open sockets.
    """

    def __init__(self, *, registry, clock: IReactorTime, max_frame_bytes: int, **protocol_options):
        super().__init__()
        self.registry = registry
        self.clock = clock
        self.sockets: set[CoreServerProtocol] = set()
        # failByDrop=False: a peer that breaks the protocol (an oversized
        # message: 1009) still gets a closing handshake that says why.
        self.setProtocolOptions(
            maxMessagePayloadSize=max_frame_bytes,
            maxFramePayloadSize=max_frame_bytes,
            failByDrop=False,
            **protocol_options,
        )

    def end_sockets(self, end: Callable[[CoreServerProtocol], None]) -> Deferred:
        """
        Ask every open socket to end (C{end(protocol)} tells its core how),
        and drive it: fires once each of them is closed.
        """
        sockets = list(self.sockets)
        for protocol in sockets:
            end(protocol)
            protocol.drive()
        return DeferredList([protocol.is_closed for protocol in sockets], consumeErrors=True)
