# -*- test-case-name: tests.test_store -*-
"""Deletes stored transcripts once they are older than the retention period."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from mgateway.interfaces import ITranscriptStore

log = Logger()


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class RetentionService(TimerService):
    """
    Purges the store when started, then every C{interval_seconds}.

    A purge that fails is logged and the next one runs on time; a purge still
    running when the next is due delays it (the store is never asked twice at
    once). Stopping waits for a purge in progress.
    """

    def __init__(
        self,
        store: ITranscriptStore,
        clock: IReactorTime,
        retention: timedelta,
        interval_seconds: float,
        now: Callable[[], datetime] = utc_now,
    ):
        super().__init__(interval_seconds, self._purge)
        self.clock = clock
        self._store = store
        self._retention = retention
        self._now = now

    def _purge(self) -> Deferred:
        older_than = self._now() - self._retention
        d = maybeDeferred(self._store.purge, older_than)
        d.addCallbacks(
            lambda count: log.info(
                "purged {count} transcript messages created before {older_than}",
                count=count,
                older_than=older_than.isoformat(),
            ),
            lambda failure: log.failure(
                "purging transcript messages created before {older_than} failed",
                failure,
                older_than=older_than.isoformat(),
            ),
        )
        return d
