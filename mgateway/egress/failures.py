# -*- test-case-name: tests.test_webhook_targets -*-
"""
Records every utterance a webhook target did not get in the failure log (the
store), through a bounded L{DeliveryQueue}, so that a stalled store holds a
bounded number of records and a dropped record is still logged.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from mgateway.egress.queue import DeliveryQueue
from mgateway.interfaces import IWebhookFailureLog
from mgateway.store.failure import WebhookFailure

log = Logger()

#: Records written at once, and waiting behind them.
CONCURRENCY = 2
QUEUE_SIZE = 1000


def failure_recorder(failures: IWebhookFailureLog, clock: IReactorTime,
                     queue_size: int = QUEUE_SIZE) -> Callable[[WebhookFailure], None]:
    """A sink's C{on_failure}: writes each failure to C{failures}, logging one that is not written."""

    def write(failure: WebhookFailure):
        return failures.record(failure).addErrback(lambda problem: log.failure(
            "recording the webhook failure of {guid} (stream {stream_id}, target {target}) failed",
            problem, guid=failure.conversation_id, stream_id=failure.stream_id,
            target=failure.target))

    def dropped(failure: WebhookFailure, why: str) -> None:
        log.warn("webhook failure of {guid} (stream {stream_id}, target {target}, {error}) "
                 "not recorded: {why}", guid=failure.conversation_id, stream_id=failure.stream_id,
                 target=failure.target, error=failure.error, why=why)

    queue = DeliveryQueue(write, clock=clock, concurrency=CONCURRENCY, queue_size=queue_size,
                          on_drop=dropped)
    return queue.put
