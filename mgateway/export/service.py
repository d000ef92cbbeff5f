# -*- test-case-name: tests.test_export_service,tests.test_file_exporter_api -*-
"""
The daily build of the feed: a timer service on the injected clock.

Every day at the configured hour (02:00 UTC by default) it builds the day
before, as the guides promise. At start-up it builds that day too if it is due
and nobody has (a node that was down at 02:00 catches up). Of several nodes
sharing the transcript store one builds; the others see the claim and skip.
Files older than the store's retention are deleted with each run, whether
or not this node builds (files built by C{asapp-mg export} age out too).
"""

from __future__ import annotations

import os
import socket
from datetime import date, datetime, time, timedelta, timezone

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from mgateway.export import feed
from mgateway.export.build import FeedExporter
from mgateway.interfaces import IExportLedger
from mgateway.export.ledger import StoreExportLedger
from mgateway.store.backends import open_store

log = Logger()

#: How long a claim of a node still building holds before another node may
#: take the day over (the first node is taken to have died).
STALE_CLAIM = timedelta(hours=1)


def node_name() -> str:
    return f"{socket.gethostname()}/{os.getpid()}"


def due_day(now: datetime, build_hour: int) -> date:
    """The latest day whose build time has come: the day before the last build hour passed."""
    return (now - timedelta(hours=build_hour)).date() - timedelta(days=1)


def next_build(now: datetime, build_hour: int) -> datetime:
    """The first build time strictly after C{now}."""
    today = datetime.combine(now.date(), time(build_hour), tzinfo=timezone.utc)
    return today if today > now else today + timedelta(days=1)


class DailyExportService(Service):
    """
    @param retention: files of days older than this are deleted (the store's
        retention), or C{None} to keep them.
    @param build: whether this node builds the feed (C{exporter.enabled}), or
        only deletes old files.
    """

    def __init__(self, exporter: FeedExporter, ledger: IExportLedger, clock: IReactorTime,
                 build_hour: int, retention: timedelta | None, node: str | None = None,
                 build: bool = True):
        self._exporter = exporter
        self._ledger = ledger
        self._clock = clock
        self._build_hour = build_hour
        self._retention = retention
        self.node = node or node_name()
        self._build = build
        self._timer: IDelayedCall | None = None
        #: Fires when the run in progress (or the last one) has ended.
        self.last_run: Deferred = succeed(None)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.seconds(), timezone.utc)

    def startService(self) -> None:
        super().startService()
        self._timer = self._clock.callLater(0, self._run)

    def stopService(self) -> Deferred:
        super().stopService()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        return self.last_run

    def _run(self) -> None:
        self.last_run = ensureDeferred(self.run_once()).addErrback(
            lambda failure: log.failure("the daily {feed} export failed", failure, feed=feed.FEED))
        self.last_run.addBoth(lambda _: self._schedule())

    def _schedule(self) -> None:
        if not self.running:
            return
        now = self._now()
        self._timer = self._clock.callLater((next_build(now, self._build_hour) - now).total_seconds(), self._run)

    async def run_once(self) -> bool:
        """
        Purge, then build the due day if no node has; whether this node built
        it. A failed purge is logged and does not hold up the build.
        """
        now = self._now()
        if self._retention is not None:
            try:
                await self._exporter.purge(now - self._retention)
            except Exception:
                log.failure("deleting the {feed} feed's files past retention failed", feed=feed.FEED)
        if not self._build:
            return False
        day = due_day(now, self._build_hour)
        if not await self._ledger.claim(feed.FEED, day, self.node, now, now - STALE_CLAIM):
            # None: the other node gave its claim up since; the next run retries.
            state, other = await self._ledger.state(feed.FEED, day) or ("released", None)
            log.info("{feed} feed of {day}: not building, {state} by {other}",
                     feed=feed.FEED, day=day.isoformat(), state=state, other=other)
            return False
        try:
            await self._exporter.build_day(day)
        except BaseException:
            await self._ledger.release(feed.FEED, day, self.node)
            raise
        await self._ledger.finish(feed.FEED, day, self.node, self._now())
        return True


def make_exporter(config, store, reactor, parent: MultiService) -> DailyExportService:
    """
    The daily run of the feed on C{store}, a child of C{parent}: it builds
    with C{exporter.enabled}, and deletes files past the store's retention
    either way.
    """
    settings = config.exporter
    ledger = StoreExportLedger(store)
    exporter = FeedExporter(ledger, settings.directory, settings.formats, reactor)
    service = DailyExportService(exporter, ledger, reactor, settings.build_hour,
                                 timedelta(days=config.store.retention_days), build=settings.enabled)
    service.setName("exports")
    service.setServiceParent(parent)
    return service


async def export_range(config, reactor, first: date, last: date) -> list:
    """
    Build the feed of the days C{first} to C{last} now, from the configured
    store (the C{asapp-mg export} command): the files of those days are
    replaced, whatever the daily builds did.
    """
    store = open_store(config.store.backend, dsn=config.store.dsn,
                       sqlite_path=config.store.sqlite_path, reactor=reactor)
    try:
        await store.start()
        exporter = FeedExporter(StoreExportLedger(store), config.exporter.directory,
                                config.exporter.formats, reactor)
        return await exporter.build_range(first, last)
    finally:
        await store.close()
