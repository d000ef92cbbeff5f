# -*- test-case-name: tests.test_text_format,tests.test_direct_session -*-
"""
The spec's JSON shapes for recognised speech, in one place, so that the webhook,
the direct WebSocket API and the after-call endpoint cannot drift apart.
"""

from __future__ import annotations

from datetime import datetime, timezone

from mgateway.transcript import TranscriptEvent, Utterance, Word


def transcript_message(utterance: Utterance, detailed_tokens: bool) -> dict:
    """
    The C{transcript} message: what the direct API sends and what the webhook
    carries as C{autotranscribeResponse}.

    With C{detailed_tokens}, the utterance item also holds C{tokens}: one
    C{{content, start, end}} object per word, with C{punctuationAfter} /
    C{punctuationBefore} where smart formatting attached punctuation (the
    guide names the token fields but not their nesting). With
    C{redacted_and_unredacted}, the item also holds C{unredactedText}.
    """
    item: dict = {"text": utterance.text}
    if utterance.unredacted_text is not None:
        item["unredactedText"] = utterance.unredacted_text
    if detailed_tokens:
        item["tokens"] = [token_json(w) for w in utterance.words]
    return {
        "message": "transcript",
        "start": utterance.start_ms,
        "end": utterance.end_ms,
        "utterance": [item],
    }


def token_json(word: Word) -> dict:
    """One detailed token in the spec's shape."""
    token: dict = {"content": word.text, "start": word.start_ms, "end": word.end_ms}
    if word.punctuation_after:
        token["punctuationAfter"] = word.punctuation_after
    if word.punctuation_before:
        token["punctuationBefore"] = word.punctuation_before
    return token


def webhook_body(event: TranscriptEvent) -> dict:
    """The real-time webhook's C{transcript} POST body."""
    return {
        "type": "transcript",
        "externalConversationId": event.conversation_id,
        "streamId": event.stream_id,
        "sender": {
            "externalId": event.sender.external_id,
            "role": event.sender.role,
        },
        "autotranscribeResponse": transcript_message(
            event.utterance, event.detailed_tokens
        ),
    }


def timestamp(moment: datetime) -> str:
    """RFC 3339 UTC with milliseconds, as in the spec's examples."""
    utc = moment.astimezone(timezone.utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"
