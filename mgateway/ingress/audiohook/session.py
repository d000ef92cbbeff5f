# -*- test-case-name: tests.test_audiohook_session -*-
"""
One AudioHook Monitor session (Genesys Cloud is the client, we are the
server), as a sans-I/O state machine.

The shape of every ingress core (L{mgateway.ingress.events}): feed it each
WebSocket message, L{AudioHookSession.receive_text} for text frames,
L{AudioHookSession.receive_bytes} for binary ones, and the clock with
L{AudioHookSession.handle_timer}; L{AudioHookSession.events} then returns
what they caused (each channel's audio as L{LegAudio}, gaps the client
reports filled with comfort noise on the session's L{TrackTimeline}), and
L{AudioHookSession.data_to_send} the text frames to send back, in order.
Nothing here raises on anything the client sends: a protocol violation becomes a C{disconnect} message with reason
C{error} (the server's only way to end a session) plus a L{Disconnected}
event, and the client is expected to follow with C{close}, which is always
answered with C{closed}. The transport never closes the socket itself.

Sequence of a call::

    client: open --------------------> server: opened (one offered media entry, verbatim)
    client: ping --------------------> server: pong (at once, clientseq = the ping's seq)
    client: binary audio frames ...    (interleaved in the order of the selected channels)
    client: paused / resumed / discarded / update / error
    client: close -------------------> server: closed (once the call is flushed, L{flushed})

Positions are nanoseconds on the client's stream timeline, counted from the
samples received plus what the client reports as discarded; they never go
back.
"""

from __future__ import annotations

import enum
from typing import Callable, Mapping

import attrs
import numpy as np

from mgateway.ingress.audiohook.events import (
    Closed,
    Declined,
    Discarded,
    Disconnected,
    Error,
    Media,
    Opened,
    Participant,
    Paused,
    Probed,
    Resumed,
    TimedOut,
    Updated,
)
from mgateway.ingress.audiohook.messages import (
    CLOSE_REASONS,
    DISCONNECT_REASONS,
    NS_PER_SECOND,
    NULL_UUID,
    ProtocolError,
    as_text,
    decode_client_message,
    encode_server_message,
    is_language,
    parse_duration,
)
from mgateway.ingress.audiohook.opening import RATE, check_open, select_media
from mgateway.ingress.events import LegAudio
from mgateway.media.g711 import ulaw_decode
from mgateway.media.timeline import Overlap, TrackTimeline

#: Bytes per sample per channel.
SAMPLE_WIDTH = {"PCMU": 1, "L16": 2}
SAMPLE_NS = NS_PER_SECOND // RATE
#: The longest gap (discarded audio, a pause the client reports) filled with
#: comfort noise at once; a longer one is filled only this far, so memory and
#: recognition time stay bounded.
MAX_GAP_MS = 60_000



#: How a session that fails authentication is answered: HTTP 401 at the
#: upgrade, or a disconnect (reason unauthorized) once it opens.
AUTH_FAILURES = ("reject", "disconnect")
#: What a session does when stop-streaming stops its call: go on streaming
#: (a later start resumes), or end with a disconnect (reason completed).
ON_STOP = ("keep", "disconnect")


@attrs.frozen
class SessionPolicy:
    """
    @ivar allow_l16: also accept 16-bit linear offers (little-endian, as the
        reference implementation sends them) when no PCMU offer fits.
    @ivar supported_languages: listed in C{opened} when C{open} asks.
    @ivar close_grace_seconds: how long a client has to close its socket
        once told to go (our C{disconnect}, or our C{closed}), or once refused
        as unauthorized, before L{AudioHookSession.handle_timer} gives up on
        it: the reference client's own close timeout.
    @ivar close_flush_seconds: how long our C{closed} waits, at most, for
        L{AudioHookSession.flushed} (the call's last words delivered, as the
        protocol asks; Genesys gives up on a close transaction after 10 s).
    """

    allow_l16: bool = False
    supported_languages: tuple[str, ...] = ()
    close_grace_seconds: float = 10.0
    close_flush_seconds: float = 5.0


@attrs.frozen
class _Frame:
    """
    One binary frame, inside the session: 16-bit little-endian PCM per
    channel name (C{"external"} = customer, C{"internal"} = agent), all of
    equal length, starting at C{position_ns} on the stream timeline. It
    leaves the session as one L{LegAudio} per channel.
    """

    pcm: Mapping[str, bytes]
    position_ns: int


class State(enum.Enum):
    AWAITING_OPEN = "awaiting open"
    ACTIVE = "active"
    PAUSED = "paused"
    DISCONNECTING = "disconnect sent"
    CLOSED = "closed"


class AudioHookSession:
    """
    @param clock_now: seconds; stamps L{last_received_at}, which the
        transport may use for an idle timeout.
    @param session_id: the C{Audiohook-Session-Id} header; every message
        must carry it. None: taken from the first message.
    @param organization_id: the C{Audiohook-Organization-Id} header; an
        C{open} for another organization is disconnected as unauthorized.
    @param streaming: the id of the session that streams a conversation
        now, or None: a conversation is transcribed from one session at a
        time (Genesys streams a call through one session for its whole
        duration; a second one is another integration), so an C{open} for
        a conversation streamed already is L{Declined}.
    """

    def __init__(
        self,
        clock_now: Callable[[], float],
        policy: SessionPolicy = SessionPolicy(),
        session_id: str | None = None,
        organization_id: str | None = None,
        streaming: Callable[[str], str | None] = lambda conversation_id: None,
    ):
        self._now = clock_now
        self._streaming = streaming
        self._policy = policy
        self.session_id = session_id or NULL_UUID
        self._organization_id = organization_id
        self.state = State.AWAITING_OPEN
        #: Our last sent C{seq}, and the client's last received C{seq}.
        self.seq = 0
        self.clientseq = 0
        self.position_ns = 0
        self.media: Media | None = None
        self.probe = False
        #: The round-trip time the client last reported in a C{ping}.
        self.rtt_ns: int | None = None
        self.last_received_at: float | None = None
        #: Audio frames that arrived after a C{disconnect} or C{closed}.
        self.dropped_frames = 0
        self._start_paused = False
        self._unauthorized = False
        self._outgoing: list[str] = []
        #: The C{opened} just queued, until L{data_to_send} hands it out.
        self._pending_opened: str | None = None
        #: When a client told to go must have closed its socket.
        self._close_deadline: float | None = None
        #: Until when our C{closed} (and what follows it) is held back for the call's flush.
        self._flush_deadline: float | None = None
        self._events: list = []
        #: The call's timeline (not for the connection probe), from C{opened}.
        self._timeline: TrackTimeline | None = None
        self._handlers = {
            "open": self._open,
            "ping": self._ping,
            "paused": self._paused,
            "resumed": self._resumed,
            "discarded": self._discarded,
            "update": self._update,
            "error": self._error,
        }

    def data_to_send(self) -> list[str]:
        """
        The text frames to send, oldest first; each call empties the queue,
        except for a C{closed} waiting for L{flushed}.
        """
        if self._flush_deadline is not None:
            return []
        outgoing, self._outgoing = self._outgoing, []
        self._pending_opened = None
        return outgoing

    def flushed(self) -> None:
        """The call has delivered its last words: our C{closed} may go."""
        self._flush_deadline = None

    def events(self) -> list:
        """What the input so far caused, oldest first; each call empties the list."""
        events, self._events = self._events, []
        return events

    def receive_text(self, text: str) -> None:
        self._emit(self._receive_text(text))

    def receive_bytes(self, data: bytes) -> None:
        self._emit(self._receive_bytes(data))

    def get_timer(self) -> float | None:
        """When L{handle_timer} is next due (seconds on the session's clock), or None."""
        return min((t for t in (self._close_deadline, self._flush_deadline) if t is not None), default=None)

    def handle_timer(self, now: float) -> None:
        """
        Our C{closed} goes once the call's flush took too long; L{TimedOut}
        once a client told to go has not closed in time (nothing is sent).
        """
        if self._flush_deadline is not None and now >= self._flush_deadline:
            self._flush_deadline = None
        if self._close_deadline is None or now < self._close_deadline:
            return
        self._close_deadline = None
        state, self.state = self.state, State.CLOSED
        self._events.append(TimedOut(state.value))

    def _emit(self, events: list) -> None:
        """Queue events; a frame becomes each channel's audio, after the fill of any gap before it."""
        for event in events:
            if isinstance(event, _Frame):
                samples = len(next(iter(event.pcm.values()))) // 2
                self._fill_to(event.position_ns, samples)
                self._events += [LegAudio(channel, pcm) for channel, pcm in event.pcm.items()]
                continue
            self._events.append(event)
            if isinstance(event, (Resumed, Discarded)):
                self._fill_to(self.position_ns)

    def _fill_to(self, position_ns: int, samples: int = 0) -> None:
        """
        Comfort noise on every channel up to C{position_ns}, where the client
        says its audio (C{samples} of it) continues: utterance times then
        match the call.
        """
        if self._timeline is None:
            return
        noise, _ = self._timeline.advance(position_ns // SAMPLE_NS, samples)
        if noise:
            self._events += [LegAudio(channel, noise, filled=True) for channel in self.media.channels]

    def _expect_close(self) -> None:
        """From now on, the client has the grace period to close its socket."""
        if self._close_deadline is None:
            self._close_deadline = self._now() + self._policy.close_grace_seconds

    def close_within(self, seconds: float) -> None:
        """A client told to go (the gateway shuts down) has at most C{seconds} from now to close."""
        if self._close_deadline is not None:
            self._close_deadline = min(self._close_deadline, self._now() + seconds)

    def _receive_text(self, text: str) -> list:
        self.last_received_at = self._now()
        if self.state is State.CLOSED:
            return []
        try:
            message = decode_client_message(text)
        except ProtocolError as e:
            return self._violation(e.info)
        if self.session_id == NULL_UUID:
            self.session_id = message["id"]
        expected_seq = self.clientseq + 1
        kind, parameters = message["type"], message["parameters"]
        if kind == "close" or self.state is State.DISCONNECTING:
            self.clientseq = message["seq"]
            if kind == "close":
                return self._close(parameters)
            if kind == "ping":
                self._send("pong", {})
            return []
        try:
            # clientseq stays at the last good message until this one passes.
            if message["seq"] != expected_seq:
                raise ProtocolError(f"Invalid seq value {message['seq']} (expected {expected_seq})")
            if message["serverseq"] > self.seq:
                raise ProtocolError(f"Invalid serverseq value {message['serverseq']} (last sent {self.seq})")
            if message["id"] != self.session_id:
                raise ProtocolError(f"Session identifier mismatch: {message['id']} is not {self.session_id}")
            self.clientseq = message["seq"]
            handler = self._handlers.get(kind)
            if handler is None:
                raise ProtocolError(f"{as_text(kind)} is not a supported client message")
            return handler(parameters)
        except ProtocolError as e:
            return self._violation(e.info)

    def _receive_bytes(self, data: bytes) -> list:
        self.last_received_at = self._now()
        if self.state in (State.DISCONNECTING, State.CLOSED):
            self.dropped_frames += 1
            return []
        if self.state is not State.ACTIVE:
            return self._violation(f"Received audio in state {self.state.value}")
        media = self.media
        frame_width = len(media.channels) * SAMPLE_WIDTH[media.format]
        if len(data) % frame_width:
            return self._violation(f"Binary data not a valid audio frame: {len(data)} bytes is not a whole "
                                   f"number of {len(media.channels)}-channel {media.format} samples")
        position_ns = self.position_ns
        self.position_ns += len(data) // frame_width * NS_PER_SECOND // media.rate
        if self.probe or not data:
            return []
        pcm = ulaw_decode(data) if media.format == "PCMU" else data
        samples = np.frombuffer(pcm, "<i2").reshape(-1, len(media.channels))
        return [_Frame({name: samples[:, i].tobytes() for i, name in enumerate(media.channels)}, position_ns)]

    def pause(self) -> None:
        """Ask the client to pause (before C{opened}: start paused)."""
        self._flow("pause", True)

    def resume(self) -> None:
        self._flow("resume", False)

    def disconnect(self, reason: str, info: str | None = None) -> bool:
        """
        End the session from our side: queue a C{disconnect}, then wait for
        the client's C{close}. False (and nothing sent) once a C{disconnect}
        or C{closed} was sent.

        @param reason: C{"completed"}, C{"unauthorized"} or C{"error"}; any
            other value is a programming error (C{ValueError}).
        """
        if reason not in DISCONNECT_REASONS:
            raise ValueError(f"disconnect reason must be one of {DISCONNECT_REASONS}, not {reason!r}")
        if self.state in (State.DISCONNECTING, State.CLOSED):
            return False
        self._send("disconnect", {"reason": reason} if info is None else {"reason": reason, "info": info})
        self.state = State.DISCONNECTING
        self._expect_close()
        return True

    def decline(self, info: str) -> None:
        """
        Answer the C{open} just received with C{disconnect} (reason
        C{error}, C{info} saying why) instead of the C{opened} it queued, as
        the reference server does when its media selection refuses a session.
        Only until L{data_to_send} has handed that C{opened} out; after, the
        session is disconnected the same way.
        """
        if self._pending_opened is not None and self._outgoing[-1:] == [self._pending_opened]:
            self._outgoing.pop()
            self._pending_opened = None
            self.seq -= 1
        self._timeline = None
        if self.disconnect("error", info):
            self._events.append(Disconnected("error", info))

    # --- client messages ---------------------------------------------------

    def refuse(self) -> None:
        """
        The client failed authentication: answer its C{open} with
        C{disconnect} (reason C{unauthorized}), as Genesys's reference server
        does; it has the grace period from now to open and close.
        """
        self._unauthorized = True
        self._expect_close()

    def _open(self, parameters: dict) -> list:
        if self.state is not State.AWAITING_OPEN:
            raise ProtocolError(f"Unexpected 'open' in state {self.state.value}")
        if self._unauthorized:
            self.disconnect("unauthorized")
            return [Disconnected("unauthorized", None)]
        check_open(parameters)
        organization_id = parameters["organizationId"]
        if self._organization_id is not None and organization_id != self._organization_id:
            info = (f"organizationId {organization_id} does not match the Audiohook-Organization-Id "
                    f"header {self._organization_id}")
            self.disconnect("unauthorized", info)
            return [Disconnected("unauthorized", info)]
        streaming = self._streaming(parameters["conversationId"])
        if streaming is not None:
            info = (f"Conversation {parameters['conversationId']} is already streamed by AudioHook session "
                    f"{streaming}; a conversation is transcribed from one session at a time")
            self.disconnect("error", info)
            return [Declined(info)]
        offer = select_media(parameters["media"], self._policy.allow_l16)
        if offer is None:
            raise ProtocolError("No acceptable media offered (PCMU 8000 Hz, channels external and/or internal): "
                                + as_text(parameters["media"], 768))
        opened = {"media": [offer], "startPaused": self._start_paused}
        if parameters.get("supportedLanguages") is True:
            opened["supportedLanguages"] = list(self._policy.supported_languages)
        self._send("opened", opened)
        self._pending_opened = self._outgoing[-1]
        self.media = Media(offer["format"], tuple(offer["channels"]), RATE)
        self.state = State.PAUSED if self._start_paused else State.ACTIVE
        self.probe = parameters["conversationId"] == NULL_UUID
        if self.probe:
            return [Probed(self.session_id, organization_id)]
        # Positions count what was received and discarded: they never overlap.
        self._timeline = TrackTimeline(MAX_GAP_MS, overlap=Overlap.TRIM)
        participant = parameters["participant"]
        return [Opened(
            session_id=self.session_id,
            organization_id=organization_id,
            conversation_id=parameters["conversationId"],
            participant=Participant(participant["id"], participant["ani"], participant["aniName"],
                                    participant["dnis"]),
            media=self.media,
            language=parameters.get("language"),
            custom_config=parameters.get("customConfig", {}),
        )]

    def _ping(self, parameters: dict) -> list:
        if "rtt" in parameters:
            self.rtt_ns = parse_duration(parameters["rtt"])
        self._send("pong", {})
        return []

    def _paused(self, parameters: dict) -> list:
        self._require_opened("paused")
        self.state = State.PAUSED
        return [Paused(self.position_ns)]

    def _resumed(self, parameters: dict) -> list:
        self._require_opened("resumed")
        start, discarded = self._skip(parameters)
        self.state = State.ACTIVE
        return [Resumed(start, discarded)]

    def _discarded(self, parameters: dict) -> list:
        self._require_opened("discarded")
        return [Discarded(*self._skip(parameters))]

    def _update(self, parameters: dict) -> list:
        self._require_opened("update")
        language = parameters.get("language")
        if not is_language(language):
            raise ProtocolError(f"Invalid 'update' parameters: language {as_text(language)}")
        self._send("updated", {})
        return [Updated(language)]

    def _error(self, parameters: dict) -> list:
        code, message = parameters.get("code"), parameters.get("message")
        if type(code) is not int or not 400 <= code <= 9999 or not isinstance(message, str):
            raise ProtocolError(f"Invalid 'error' parameters: {as_text(parameters, 768)}")
        retry_after = parameters.get("retryAfter")
        return [Error(code, message, None if retry_after is None else parse_duration(retry_after))]

    def _close(self, parameters: dict) -> list:
        self._send("closed", {})
        self.state = State.CLOSED
        self._expect_close()
        # Held until the transport says the call is flushed (L{flushed}), or for so long.
        self._flush_deadline = self._now() + self._policy.close_flush_seconds
        reason = parameters.get("reason")
        return [Closed(reason if reason in CLOSE_REASONS else None)]

    # --- internals ---------------------------------------------------------

    def _send(self, kind: str, parameters: dict) -> None:
        self.seq += 1
        self._outgoing.append(encode_server_message(kind, self.session_id, self.seq, self.clientseq, parameters))

    def _violation(self, info: str) -> list:
        if not self.disconnect("error", info):
            return []
        return [Disconnected("error", info)]

    def _require_opened(self, kind: str) -> None:
        if self.state is State.AWAITING_OPEN:
            raise ProtocolError(f"Unexpected '{kind}' before 'open'")

    def _skip(self, parameters: dict) -> tuple[int, int]:
        """Move the timeline past a gap the client reports: (start, duration)."""
        start = parse_duration(parameters.get("start"))
        duration = parse_duration(parameters.get("discarded"))
        self.position_ns = max(self.position_ns, start + duration)
        return start, duration

    def _flow(self, kind: str, paused: bool) -> None:
        if self.state is State.AWAITING_OPEN:
            self._start_paused = paused
        elif self.state in (State.ACTIVE, State.PAUSED):
            self._send(kind, {})
