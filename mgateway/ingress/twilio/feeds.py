# -*- test-case-name: tests.test_twilio_feeds,tests.test_twilio_restart -*-
"""
Which Twilio streams feed each call, by Call SID; which of them a restarted
stream supersedes (those carrying any of its tracks, whatever state they are
in: stalled, half-open, or lost and waiting for the restart); and how long a
call whose stream was lost without a C{stop} waits for that restart.

No I/O: the grace timers run on an injected clock, and a feed is anything
with C{media} (its L{mgateway.interfaces.IMediaFeed}: the tracks it feeds
are its C{legs}) and C{hang_up()} (let go of the call).
"""

from __future__ import annotations

from typing import Iterable

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

log = Logger()


class CallFeeds:
    """
    @param clock: the clock of the grace timers.
    @param reconnect_grace: the seconds a call whose stream was lost
        without a C{stop} waits for a restarted stream; 0 or less: it ends
        at once.
    """

    def __init__(self, clock: IReactorTime, reconnect_grace: float) -> None:
        self._clock = clock
        self._grace = reconnect_grace
        self._feeds: dict[str, list] = {}
        #: The feeds lost without a C{stop}, and when their calls stop waiting.
        self._waiting: dict[object, IDelayedCall] = {}

    def take_over(self, call_sid: str, tracks: Iterable[str]) -> list:
        """
        The streams of the call that a new one with C{tracks} supersedes,
        every leg of theirs released for it, so that the call never loses
        its last feed in between. Each still has to let go of the call.
        """
        tracks = set(tracks)
        superseded = [old for old in self._feeds.get(call_sid, ()) if tracks & set(old.media.legs)]
        for old in superseded:
            for leg in old.media.legs:
                old.media.release(leg)
        return superseded

    def add(self, call_sid: str, feed) -> None:
        self._feeds.setdefault(call_sid, []).append(feed)

    def forget(self, call_sid: str, feed) -> None:
        """The stream no longer feeds the call (nor waits for its restart)."""
        timer = self._waiting.pop(feed, None)
        if timer is not None and timer.active():
            timer.cancel()
        feeds = self._feeds.get(call_sid, [])
        if feed in feeds:
            feeds.remove(feed)
        if not feeds:
            self._feeds.pop(call_sid, None)

    def lost(self, call_sid: str, feed) -> None:
        """
        The stream was lost without a C{stop} (Twilio always sends one when a
        stream or call ends): the customer restarts it, so its call waits
        for the restart, and is let go if none comes in time.
        """
        if self._grace <= 0:
            feed.hang_up()
            return
        log.warn("twilio call {guid}: stream lost without a stop; the call waits {grace} s for a "
                 "restarted stream", guid=call_sid, grace=self._grace)
        self._waiting[feed] = self._clock.callLater(self._grace, self._restart_missed, call_sid, feed)

    def _restart_missed(self, call_sid: str, feed) -> None:
        del self._waiting[feed]
        log.warn("twilio call {guid}: no stream restarted within {grace} s: the call ends",
                 guid=call_sid, grace=self._grace)
        feed.hang_up()

    def waiting(self) -> list:
        """The streams lost without a C{stop} whose calls wait for a restart."""
        return list(self._waiting)

    def end_waiting(self) -> Deferred:
        """Let go of the calls that wait for a restart: fires once each ended, flushed."""
        return DeferredList([feed.hang_up() for feed in self.waiting()], consumeErrors=True)
