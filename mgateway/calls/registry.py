# -*- test-case-name: tests.test_call_registry,tests.test_seams,tests.test_text_wiring -*-
"""
The call registry: every call the gateway holds media for, keyed by
(namespace, guid), and the Start/Stop state machine that gates transcription.

Ingress adapters L{CallRegistry.attach} their media legs and push decoded PCM;
the REST API calls L{CallRegistry.start} and L{CallRegistry.stop} (the direct
WebSocket API does both for its one-leg calls). Every utterance becomes a
L{TranscriptEvent} here, and only here, and goes to the sinks of the call's
namespace plus those its ingress registered for the call.
"""

from __future__ import annotations

import enum
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable, Mapping, Sequence

from twisted.internet.defer import Deferred, DeferredList, ensureDeferred, succeed
from twisted.logger import Logger
from zope.interface import implementer

from mgateway.calls import errors
from mgateway.calls.requests import StartRequest, StopRequest
from mgateway.calls.roles import RoleMapper
from mgateway.calls.stream import ParticipantStream, StreamSummary
from mgateway.interfaces import ICallRegistry, IMediaFeed
from mgateway.media.pcm import BYTES_PER_MS
from mgateway.text.stage import TextStage
from mgateway.transcript import ROLES, Sender, TranscriptEvent, Utterance

log = Logger()


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class CallState(enum.Enum):
    NEW = "not started"
    STARTED = "started"
    STOPPED = "stopped"
    ENDING = "ending"
    ENDED = "ended"


class _Leg:
    """
    One media leg: its position on its own timeline, in bytes of PCM, and
    the attachment feeding it now (None between a released feed and the
    next: a Twilio track that reconnects, an m-line offered again). The
    position outlives the feed, so a leg fed again continues its timeline.
    """

    def __init__(self) -> None:
        self.position_bytes = 0
        self.owner: MediaAttachment | None = None
        #: The wall-clock end and the audio end (ms) of the leg's last utterance.
        self._last_spoken: tuple[datetime, int] | None = None

    @property
    def position_ms(self) -> int:
        return self.position_bytes // BYTES_PER_MS

    def spoken(self, now: datetime, end_ms: int) -> datetime:
        """
        The wall-clock end of an utterance ending at C{end_ms} of this leg's
        audio, recognised C{now}: C{now} less the audio fed since, but never
        before the leg's previous utterance's plus the audio between the
        two. The estimate alone is only as good as the media's pace: audio
        that comes faster than real time (a backlog, a loaded machine, a
        recogniser slow with one result) would put a later utterance before
        an earlier one, and the after-call endpoint, ordered by it, would
        give them out of the order they were spoken.
        """
        spoken = now - timedelta(milliseconds=max(0, self.position_ms - end_ms))
        if self._last_spoken is not None:
            last, last_end_ms = self._last_spoken
            spoken = max(spoken, last + max(timedelta(milliseconds=end_ms - last_end_ms), _TICK))
        self._last_spoken = (spoken, end_ms)
        return spoken


#: The store's resolution of times: two utterances of a leg are at least this apart.
_TICK = timedelta(microseconds=1)


class Call:
    """
    One call's media legs, participant streams and transcription state.

    @ivar busy: a start or stop for this call is being processed (409-202).
    @ivar conversation_id: what its utterances are filed under: the guid,
        or the C{externalId} of a direct stream.
    @ivar sinks: where this call's utterances go besides its namespace's
        sinks (a direct stream's socket).
    @ivar phrases: the call's own custom vocabulary (a direct stream's
        C{updateVocabulary}), read at every utterance, on top of the gateway's.
    """

    def __init__(self, registry: CallRegistry, namespace: str, guid: str, mapper: RoleMapper,
                 conversation_id: str | None = None, stream_ids: Mapping[str, str] | None = None,
                 phrases: Callable[[], Iterable] = tuple):
        self.namespace = namespace
        self.guid = guid
        self.conversation_id = conversation_id or guid
        self.phrases = phrases
        self.sinks: list = []
        self._registry = registry
        self._mapper = mapper
        self.state = CallState.NEW
        self.busy = False
        self.legs: dict[str, _Leg] = {}
        #: The attachments feeding the call now; it ends when the last hangs up.
        self.feeds: list[MediaAttachment] = []
        self.request: StartRequest | None = None
        self._roles: dict[str, str] = {}
        self.streams = {
            role: ParticipantStream(role, registry.engine, registry.clock, self._utterance,
                                    stream_id=(stream_ids or {}).get(role), on_failure=self._stream_failed)
            for role in ROLES
        }

    def _remap(self) -> None:
        """Roles for the legs fed now: a released leg gives up its place (an m-line removed)."""
        fed = [leg_id for leg_id, leg in self.legs.items() if leg.owner is not None]
        self._roles = self._mapper(self.request, fed) if self.request else {}

    def audio(self, leg_id: str, pcm: bytes, filled: bool = False) -> None:
        leg = self.legs[leg_id]
        position_ms = leg.position_ms
        leg.position_bytes += len(pcm)
        if self.state is not CallState.STARTED:
            return
        role = self._roles.get(leg_id)
        if role is not None:
            self.streams[role].feed(pcm, position_ms, filled)

    def _utterance(self, stream: ParticipantStream, utterance: Utterance) -> None:
        created = self._registry.now()
        leg_id = next((leg for leg, role in self._roles.items() if role == stream.role), None)
        spoken = self.legs[leg_id].spoken(created, utterance.end_ms) if leg_id in self.legs else created
        text = self._registry.text
        context = text.context(self.namespace, self.conversation_id)
        utterance = text.write(utterance, self.request.transcribe, context, self.phrases(), speaker=stream.role)
        event = TranscriptEvent(
            namespace=self.namespace,
            conversation_id=self.conversation_id,
            stream_id=stream.stream_id,
            sender=Sender(stream.role, stream.sender_id),
            utterance=utterance,
            created=created,
            spoken=spoken,
            detailed_tokens=stream.detailed_tokens,
            language=stream.language,
            app=self.request.app if self.request is not None else None,
        )
        self._registry.publish(event, self.sinks)

    def _stream_failed(self, stream: ParticipantStream, failure) -> None:
        log.error(
            "call {namespace}/{guid}: the {role} stream's recogniser failed; "
            "it is no longer transcribed",
            namespace=self.namespace, guid=self.guid, role=stream.role,
        )
        for attachment in list(self.feeds):
            try:
                attachment.failed(failure)
            except Exception:
                log.failure("call {namespace}/{guid}: an ingress failed to take a recogniser failure",
                            namespace=self.namespace, guid=self.guid)

    async def start(self, request: StartRequest) -> dict:
        self._check_can_change(CallState.STARTED)
        self.busy = True
        try:
            await self._registry.engine.ready()
            language = self._registry.engine.canonical(request.transcribe.language)
            if language is None:
                raise errors.bad_transcribe_parameter(
                    f"Language not supported: {request.transcribe.language}"
                )
            if self.state is CallState.ENDING:
                raise errors.ending()
            refusal = self._registry.text.refusal(request.transcribe)
            if refusal is not None:
                raise errors.bad_transcribe_parameter(refusal)
            self.request = request
            self._remap()
            for role, stream in self.streams.items():
                stream.start(language, request.sender_id(role), request.transcribe.detailed_token,
                             self._registry.recorder(self.conversation_id, stream.stream_id, request.transcribe))
            self.state = CallState.STARTED
            self._registry._changed(self)
            log.info(
                "call {namespace}/{guid} started ({language}, legs {roles})",
                namespace=self.namespace, guid=self.guid, language=language, roles=self._roles,
            )
            return self.streams
        finally:
            self.busy = False

    async def stop(self) -> dict:
        self._check_can_change(CallState.STOPPED)
        self.busy = True
        try:
            self.state = CallState.STOPPED
            self._registry._changed(self)
            summaries = await self._stop_streams()
            log.info("call {namespace}/{guid} stopped", namespace=self.namespace, guid=self.guid)
            for attachment in list(self.feeds):
                try:
                    attachment.stopped()
                except Exception:
                    log.failure("call {namespace}/{guid}: an ingress failed to take the stop",
                                namespace=self.namespace, guid=self.guid)
            return {role: (self.streams[role], summaries[role]) for role in self.streams}
        finally:
            self.busy = False

    async def _stop_streams(self) -> dict[str, StreamSummary]:
        roles = list(self.streams)
        results = await DeferredList(
            [self.streams[role].stop() for role in roles], consumeErrors=True
        )
        summaries = {}
        for role, (ok, value) in zip(roles, results):
            if not ok:
                log.failure(
                    "flushing {role} stream of {guid} failed", value, role=role, guid=self.guid
                )
                value = None
            summaries[role] = value or StreamSummary(0, 0, 0, 0)
        return summaries

    def _check_can_change(self, target: CallState) -> None:
        if self.state in (CallState.ENDING, CallState.ENDED):
            raise errors.ending()
        if self.busy:
            raise errors.pending()
        if target is CallState.STARTED and self.state is CallState.STARTED:
            raise errors.already("started")
        if target is CallState.STOPPED and self.state is not CallState.STARTED:
            raise errors.already("stopped")

    async def hang_up(self) -> None:
        """The media is gone (BYE, socket closed): flush and forget the call."""
        if self.state in (CallState.ENDING, CallState.ENDED):
            return
        was_started = self.state is CallState.STARTED
        self.state = CallState.ENDING
        log.info("call {namespace}/{guid} ending", namespace=self.namespace, guid=self.guid)
        try:
            if was_started:
                await self._stop_streams()
        finally:
            self.state = CallState.ENDED
            self._registry._changed(self)
            self._registry._forget(self)


@implementer(IMediaFeed)
class MediaAttachment:
    """
    What an ingress holds for the legs it feeds into a call. Several
    attachments may feed one call (e.g. one Twilio socket per track); the call
    ends when the last one hangs up.
    """

    def __init__(self, call: Call, legs: Sequence[str], on_stop: Callable[[], None] | None = None,
                 on_failure: Callable | None = None):
        self.call = call
        self.legs = tuple(legs)
        self._on_stop = on_stop
        self._on_failure = on_failure
        self._hung_up = False

    def stopped(self) -> None:
        """Transcription of the call was stopped: tell the ingress, if it asked."""
        if self._on_stop is not None and not self._hung_up:
            self._on_stop()

    def failed(self, reason) -> None:
        """A recogniser of the call failed: tell the ingress, if it asked."""
        if self._on_failure is not None and not self._hung_up:
            self._on_failure(reason)

    def audio(self, leg_id: str, pcm: bytes, filled: bool = False) -> None:
        """
        16-bit little-endian 8 kHz PCM of one leg, in timeline order.
        C{filled}: comfort noise for a gap, counted apart in the summaries.
        """
        if not self._hung_up and self.call.legs[leg_id].owner is self:
            self.call.audio(leg_id, pcm, filled)

    def release(self, leg_id: str) -> None:
        """Stop feeding one leg (its m-line was removed): another attachment may take it."""
        leg = self.call.legs.get(leg_id)
        if leg is not None and leg.owner is self:
            leg.owner = None
            self.call._remap()

    def hang_up(self) -> Deferred:
        if self._hung_up:
            return succeed(None)
        self._hung_up = True
        for leg_id in self.legs:
            self.release(leg_id)
        self.call.feeds.remove(self)
        if self.call.feeds:
            return succeed(None)
        return ensureDeferred(self.call.hang_up())


@implementer(ICallRegistry)
class CallRegistry:
    """
    @param engine: the L{mgateway.interfaces.ISpeechEngine}.
    @param sinks: per namespace, where every utterance of its calls goes
        (webhook, store): the one table of it. Every namespace of
        C{mappers} needs an entry, so that no utterance goes nowhere.
    @param mappers: per namespace, how legs map to participants.
    @param media_sources: per namespace, an L{mgateway.interfaces.IMediaSource}
        that start-streaming asks to open the call (nothing pushes its media).
    @param guid_forms: per namespace, the form calls are filed under of a
        guid a request may give in another (SIPREC: a UCID in hex, filed in
        decimal), or None when it has no other form.
    @param text: the text stages every utterance passes through.
    @param recordings: the L{mgateway.egress.recordings.Recordings} of
        streams whose start-streaming allowed it.
    """

    def __init__(
        self,
        engine,
        sinks: Mapping[str, Sequence],
        clock,
        mappers: Mapping[str, RoleMapper],
        now: Callable[[], datetime] = utc_now,
        media_sources: Mapping[str, object] | None = None,
        guid_forms: Mapping[str, Callable[[str], str | None]] | None = None,
        text: TextStage | None = None,
        recordings=None,
        on_change: Callable[[Call], None] | None = None,
    ):
        unfed = sorted(set(mappers) - set(sinks))
        if unfed:
            raise ValueError(f"no sinks for namespaces {unfed}")
        self.text = text or TextStage()
        self.recordings = recordings
        self.engine = engine
        self.sinks = {namespace: tuple(fed) for namespace, fed in sinks.items()}
        self.clock = clock
        self.now = now
        self._mappers = dict(mappers)
        self._calls: dict[tuple[str, str], Call] = {}
        self._media_sources = dict(media_sources or {})
        self._guid_forms = dict(guid_forms or {})
        self._on_change = on_change

    def __len__(self) -> int:
        return len(self._calls)

    def calls(self) -> list[Call]:
        """Every call held now."""
        return list(self._calls.values())

    def streams_in_use(self) -> int:
        """The participant streams (legs) of every call held now, transcribed or not."""
        return sum(len(call.legs) for call in self._calls.values())

    def find(self, namespace: str, guid: str) -> Call | None:
        return self._calls.get((namespace, guid))

    def attach(self, namespace: str, guid: str, legs: Sequence[str],
               on_stop: Callable[[], None] | None = None, *, on_failure: Callable | None = None,
               conversation_id: str | None = None, stream_ids: Mapping[str, str] | None = None,
               sinks: Iterable = (), phrases: Callable[[], Iterable] = tuple) -> MediaAttachment:
        """
        Feed media legs into the call (created if new). A leg another
        attachment feeds now is refused with L{errors.LegBusy}; one fed
        before and released is taken over, its timeline continuing.

        @param on_stop: called when stop-streaming stops the call.
        @param on_failure: called with the failure when a recogniser of the
            call fails.
        @param conversation_id: for a new call, what its utterances are filed
            under (the guid when not given).
        @param stream_ids: for a new call, the C{streamId} of a role (a new
            UUID when not given).
        @param sinks: where the call's utterances go too (a direct stream's
            socket), besides its namespace's sinks.
        @param phrases: for a new call, what gives its own custom vocabulary
            (a direct stream's C{updateVocabulary} phrases), read at every
            utterance.
        """
        call = self._calls.get((namespace, guid))
        if call is None or call.state in (CallState.ENDING, CallState.ENDED):
            # A call still flushing after its last feed hung up is gone for
            # good: media that comes back now starts the call anew.
            call = Call(self, namespace, guid, self._mappers[namespace], conversation_id, stream_ids, phrases)
            self._calls[(namespace, guid)] = call
            log.info("call {namespace}/{guid} attached", namespace=namespace, guid=guid)
        duplicate = [leg for leg in legs if leg in call.legs and call.legs[leg].owner is not None]
        if duplicate:
            raise errors.LegBusy(namespace, guid, sorted(duplicate))
        call.sinks.extend(sinks)
        attachment = MediaAttachment(call, legs, on_stop, on_failure)
        for leg in legs:
            call.legs.setdefault(leg, _Leg()).owner = attachment
        call.feeds.append(attachment)
        call._remap()
        self._changed(call)
        return attachment

    def _changed(self, call: Call) -> None:
        """A call attached media or changed state: tell C{on_change} (the cluster's directory)."""
        if self._on_change is not None:
            self._on_change(call)

    def guids(self, namespace: str, guid: str) -> tuple[str, ...]:
        """The forms a call of C{guid} may be filed under (the guid, and a SIPREC UCID's decimal)."""
        filed_as = self._guid_forms.get(namespace, lambda _: None)(guid)
        return (guid,) if filed_as is None or filed_as == guid else (guid, filed_as)

    def holds(self, namespace: str, guid: str) -> bool:
        """Whether this node holds the media of the call a request names."""
        return any(self.find(namespace, form) is not None for form in self.guids(namespace, guid))

    def _forget(self, call: Call) -> None:
        if self._calls.get((call.namespace, call.guid)) is call:
            del self._calls[(call.namespace, call.guid)]
        log.info("call {namespace}/{guid} ended", namespace=call.namespace, guid=call.guid)

    def _call(self, namespace: str, guid: str) -> Call:
        call = self.find(namespace, guid)
        filed_as = self._guid_forms.get(namespace, lambda _: None)(guid)
        if call is None and filed_as is not None:
            call = self.find(namespace, filed_as)
        if call is None:
            raise errors.no_such_call(namespace, guid)
        return call

    async def start(self, request: StartRequest) -> dict:
        """
        Start or resume transcription: C{{role: ParticipantStream}}, or raise
        L{errors.ApiError}.
        """
        source = self._media_sources.get(request.namespace)
        if source is None:
            return await self._call(request.namespace, request.guid).start(request)
        await source.prepare(self, request)
        call = self._call(request.namespace, request.guid)
        try:
            streams = await call.start(request)
        except Exception:
            source.abandon(request)
            raise
        source.begin(call, request)
        return streams

    async def stop(self, request: StopRequest) -> dict:
        """Pause or end transcription: C{{role: (ParticipantStream, StreamSummary)}}."""
        return await self._call(request.namespace, request.guid).stop()

    def recorder(self, conversation_id: str, stream_id: str, params) -> Callable | None:
        """What makes a stream's recordings, only with C{audioRecordingAllowed}."""
        if not params.audio_recording_allowed or self.recordings is None:
            return None
        return lambda: self.recordings.open(conversation_id, stream_id)

    def publish(self, event: TranscriptEvent, call_sinks: Iterable = ()) -> None:
        for sink in (*self.sinks[event.namespace], *call_sinks):
            try:
                sink.deliver(event)
            except Exception:
                log.failure(
                    "sink {sink} failed for {guid}", sink=sink, guid=event.conversation_id
                )

    def shut_down(self) -> Deferred:
        """Flush every call (the last words of each are delivered)."""
        calls = list(self._calls.values())
        return DeferredList([ensureDeferred(c.hang_up()) for c in calls], consumeErrors=True)
