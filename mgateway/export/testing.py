"""An in-memory L{IExportLedger}, for tests of the code around it."""

from __future__ import annotations

from datetime import date, datetime

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from mgateway.export.interfaces import IExportLedger
from mgateway.export.ledger import BUILDING, DONE
from mgateway.store.message import StoredMessage


@implementer(IExportLedger)
class MemoryExportLedger:
    """The claims and messages of one process; answers at once."""

    def __init__(self, messages: list[StoredMessage] = ()):
        self.messages = list(messages)
        self.claims: dict[tuple[str, date], tuple[str, str, datetime]] = {}

    def messages_created(self, start: datetime, end: datetime) -> Deferred:
        chosen = [m for m in self.messages if start <= m.created < end]
        return succeed(sorted(chosen, key=lambda m: (m.created, m.message_id)))

    def claim(self, feed, day, node, now, stale_before) -> Deferred:
        found = self.claims.get((feed, day))
        if found is None or (found[0] == BUILDING and found[2] < stale_before):
            self.claims[(feed, day)] = (BUILDING, node, now)
            return succeed(True)
        return succeed(False)

    def finish(self, feed, day, node, now) -> Deferred:
        if self.claims.get((feed, day), (None, None))[1] == node:
            self.claims[(feed, day)] = (DONE, node, now)
        return succeed(None)

    def release(self, feed, day, node) -> Deferred:
        if self.claims.get((feed, day), (None, None))[:2] == (BUILDING, node):
            del self.claims[(feed, day)]
        return succeed(None)

    def state(self, feed, day) -> Deferred:
        found = self.claims.get((feed, day))
        return succeed(None if found is None else found[:2])
