# -*- test-case-name: tests.test_store -*-
"""The stored form of one utterance, and its after-call JSON."""

from __future__ import annotations

import json
from datetime import datetime

import attrs

from mgateway.transcript import TranscriptEvent
from mgateway.wire import timestamp, token_json


@attrs.frozen
class StoredMessage:
    """
    One row of the after-call store.

    @ivar message_id: a ULID string: unique and sortable by creation time.
    @ivar created: when the gateway produced the message (aware, UTC).
    @ivar spoken: wall-clock end of the utterance (aware, UTC); the
        C{clientTimestamp} of the after-call API.
    @ivar language: the stream's language tag (C{None} if not known, as for
        messages stored before it was recorded).
    @ivar unredacted_text: the text before redaction, kept only when the
        request asked for C{redacted_and_unredacted}.
    @ivar tokens_json: the detailed tokens (a JSON array), kept only when the
        request asked for C{detailedToken}.
    """

    message_id: str
    namespace: str
    conversation_id: str
    stream_id: str
    role: str
    sender_external_id: str | None
    text: str
    start_ms: int
    end_ms: int
    created: datetime
    spoken: datetime
    language: str | None = None
    unredacted_text: str | None = None
    tokens_json: str | None = None

    @classmethod
    def from_event(cls, event: TranscriptEvent) -> StoredMessage:
        return cls(
            message_id=event.message_id,
            namespace=event.namespace,
            conversation_id=event.conversation_id,
            stream_id=event.stream_id,
            role=event.sender.role,
            sender_external_id=event.sender.external_id,
            text=event.utterance.text,
            start_ms=event.utterance.start_ms,
            end_ms=event.utterance.end_ms,
            created=event.created,
            spoken=event.spoken,
            language=event.language,
            unredacted_text=event.utterance.unredacted_text,
            tokens_json=json.dumps([token_json(w) for w in event.utterance.words])
            if event.detailed_tokens else None,
        )

    def to_json(self) -> dict:
        """An item of C{GET /conversation/v1/conversation/messages}."""
        item = {
            "text": self.text,
            "sender": {"role": self.role, "externalId": self.sender_external_id},
            "messageId": self.message_id,
            "createdTimestamp": timestamp(self.created),
            "clientTimestamp": timestamp(self.spoken),
        }
        if self.unredacted_text is not None:
            item["unredactedText"] = self.unredacted_text
        if self.tokens_json is not None:
            item["tokens"] = json.loads(self.tokens_json)
        return item
