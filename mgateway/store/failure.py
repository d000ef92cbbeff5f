# -*- test-case-name: tests.test_webhook_targets -*-
"""
The record of one utterance a webhook target did not get: kept in the
transcript store (C{webhook_failures}) next to the utterance itself, so that an
operator can see, per conversation, what a receiver missed and why.
"""

from __future__ import annotations

from datetime import datetime

import attrs

from mgateway.transcript import TranscriptEvent
from mgateway.wire import timestamp


@attrs.frozen
class WebhookFailure:
    """
    @ivar message_id: the utterance's C{messageId} in the after-call messages.
    @ivar start_ms: where the utterance starts and ends on its stream.
    @ivar status: the HTTP status of the answer, or L{None} when there was none.
    @ivar error: what went wrong: C{"HTTP 503"}, C{"timeout"}, C{"dropped"}, or
        the class of the connection, TLS or token error.
    @ivar reason: the details, as logged.
    @ivar at: when it was given up on (aware, UTC).
    """

    conversation_id: str
    stream_id: str
    message_id: str
    start_ms: int
    end_ms: int
    target: str
    status: int | None
    error: str
    reason: str
    at: datetime

    @classmethod
    def of(cls, event: TranscriptEvent, *, target: str, status: int | None, error: str,
           reason: str, at: datetime) -> WebhookFailure:
        return cls(event.conversation_id, event.stream_id, event.message_id, event.utterance.start_ms,
                   event.utterance.end_ms, target, status, error, reason, at)

    def to_json(self) -> dict:
        """An item of C{GET /mg-autotranscribe/v1/webhook-failures}."""
        return {
            "externalConversationId": self.conversation_id,
            "streamId": self.stream_id,
            "messageId": self.message_id,
            "start": self.start_ms,
            "end": self.end_ms,
            "target": self.target,
            "status": self.status,
            "error": self.error,
            "reason": self.reason,
            "timestamp": timestamp(self.at),
        }
