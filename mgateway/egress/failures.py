"""Records every utterance a webhook target did not get in the failure log (the store)."""

from __future__ import annotations

from typing import Callable

from twisted.logger import Logger

from mgateway.interfaces import IWebhookFailureLog
from mgateway.store.failure import WebhookFailure

log = Logger()


def failure_recorder(failures: IWebhookFailureLog) -> Callable[[WebhookFailure], None]:
    """A sink's C{on_failure} that writes each failure to C{failures}, logging a write that fails."""

    def record(failure: WebhookFailure) -> None:
        d = failures.record(failure)
        d.addErrback(lambda problem: log.failure(
            "recording the webhook failure of {guid} (stream {stream_id}, target {target}) failed",
            problem, guid=failure.conversation_id, stream_id=failure.stream_id,
            target=failure.target))

    return record
