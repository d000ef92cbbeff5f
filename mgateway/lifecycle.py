# -*- test-case-name: tests.test_lifecycle -*-
"""
Services that start in order and stop in reverse, each waiting for the one
before: the shape of the gateway's service tree.

Twisted's L{MultiService} calls its children's C{startService} and
C{stopService} in order but waits for none of them, so a store could close
while the calls were still flushing into it. L{InOrder} waits: each child
starts once the one before it is ready, and stops once the one after it has
stopped.
"""

from __future__ import annotations

from typing import Callable

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

log = Logger()


class InOrder(MultiService):
    """
    A L{MultiService} whose children start one after the other in the order
    they were added (a child's C{startService} may return a L{Deferred}: the
    next starts when it fires) and stop in the reverse order, likewise.

    @ivar ready: fires once every child started; fails with the first
        child that could not start (those after it are not started).
    """

    ready: Deferred | None = None
    #: The name of the child being stopped now, while the stop is under way.
    stopping: str | None = None

    def privilegedStartService(self) -> None:
        # Nothing listens before the children before it are ready, so no
        # child starts early, not even with privileges.
        Service.privilegedStartService(self)

    def startService(self) -> None:
        Service.startService(self)
        self.ready = Deferred.fromCoroutine(self._start_each())

    async def _start_each(self) -> None:
        for child in list(self):
            if not self.running:  # stopped while an earlier child was starting
                return
            await maybeDeferred(child.startService)

    def stopService(self) -> Deferred:
        Service.stopService(self)
        return Deferred.fromCoroutine(self._stop_each())

    async def _stop_each(self) -> None:
        for child in reversed(list(self)):
            if not child.running:
                continue
            self.stopping = child.name
            try:
                await maybeDeferred(child.stopService)
            except Exception:
                log.failure("stopping {name} failed", name=child.name)
        self.stopping = None


class Step(Service):
    """
    A child whose start and stop are one call each; either may return a
    L{Deferred}, which the parent L{InOrder} waits for.
    """

    def __init__(self, name: str, start: Callable | None = None, stop: Callable | None = None):
        self.name = name
        self._start = start
        self._stop = stop

    def startService(self):
        super().startService()
        return maybeDeferred(self._start) if self._start is not None else None

    def stopService(self):
        super().stopService()
        return maybeDeferred(self._stop) if self._stop is not None else None


@implementer(IStreamServerEndpoint)
class _Announcing:
    """An endpoint that hands the port it listens on (or why it could not) to a Deferred."""

    def __init__(self, endpoint, announce: Deferred):
        self._endpoint = endpoint
        self._announce = announce

    def listen(self, factory) -> Deferred:
        def announced(result):
            if isinstance(result, Failure):
                self._announce.errback(result)
                return None  # reported once, through the announcement
            self._announce.callback(result)
            return result

        return self._endpoint.listen(factory).addBoth(announced)


class Listener(StreamServerEndpointService):
    """
    One listening endpoint. Its start is ready once it listens: L{InOrder}
    starts the next child then, and a port that cannot be had fails start-up.

    @param name: what it listens on (the endpoint description).
    @ivar port: the listening port, once listening.
    """

    port = None

    def __init__(self, name: str, endpoint, factory):
        self.name = name
        self._listening = Deferred()
        super().__init__(_Announcing(endpoint, self._listening), factory)

    def startService(self):
        super().startService()
        return self._listening.addCallback(self._listens)

    def _listens(self, port) -> None:
        self.port = port
        log.info("listening on {description}", description=self.name)


def within(work: Deferred, seconds: float, clock, what: str,
           busy_with: Callable[[], str | None] = lambda: None) -> Deferred:
    """
    A Deferred that fires with L{None} once C{work} is done or C{seconds}
    have passed on C{clock}, whichever comes first; running out of time is
    logged (C{what} did not finish, and C{busy_with()}: the step it was at),
    and C{work} goes on unwaited for. Twisted waits for a service's stop
    without limit: this bounds it.
    """
    done = Deferred()

    def out_of_time() -> None:
        log.warn("{what}: the grace of {seconds} s ran out while at {step}; not waiting for the rest",
                 what=what, seconds=seconds, step=busy_with() or "the end")
        done.callback(None)

    deadline = clock.callLater(seconds, out_of_time)

    def finished(result):
        if deadline.active():
            deadline.cancel()
            done.callback(None)
        if isinstance(result, Failure):
            log.failure("{what} failed", result, what=what)
        return None

    work.addBoth(finished)
    return done
