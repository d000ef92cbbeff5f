# -*- test-case-name: tests.test_twilio_feeds,tests.test_twilio_restart -*-
"""
Which Twilio streams feed each call, by Call SID, and which of them a
restarted stream supersedes: those carrying any of its tracks, whatever state
they are in (stalled, half-open, or lost and waiting for the restart). No
I/O: a feed is anything with C{media.legs} (the tracks it feeds) and
C{waiting_for_restart}.
"""

from __future__ import annotations

from typing import Iterable


class CallFeeds:
    def __init__(self) -> None:
        self._feeds: dict[str, list] = {}

    def superseded(self, call_sid: str, tracks: Iterable[str]) -> list:
        """The streams of the call that a new one with C{tracks} takes over from."""
        tracks = set(tracks)
        return [old for old in self._feeds.get(call_sid, ()) if tracks & set(old.media.legs)]

    def add(self, call_sid: str, feed) -> None:
        self._feeds.setdefault(call_sid, []).append(feed)

    def forget(self, call_sid: str, feed) -> None:
        """The stream no longer feeds the call."""
        feeds = self._feeds.get(call_sid, [])
        if feed in feeds:
            feeds.remove(feed)
        if not feeds:
            self._feeds.pop(call_sid, None)

    def waiting(self) -> list:
        """The streams lost without a C{stop} whose calls wait for a restart."""
        return [feed for feeds in self._feeds.values() for feed in feeds if feed.waiting_for_restart]
