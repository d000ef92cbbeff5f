# -*- test-case-name: tests.test_export_service -*-
"""Builds the feed's files for whole days, from the store, off the reactor thread."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from pathlib import Path

from prometheus_client import Counter
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from mgateway.export import feed
from mgateway.interfaces import IExportLedger

log = Logger()

BUILDS = Counter("asapp_mg_export_builds", "Days of the File Exporter feed built, by outcome.", ["outcome"])


class FeedExporter:
    """
    Writes the C{utterances} files of a day, hour by hour: one query per hour
    (so memory holds one hour of rows), the files written on the reactor's
    thread pool, each atomically. Building a day again replaces its files.

    @param directory: the root of the feed's partitions.
    @param formats: the formats written (C{jsonl}, C{csv}).
    """

    def __init__(self, ledger: IExportLedger, directory: Path, formats: Sequence[str], reactor):
        self.ledger = ledger
        self.directory = directory
        self.formats = tuple(formats)
        self._reactor = reactor

    def _blocking(self, work, *args):
        return deferToThreadPool(self._reactor, self._reactor.getThreadPool(), work, *args)

    async def build_day(self, day: date) -> list[Path]:
        """Write every file of C{day}; a failure is logged and raised, no file left half written."""
        start = feed.day_start(day)
        written: list[Path] = []
        try:
            for hour in range(24):
                begin = start + timedelta(hours=hour)
                messages = await self.ledger.messages_created(begin, begin + timedelta(hours=1))
                written += await self._blocking(
                    feed.write_hour, self.directory, day, hour, messages, self.formats)
        except Exception:
            log.failure("building the {feed} feed of {day} failed after {count} files",
                        feed=feed.FEED, day=day.isoformat(), count=len(written))
            BUILDS.labels(outcome="failed").inc()
            raise
        BUILDS.labels(outcome="built").inc()
        log.info("built the {feed} feed of {day}: {count} files in {directory}",
                 feed=feed.FEED, day=day.isoformat(), count=len(written), directory=str(self.directory))
        return written

    async def build_range(self, first: date, last: date) -> list[Path]:
        """Every day from C{first} to C{last}, both included."""
        written: list[Path] = []
        day = first
        while day <= last:
            written += await self.build_day(day)
            day += timedelta(days=1)
        return written

    async def purge(self, older_than: datetime) -> list[str]:
        """Delete the days whose rows were all created before C{older_than}."""
        deleted = await self._blocking(feed.purge_older, self.directory, older_than)
        if deleted:
            log.info("purged the {feed} feed of {days}", feed=feed.FEED, days=", ".join(deleted))
        return deleted
