# -*- test-case-name: tests.test_direct_session -*-
"""
The direct WebSocket API's session, as a sans-I/O state machine: the wire
protocol only.

Feed it what the client sent, what the call produced and the clock (its idle
timeout and duration limit are its own timers); read back the events for the
transport to carry out (start the call, its audio, a flush to perform, the
close code to use) and the frames to send. The stream itself (its recogniser,
its utterances, its summary) is a one-leg call of the call registry. See the
spec's "AI Transcribe via Direct Websocket" for the message sequence and
status codes.
"""

from __future__ import annotations

import enum
import json
from typing import Callable

import attrs

from mgateway.admission import DRAINING, Refusal
from mgateway.calls.oneleg import NOTHING_RECEIVED
from mgateway.calls.requests import TranscribeParams, TranscribeRuleBroken, check_id
from mgateway.calls.stream import StreamSummary
from mgateway.ingress.events import IngressError, LegAudio, Terminated
from mgateway.transcript import ROLES, Sender, TranscriptEvent
from mgateway.wire import transcript_message

STATUS_DESCRIPTIONS = {
    1000: "OK",
    4040: "Message format incorrect",
    4050: "Language not supported",
    4051: "Encoding not supported",
    4053: "Sample rate not supported",
    4056: "Wrong message order or missing required message",
    4083: "Connection idle timeout. Try streaming audio in real-time",
    4084: "Custom vocabulary phrase exceeds limit",
    4090: "Streaming duration over limit",
    4091: "Invalid vocabulary format",
    4092: "Redact only smart formatted text",
    4093: "Redaction only supported if detailedTokens in True",
    4094: "RedactionOutput cannot be unredacted or redacted_and_unredacted because of global config being to always redact",
    5000: "Internal service error",
    5001: "Service shutting down",
    5002: "No instances available",
}

VOCABULARY_CATEGORIES = ("address", "name", "number", "company", "currency")
#: The status code of each transcription rule a C{startStream} can break.
TRANSCRIBE_RULE_CODES = {"redactionOutput": 4040, "smartFormatting": 4092, "detailedToken": 4093}


def close_code(status_code: int) -> int:
    """
    The WebSocket close code of a stream ending with C{status_code}: codes
    4000-4999 are the application's own, so the spec's 4xxx status codes are
    used as they are. Others (1000, 5000, 5001) close normally (1000); the
    finalResponse sent just before says why.
    """
    return status_code if 4000 <= status_code <= 4999 else 1000


class SessionError(IngressError):
    """A client error carrying the spec's application status code (C{code})."""

    def __init__(self, code: int, detail: str = ""):
        super().__init__(close_code(code), detail)
        self.code = code
        self.detail = detail


@attrs.frozen
class VocabularyPhrase:
    phrase: str
    sounds_like: tuple[str, ...] = ()
    category: str | None = None


# Events for the transport, besides the shared LegAudio (named by the
# sender's role) and Terminated (after the finalResponse: close the socket).
@attrs.frozen
class Started:
    """A valid C{startStream}: start the stream's call."""

    sender: Sender
    transcribe: TranscribeParams


@attrs.frozen
class Flush:
    """Stop the stream's call (its last words come), then call L{DirectSession.flushed}."""


class State(enum.Enum):
    AWAITING_START = "awaiting startStream"
    STREAMING = "streaming"
    FLUSHING = "flushing"
    CLOSED = "closed"


def status(code: int, detail: str = "") -> dict:
    description = STATUS_DESCRIPTIONS[code]
    return {"code": str(code), "description": f"{description}: {detail}" if detail else description}


def _bool(message: dict, key: str, default: bool) -> bool:
    value = message.get(key, default)
    if not isinstance(value, bool):
        raise SessionError(4040, f"{key} must be true or false")
    return value


class DirectSession:
    """
    The shape of every ingress core (L{mgateway.ingress.events}): feed the
    client's frames with L{receive_text} / L{receive_bytes}, the call's
    output with L{transcript} / L{flushed}, the clock with L{handle_timer};
    read L{events} (L{Started}, the sender's audio as L{LegAudio}, L{Flush},
    and last L{Terminated}) and L{data_to_send} (the JSON frames to send, in
    order). Nothing raises on what the client sends: every ending is one
    C{finalResponse}, the last frame, followed by a L{Terminated} event with
    the WebSocket close code.

    @param canonical_language: the supported spelling of a language tag, or
        None when it cannot be transcribed.
    @param default_language: the language of a C{startStream} that names
        none (the spec's is C{en-US}; the gateway passes C{asr.default_language}).
    @param force_redaction: the gateway always redacts (C{redaction.always}):
        other C{redactionOutput}s get 4094.
    @param clock_now: seconds; when None the session has no timers.
    @param idle_timeout: seconds without a message from the client after
        which L{handle_timer} ends the stream with 4083.
    @param max_duration: seconds from the session's creation after which
        L{handle_timer} ends the stream with 4090.
    @param refusal: asked at C{startStream} why the node takes no new stream
        now (an L{mgateway.admission.Refusal}) or None: a draining node ends
        the stream with 5001, a full or unready one with 5002.
    """

    def __init__(
        self,
        stream_id: str,
        canonical_language: Callable[[str], str | None],
        max_message_bytes: int = 65536,
        max_vocabulary: int = 1000,
        max_phrase_chars: int = 100,
        default_language: str = "en-US",
        force_redaction: bool = False,
        clock_now: Callable[[], float] | None = None,
        idle_timeout: float | None = None,
        max_duration: float | None = None,
        refusal: Callable[[], Refusal | None] = lambda: None,
    ):
        self.stream_id = stream_id
        self._refusal = refusal
        self.force_redaction = force_redaction
        self.default_language = default_language
        self.state = State.AWAITING_START
        self.sender: Sender | None = None
        self.transcribe: TranscribeParams | None = None
        self.vocabulary: list[VocabularyPhrase] = []
        self._canonical = canonical_language
        self._max_message_bytes = max_message_bytes
        self._max_vocabulary = max_vocabulary
        self._max_phrase_chars = max_phrase_chars
        self._odd_byte = b""
        self._final_code = 1000
        self._final_detail = ""
        self._events: list = []
        self._data: list[str] = []
        self._now = clock_now
        self._idle_timeout = idle_timeout if clock_now is not None else None
        self._max_duration = max_duration if clock_now is not None else None
        self._opened_at = self._last_received_at = clock_now() if clock_now is not None else None

    def events(self) -> list:
        """What the input so far caused, oldest first; each call empties the list."""
        events, self._events = self._events, []
        return events

    def data_to_send(self) -> list[str]:
        """The JSON text frames to send, oldest first; each call empties the list."""
        data, self._data = self._data, []
        return data

    # -- input from the client -------------------------------------------

    def receive_text(self, text: str) -> None:
        """One text frame."""
        self._received()
        if self.state is State.CLOSED:
            return
        if self.state is State.FLUSHING:
            # Anything but audio after finishStream: dropped, and the final
            # response reports the wrong order.
            self._final_code, self._final_detail = 4056, "message after finishStream"
            return
        try:
            self._dispatch(self._parse(text))
        except SessionError as e:
            self._end(e.code, e.detail)

    def receive_bytes(self, data: bytes) -> None:
        """One binary frame: 16-bit little-endian PCM, split anywhere."""
        self._received()
        if self.state is State.AWAITING_START:
            self._end(4056, "audio before startStream")
            return
        if self.state is not State.STREAMING:
            return  # audio after finishStream is dropped
        if len(data) > self._max_message_bytes:
            self._end(4040, f"audio message of {len(data)} bytes exceeds {self._max_message_bytes}")
            return
        data = self._odd_byte + data
        whole = len(data) - len(data) % 2
        self._odd_byte = data[whole:]
        if whole:
            self._events.append(LegAudio(self.sender.role, data[:whole]))

    def _received(self) -> None:
        if self._now is not None:
            self._last_received_at = self._now()

    # -- timers -------------------------------------------------------------

    def get_timer(self) -> float | None:
        """When L{handle_timer} is next due (seconds on the session's clock), or None."""
        return min(self._deadlines().values(), default=None)

    def handle_timer(self, now: float) -> None:
        """Ends the stream with 4083 (idle) or 4090 (duration), whichever fell due first."""
        due = [(deadline, code) for code, deadline in self._deadlines().items() if now >= deadline]
        if due:
            self._end(min(due)[1])

    def _deadlines(self) -> dict[int, float]:
        """The status code each running limit ends the stream with, and when."""
        if self.state not in (State.AWAITING_START, State.STREAMING):
            return {}
        deadlines = {}
        if self._idle_timeout is not None:
            deadlines[4083] = self._last_received_at + self._idle_timeout
        if self._max_duration is not None:
            deadlines[4090] = self._opened_at + self._max_duration
        return deadlines

    # -- input from the gateway ------------------------------------------

    def transcript(self, event: TranscriptEvent) -> None:
        """An utterance of the stream's call."""
        if self.state is not State.CLOSED:
            self._send(transcript_message(event.utterance, event.detailed_tokens))

    def flushed(self, summary: StreamSummary) -> None:
        """The call has delivered everything: send the final response with its summary."""
        if self.state is State.FLUSHING:
            self._final(summary)

    def connection_lost(self) -> None:
        """The socket is gone: nothing more is sent and no timer runs."""
        self.state = State.CLOSED

    def shutting_down(self) -> None:
        self._end(5001)

    def internal_error(self, detail: str = "") -> None:
        self._end(5000, detail)

    # -- internals --------------------------------------------------------

    def _send(self, message: dict) -> None:
        self._data.append(json.dumps(message))

    def _parse(self, text: str) -> dict:
        if len(text.encode("utf-8")) > self._max_message_bytes:
            raise SessionError(4040, "message too large")
        try:
            message = json.loads(text)
        except ValueError:
            raise SessionError(4040, "not JSON") from None
        except RecursionError:
            raise SessionError(4040, "JSON nested too deeply") from None
        if not isinstance(message, dict) or not isinstance(message.get("message"), str):
            raise SessionError(4040, "expected a JSON object with a \"message\" field")
        return message

    def _dispatch(self, message: dict) -> None:
        kind = message["message"]
        if kind == "startStream":
            if self.state is not State.AWAITING_START:
                raise SessionError(4056, "startStream sent twice")
            self._start(message)
        elif kind == "updateVocabulary":
            self._update_vocabulary(message)
        elif kind == "finishStream":
            if self.state is not State.STREAMING:
                raise SessionError(4056, "finishStream before startStream")
            self.state = State.FLUSHING
            self._events.append(Flush())
        else:
            raise SessionError(4040, f"unknown message {kind!r}")

    def _start(self, message: dict) -> None:
        refused = self._refusal()
        if refused is not None:
            raise SessionError(5001 if refused.reason == DRAINING else 5002, refused.description)
        sender = message.get("sender")
        if not isinstance(sender, dict):
            raise SessionError(4040, "sender is required")
        role, external_id = sender.get("role"), sender.get("externalId")
        if role not in ROLES:
            raise SessionError(4040, "sender.role must be \"customer\" or \"agent\"")
        if not isinstance(external_id, str) or not external_id:
            raise SessionError(4040, "sender.externalId is required")
        check_id(external_id, "sender.externalId", lambda message: SessionError(4040, message))
        language = message.get("language", self.default_language)
        if not isinstance(language, str):
            raise SessionError(4040, "language must be a string")
        canonical = self._canonical(language)
        if canonical is None:
            raise SessionError(4050, language)
        rate = message.get("samplingRate", 8000)
        if not isinstance(rate, int) or isinstance(rate, bool):
            raise SessionError(4040, "samplingRate must be an integer")
        if rate != 8000:
            raise SessionError(4053, str(rate))
        encoding = message.get("encoding", "L16")
        if encoding != "L16":
            raise SessionError(4051, str(encoding))
        smart = _bool(message, "smartFormatting", True)
        detailed = _bool(message, "detailedToken", False)
        recording = _bool(message, "audioRecordingAllowed", False)
        redaction = message.get("redactionOutput", "redacted")
        try:
            transcribe = TranscribeParams(canonical, detailed, recording, redaction, smart)
        except TranscribeRuleBroken as e:
            code = TRANSCRIBE_RULE_CODES[e.field]
            raise SessionError(code, str(e) if code == 4040 else "") from None
        if self.force_redaction and transcribe.redaction_output != "redacted":
            raise SessionError(4094)
        self.transcribe = transcribe
        self.sender = Sender(role, external_id)
        self.state = State.STREAMING
        self._events.append(Started(self.sender, self.transcribe))
        self._send({"message": "startResponse", "streamID": self.stream_id, "status": status(1000)})

    def _update_vocabulary(self, message: dict) -> None:
        """Answered with a vocabularyResponse, whatever its status: the stream goes on."""
        self._send({"message": "vocabularyResponse", "status": self._add_vocabulary(message.get("phrases"))})

    def _add_vocabulary(self, phrases) -> dict:
        try:
            parsed = [self._phrase(p) for p in phrases] if isinstance(phrases, list) and phrases else None
        except SessionError as e:
            return status(e.code, e.detail)
        if parsed is None:
            return status(4091, "phrases must be a non-empty list")
        if len(self.vocabulary) + len(parsed) > self._max_vocabulary:
            return status(4084, f"at most {self._max_vocabulary} phrases per session")
        self.vocabulary.extend(parsed)
        return status(1000)

    def _phrase(self, item) -> VocabularyPhrase:
        if not isinstance(item, dict) or not isinstance(item.get("phrase"), str) or not item["phrase"].strip():
            raise SessionError(4091, "each entry needs a non-empty \"phrase\"")
        sounds_like = item.get("soundsLike", [])
        if not isinstance(sounds_like, list) or not all(isinstance(s, str) and s.strip() for s in sounds_like):
            raise SessionError(4091, "soundsLike must be a list of strings")
        category = item.get("category")
        if category is not None and category not in VOCABULARY_CATEGORIES:
            raise SessionError(4091, f"category must be one of {', '.join(VOCABULARY_CATEGORIES)}")
        for text in [item["phrase"], *sounds_like]:
            if len(text) > self._max_phrase_chars:
                raise SessionError(4084, f"phrase longer than {self._max_phrase_chars} characters")
        return VocabularyPhrase(item["phrase"], tuple(sounds_like), category)

    def _end(self, code: int, detail: str = "") -> None:
        """The stream ends with C{code}: at once before startStream, after the call's flush once started."""
        if self.state in (State.CLOSED, State.FLUSHING):
            return
        self._final_code, self._final_detail = code, detail
        if self.state is State.STREAMING:
            self.state = State.FLUSHING
            self._events.append(Flush())
        else:
            self._final(NOTHING_RECEIVED)

    def _final(self, summary: StreamSummary) -> None:
        self.state = State.CLOSED
        final_status = status(self._final_code, self._final_detail)
        self._send({
            "message": "finalResponse",
            "streamId": self.stream_id,
            "status": final_status,
            "summary": summary.to_json(filled=False),
        })
        self._events.append(Terminated(close_code(self._final_code),
                                       f"{self._final_code} {final_status['description']}"))
