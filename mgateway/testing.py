# -*- test-case-name: tests.test_seams,tests.test_store -*-
"""
In-memory fakes of the gateway's seams, for the tests of the code around them
(as C{treq.testing} and C{txacme.testing} ship theirs). Each provides its
interface of L{mgateway.interfaces}, and one contract test runs the same
behaviour checks on it and on the real implementation, so they cannot drift.

- L{ScriptedSpeechEngine}: transcribers the test drives (L{ScriptedTranscriber.say},
  L{ScriptedTranscriber.fail}) instead of Vosk.
- L{RecordingCallRegistry}: records what an ingress feeds, with the real
  registry's attach rules and Start/Stop outcomes, but no recognition.
- L{MemoryTranscriptStore}: the store's contract, in a list (the
  Configuration API's tables too).
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Callable, Iterable, Mapping, Sequence

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure
from zope.interface import implementer

from mgateway.admission import DRAINING, Capacity, Refusal
from mgateway.calls import errors
from mgateway.calls.requests import StartRequest, StopRequest
from mgateway.calls.stream import StreamSummary
from mgateway.cluster.records import ENDED
from mgateway.export.ledger import BUILDING, DONE
from mgateway.interfaces import (
    IAdmission,
    ICallDirectory,
    ICallRegistry,
    IConfigurationStore,
    IExportLedger,
    IMediaFeed,
    IMemoryRelease,
    ISpeechEngine,
    ITranscriber,
    ITranscriptStore,
    IWebhookFailureLog,
)
from mgateway.media.pcm import BYTES_PER_MS
from mgateway.store.message import StoredMessage
from mgateway.store.schema import StoreError, from_row, to_row
from mgateway.transcript import ROLES, Utterance


@implementer(ITranscriber)
class ScriptedTranscriber:
    """
    A transcriber whose utterances the test speaks with L{say}. L{finish}
    fires when the test fires C{finishing}, or at once if its engine was made
    with C{flush_at_once}.
    """

    def __init__(self, language: str, on_utterance: Callable, offset_ms: int,
                 on_failure: Callable | None = None, flush_at_once: bool = True):
        self.language = language
        self.on_utterance = on_utterance
        self.on_failure = on_failure
        self.offset_ms = offset_ms
        self.fed = bytearray()
        self.failed = False
        self.finishing: Deferred | None = None
        self._flush_at_once = flush_at_once

    def feed(self, pcm: bytes) -> None:
        assert self.finishing is None, "fed after finish()"
        if not self.failed:
            self.fed += pcm

    def say(self, utterance: Utterance) -> None:
        """Deliver an utterance, on this stream's timeline."""
        self.on_utterance(utterance.shifted(self.offset_ms))

    def fail(self, reason: Exception) -> None:
        """The recogniser fails: the failure signal fires, later audio is dropped."""
        self.failed = True
        if self.on_failure is not None:
            self.on_failure(Failure(reason))

    def finish(self) -> Deferred:
        self.finishing = Deferred()
        if self._flush_at_once:
            self.finishing.callback(None)
        return self.finishing


@implementer(ISpeechEngine)
class ScriptedSpeechEngine:
    """
    @ivar transcribers: every transcriber handed out, in order.
    """

    def __init__(self, languages: Sequence[str] = ("en-US",), flush_at_once: bool = True,
                 loaded: bool = True):
        self._languages = {tag.lower(): tag for tag in languages}
        self.loaded = loaded
        self.flush_at_once = flush_at_once
        self.transcribers: list[ScriptedTranscriber] = []

    def ready(self) -> Deferred:
        return succeed(None)

    def canonical(self, language: str) -> str | None:
        return self._languages.get(language.lower())

    def transcriber(self, language, on_utterance, offset_ms=0, on_failure=None, name="") -> ScriptedTranscriber:
        transcriber = ScriptedTranscriber(language, on_utterance, offset_ms, on_failure,
                                          self.flush_at_once)
        self.transcribers.append(transcriber)
        return transcriber


@attrs.frozen
class RecordedStream:
    """A participant stream of a L{RecordingCallRegistry} call."""

    role: str
    stream_id: str


@implementer(IMediaFeed)
class RecordedFeed:
    """
    @ivar pcm: per leg, every byte fed.
    @ivar released: the legs released, in order.
    @ivar stops: how many times the call was stopped while this fed it.
    """

    def __init__(self, call: _RecordedCall, legs: Sequence[str], on_stop, on_failure):
        self.call = call
        self.legs = tuple(legs)
        self.pcm = {leg: b"" for leg in legs}
        self.released: list[str] = []
        self.hung_up = False
        self._on_stop = on_stop
        self._on_failure = on_failure

    def audio(self, leg_id: str, pcm: bytes, filled: bool = False) -> None:
        if not self.hung_up and self.call.owners.get(leg_id) is self:
            self.pcm[leg_id] += pcm
            role = self.call.roles.get(leg_id)
            if self.call.started and role is not None:
                self.call.audio_bytes[role] += len(pcm)

    def release(self, leg_id: str) -> None:
        if self.call.owners.get(leg_id) is self:
            del self.call.owners[leg_id]
            self.released.append(leg_id)

    def hang_up(self) -> Deferred:
        if not self.hung_up:
            self.hung_up = True
            for leg in self.legs:
                self.release(leg)
            self.call.feeds.remove(self)
            if not self.call.feeds:
                self.call.registry._forget(self.call)
        return succeed(None)

    def stopped(self) -> None:
        if self._on_stop is not None and not self.hung_up:
            self._on_stop()

    def failed(self, reason: Failure) -> None:
        if self._on_failure is not None and not self.hung_up:
            self._on_failure(reason)


@attrs.define(eq=False)
class _RecordedCall:
    registry: RecordingCallRegistry
    namespace: str
    guid: str
    conversation_id: str
    streams: dict
    sinks: list = attrs.field(factory=list)
    feeds: list = attrs.field(factory=list)
    owners: dict = attrs.field(factory=dict)
    roles: dict = attrs.field(factory=dict)
    audio_bytes: dict = attrs.field(factory=dict)
    started: bool = False
    #: What gives the call's own custom vocabulary (L{ICallRegistry.attach}'s C{phrases}).
    phrases: Callable = tuple


@implementer(ICallRegistry)
class RecordingCallRegistry:
    """
    Records what the ingresses feed: L{feed} finds what a call was fed. It
    applies the real registry's attach rules (a leg fed now is L{errors.LegBusy};
    a released one may be attached again; a call ends with its last feed)
    and Start/Stop outcomes (400-203, 409-201), transcribes nothing, and
    summarises only the audio bytes of each role.

    @param mappers: per namespace, how legs map to roles (as the real
        registry's); a namespace without one counts no audio.
    @ivar calls: C{{(namespace, guid): call}} of the calls fed now.
    @ivar requests: every Start/Stop request that reached a call.
    """

    def __init__(self, engine=None, mappers: Mapping[str, Callable] | None = None):
        self.engine = engine if engine is not None else ScriptedSpeechEngine()
        self._mappers = dict(mappers or {})
        self.calls: dict[tuple[str, str], _RecordedCall] = {}
        self.requests: list = []
        self._fed: dict[tuple[str, str], list[RecordedFeed]] = {}

    def attach(self, namespace: str, guid: str, legs: Sequence[str], on_stop=None, *,
               on_failure=None, conversation_id: str | None = None,
               stream_ids: Mapping[str, str] | None = None, sinks: Iterable = (),
               phrases: Callable[[], Iterable] = tuple) -> RecordedFeed:
        call = self.calls.get((namespace, guid))
        if call is None:
            streams = {role: RecordedStream(role, (stream_ids or {}).get(role) or str(uuid.uuid4()))
                       for role in ROLES}
            call = _RecordedCall(self, namespace, guid, conversation_id or guid, streams, phrases=phrases)
            self.calls[(namespace, guid)] = call
        busy = sorted(leg for leg in legs if leg in call.owners)
        if busy:
            raise errors.LegBusy(namespace, guid, busy)
        call.sinks.extend(sinks)
        feed = RecordedFeed(call, legs, on_stop, on_failure)
        for leg in legs:
            call.owners[leg] = feed
        call.feeds.append(feed)
        self._fed.setdefault((namespace, guid), []).append(feed)
        return feed

    def feed(self, namespace: str, guid: str) -> RecordedFeed:
        """The last feed attached to a call, hung up or not."""
        return self._fed[(namespace, guid)][-1]

    def _forget(self, call: _RecordedCall) -> None:
        self.calls.pop((call.namespace, call.guid), None)

    def guids(self, namespace: str, guid: str) -> tuple[str, ...]:
        return (guid,)

    def holds(self, namespace: str, guid: str) -> bool:
        return (namespace, guid) in self.calls

    def _call(self, request: StartRequest | StopRequest) -> _RecordedCall:
        call = self.calls.get((request.namespace, request.guid))
        if call is None:
            raise errors.no_such_call(request.namespace, request.guid)
        self.requests.append(request)
        return call

    async def start(self, request: StartRequest) -> dict:
        call = self._call(request)
        if call.started:
            raise errors.already("started")
        call.started = True
        mapper = self._mappers.get(request.namespace)
        call.roles = mapper(request, list(call.owners)) if mapper is not None else {}
        call.audio_bytes = {role: 0 for role in ROLES}
        return dict(call.streams)

    async def stop(self, request: StopRequest) -> dict:
        call = self._call(request)
        if not call.started:
            raise errors.already("stopped")
        call.started = False
        for feed in list(call.feeds):
            feed.stopped()
        return {
            role: (stream, StreamSummary(call.audio_bytes[role], call.audio_bytes[role] // BYTES_PER_MS, 0, 0))
            for role, stream in call.streams.items()
        }

    def shut_down(self) -> Deferred:
        for call in list(self.calls.values()):
            for feed in list(call.feeds):
                feed.hang_up()
        return succeed(None)


def _order(message: StoredMessage) -> tuple[datetime, datetime, str]:
    return (message.spoken, message.created, message.message_id)


@implementer(ITranscriptStore, IWebhookFailureLog, IConfigurationStore)
class MemoryTranscriptStore:
    """
    The store's contract in a list. Stores opened on the same C{rows} see
    each other's messages, as stores opened on one database do; likewise
    for C{vocabularies} and C{policies}, the Configuration API's tables.
    """

    def __init__(self, rows: list[StoredMessage] | None = None, failures: list | None = None,
                 vocabularies: list | None = None, policies: dict | None = None):
        self.rows = rows if rows is not None else []
        self.failures = failures if failures is not None else []
        self.vocabularies_kept = vocabularies if vocabularies is not None else []
        self.policies_kept = policies if policies is not None else {}
        self._closed = False

    def _refuse(self) -> Deferred | None:
        return fail(StoreError("the transcript store is closed")) if self._closed else None

    def start(self) -> Deferred:
        return self._refuse() or succeed(None)

    def ping(self) -> Deferred:
        return self._refuse() or succeed(None)

    def add(self, message: StoredMessage) -> Deferred:
        refused = self._refuse()
        if refused is not None:
            return refused
        # Through the databases' row form, so what reads back is what they give.
        self.rows.append(from_row(to_row(message)))
        return succeed(None)

    def messages(self, conversation_id: str, limit: int) -> Deferred:
        refused = self._refuse()
        if refused is not None:
            return refused
        found = sorted((m for m in self.rows if m.conversation_id == conversation_id), key=_order)
        return succeed(found[:limit])

    def purge(self, older_than: datetime) -> Deferred:
        refused = self._refuse()
        if refused is not None:
            return refused
        kept = [m for m in self.rows if m.created >= older_than]
        deleted = len(self.rows) - len(kept)
        self.rows[:] = kept
        self.failures[:] = [f for f in self.failures if f.at >= older_than]
        return succeed(deleted)

    def record(self, failure) -> Deferred:
        refused = self._refuse()
        if refused is not None:
            return refused
        self.failures.append(failure)
        return succeed(None)

    def webhook_failures(self, conversation_id: str, limit: int) -> Deferred:
        refused = self._refuse()
        if refused is not None:
            return refused
        found = [f for f in self.failures if f.conversation_id == conversation_id]
        return succeed(sorted(found, key=lambda f: f.at, reverse=True)[:limit])

    def vocabularies(self) -> Deferred:
        return self._refuse() or succeed(sorted(self.vocabularies_kept, key=lambda v: v.vocabulary_id))

    def add_vocabulary(self, vocabulary) -> Deferred:
        refused = self._refuse()
        if refused is not None:
            return refused
        self.vocabularies_kept.append(vocabulary)
        return succeed(None)

    def delete_vocabulary(self, vocabulary_id: str) -> Deferred:
        refused = self._refuse()
        if refused is not None:
            return refused
        kept = [v for v in self.vocabularies_kept if v.vocabulary_id != vocabulary_id]
        existed = len(kept) < len(self.vocabularies_kept)
        self.vocabularies_kept[:] = kept
        return succeed(existed)

    def redaction_policies(self) -> Deferred:
        return self._refuse() or succeed({entity: dict(p) for entity, p in self.policies_kept.items()})

    def set_redaction_policies(self, entity_id: str, policies: dict) -> Deferred:
        refused = self._refuse()
        if refused is not None:
            return refused
        self.policies_kept[entity_id] = dict(policies)
        return succeed(None)

    def close(self) -> Deferred:
        refused = self._refuse()
        if refused is not None:
            return refused
        self._closed = True
        return succeed(None)


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


@implementer(IAdmission)
class SettableAdmission:
    """
    An admission whose answer the test sets: C{refused} (a reason of
    L{mgateway.admission}, or None to admit), and the capacity it reports.
    Records the stream counts it was asked about in C{asked}.
    """

    def __init__(self, refused: str | None = None, streams: int = 8, in_use: int = 0,
                 retry_after: int = 10):
        self.refused = refused
        self.streams = streams
        self.in_use = in_use
        self.retry_after = retry_after
        self.draining = False
        self.asked: list[int] = []

    def refusal(self, streams: int):
        self.asked.append(streams)
        reason = DRAINING if self.draining else self.refused
        return Refusal(reason, self.retry_after) if reason is not None else None

    def capacity(self):
        return Capacity(self.streams, self.in_use)

    def drain(self) -> None:
        self.draining = True


@implementer(ICallDirectory)
class MemoryCallDirectory:
    """
    The call directory in a dict, with the SQL one's rules (the higher
    C{seq} of one node wins, another node takes a call over, the sweep ends
    dead nodes' calls and forgets old ended ones), for several nodes of one
    process.

    @ivar calls: C{{(namespace, guid): record}}, without heartbeats.
    @ivar nodes: C{{node_id: (address, heartbeat_us)}}.
    """

    def __init__(self):
        self.calls: dict = {}
        self.nodes: dict = {}

    def publish(self, record):
        known = self.calls.get((record.namespace, record.guid))
        if known is None or known.node_id != record.node_id or known.seq < record.seq:
            self.calls[(record.namespace, record.guid)] = record
        return succeed(None)

    def owner(self, namespace, guid):
        record = self.calls.get((namespace, guid))
        if record is None:
            return succeed(None)
        node = self.nodes.get(record.node_id)
        return succeed(attrs.evolve(record, heartbeat_us=node[1] if node else None))

    def heartbeat(self, node_id, address, now_us):
        self.nodes[node_id] = (address, now_us)
        return succeed(None)

    def end_dead(self, node_id, now_us, dead_after_us):
        cutoff = now_us - dead_after_us
        dead = {node for node, (_, beat) in self.nodes.items() if beat < cutoff and node != node_id}
        ended = 0
        for key, record in list(self.calls.items()):
            if record.state == ENDED and record.updated_us < cutoff:
                del self.calls[key]
            elif record.state != ENDED and record.node_id in dead:
                self.calls[key] = attrs.evolve(record, state=ENDED, updated_us=now_us)
                ended += 1
        return succeed(ended)

    def end_node(self, node_id, now_us):
        for key, record in list(self.calls.items()):
            if record.node_id == node_id:
                self.calls[key] = attrs.evolve(record, state=ENDED, updated_us=now_us)
        return succeed(None)


@implementer(IMemoryRelease)
class CountingMemoryRelease:
    """L{IMemoryRelease} that counts its calls (glibc's malloc untouched)."""

    def __init__(self):
        self.releases = 0

    def release(self) -> None:
        self.releases += 1
