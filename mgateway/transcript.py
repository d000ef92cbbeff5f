# -*- test-case-name: tests.test_call_registry,tests.test_webhook -*-
"""
Values that describe recognised speech as it travels from the recogniser to the
sinks (webhook, store, direct WebSocket reply).

Times are integer milliseconds on the timeline of one participant stream: 0 is the
first sample of that stream's audio, whether or not transcription was started then.
"""

from __future__ import annotations

from datetime import datetime

import attrs
from ulid import ULID

ROLES = ("customer", "agent")


def _non_negative(instance, attribute, value):
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


@attrs.frozen
class Word:
    """One recognised word with its position on the stream timeline."""

    text: str
    start_ms: int = attrs.field(validator=_non_negative)
    end_ms: int = attrs.field(validator=_non_negative)
    confidence: float = 1.0
    #: Punctuation smart formatting attached after / in front of the word.
    punctuation_after: str = ""
    punctuation_before: str = ""

    def shifted(self, offset_ms: int) -> Word:
        return attrs.evolve(
            self, start_ms=self.start_ms + offset_ms, end_ms=self.end_ms + offset_ms
        )


@attrs.frozen
class Utterance:
    """One complete utterance of one participant (a Vosk final result)."""

    text: str
    start_ms: int = attrs.field(validator=_non_negative)
    end_ms: int = attrs.field(validator=_non_negative)
    words: tuple[Word, ...] = ()
    #: With C{redactionOutput} C{redacted_and_unredacted}: the text before
    #: redaction (C{text} is then the redacted one).
    unredacted_text: str | None = None

    def shifted(self, offset_ms: int) -> Utterance:
        """The same utterance moved later on the timeline by C{offset_ms}."""
        return attrs.evolve(
            self,
            start_ms=self.start_ms + offset_ms,
            end_ms=self.end_ms + offset_ms,
            words=tuple(w.shifted(offset_ms) for w in self.words),
        )


@attrs.frozen
class Sender:
    """Who spoke: the spec's C{sender} object."""

    role: str = attrs.field(validator=attrs.validators.in_(ROLES))
    external_id: str | None = None


@attrs.frozen
class TranscriptEvent:
    """
    An utterance together with everything a sink needs to deliver or store it.

    @ivar namespace: where the call came from (C{siprec}, C{twilio}, ...,
        or C{direct} for the direct WebSocket API).
    @ivar conversation_id: the customer's identifier of the conversation: the
        call's guid, or the C{externalId} of a direct session.
    @ivar created: when the gateway produced the utterance (UTC).
    @ivar spoken: wall-clock time at which the utterance ended (UTC).
    @ivar detailed_tokens: whether the client asked for word-level tokens.
    @ivar language: the language tag the stream is transcribed in.
    @ivar app: the C{asapp-api-id} of the app that started transcription
        (which webhook targets get it); L{None} when no app did.
    @ivar message_id: the utterance's id, a ULID of C{created}: the after-call
        message's C{messageId}, and the key of a webhook failure record.
    """

    namespace: str
    conversation_id: str
    stream_id: str
    sender: Sender
    utterance: Utterance
    created: datetime
    spoken: datetime
    detailed_tokens: bool = False
    language: str | None = None
    app: str | None = None
    message_id: str = attrs.field()

    @message_id.default
    def _new_message_id(self) -> str:
        return str(ULID.from_datetime(self.created))
