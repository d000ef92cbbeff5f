# -*- test-case-name: tests.test_kvs_pull -*-
"""
Pulling one Amazon Connect contact's audio from its Kinesis video stream.

One long-lived GetMedia connection at a time, parsed as it arrives, its audio
pushed into the call's two legs. A connection that drops, ends, stalls for
C{stall_seconds} or carries error tags is resumed from the last continuation
token (or fragment number); L{ContactMedia} drops whatever a resumed response
replays, so the legs get no gap and nothing twice. Errors are retried after a
bounded exponential back-off with full jitter (a response that ends with
nothing new, the producer being idle, backs off the same way); after
C{max_failures} errors in a row without progress, or an error that cannot get
better (no such stream, access denied), the call's streams end with the
reason logged.
"""

from __future__ import annotations

import random as _random

from twisted.internet import task
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.logger import Logger
from prometheus_client import Counter, Gauge

from mgateway.ingress.kvs.client import KvsClient, KvsError
from mgateway.ingress.kvs.contact import Audio, ContactEnded, ContactMedia, FragmentDone, StreamError
from mgateway.ingress.kvs.mkv import MkvError, MkvParser

log = Logger()

_LABELS = ["guid"]
PULLED_BYTES = Counter("asapp_mg_kvs_bytes", "GetMedia body bytes received, per call.", _LABELS)
FRAGMENTS = Counter("asapp_mg_kvs_fragments", "KVS fragments of the call's contact delivered whole.", _LABELS)
RESUMES = Counter("asapp_mg_kvs_resumes", "GetMedia connections reopened after the first.", _LABELS)
ERRORS = Counter("asapp_mg_kvs_errors", "KVS errors (HTTP, error tags, dropped or stalled connections).",
                 _LABELS)
LAG = Gauge("asapp_mg_kvs_millis_behind_now", "How far the last fragment was behind the producer (ms).",
            _LABELS)
_METRICS = (PULLED_BYTES, FRAGMENTS, RESUMES, ERRORS, LAG)

#: KVS error tag ids that do not get better by asking again (KMS key problems).
_FATAL_ERROR_IDS = frozenset({"4500", "4501", "4502", "4504", "4505", "4506"})


class Stalled(Exception):
    """No byte for C{stall_seconds}."""


def start_selector(selector_type: str, after_fragment: str | None) -> dict:
    selector = {"StartSelectorType": selector_type}
    if after_fragment is not None:
        selector["AfterFragmentNumber"] = after_fragment
    return selector


class ContactPull:
    """
    @param attachment: the call's L{mgateway.calls.registry.MediaAttachment}.
    @param on_end: called once when the call's streams are ended from here.
    """

    def __init__(self, *, client: KvsClient, clock, guid: str, app_id: str, arn: str, attachment,
                 on_end, stall_seconds: float = 3.0, backoff_base: float = 0.2,
                 backoff_cap: float = 5.0, max_failures: int = 10, random=_random.random):
        self.guid = guid
        self.arn = arn
        self.media = ContactMedia(guid)
        self._client = client
        self._clock = clock
        self._app_id = app_id
        self.attachment = attachment
        self._on_end = on_end
        self._stall_seconds = stall_seconds
        self._backoff = (backoff_base, backoff_cap)
        self._max_failures = max_failures
        self._random = random
        self._running = False
        #: Which start the running loop belongs to: a loop still winding down
        #: after a stop must not carry on when a new start comes quickly.
        self._generation = 0
        self._loop: Deferred | None = None
        self._body = None
        self._request: Deferred | None = None  #: GetDataEndpoint/GetMedia until the headers came
        self._sleep: Deferred | None = None
        self._stall = None
        self._stalled = False
        self._error: str | None = None

    @property
    def running(self) -> bool:
        return self._running

    def start(self, selector_type: str, after_fragment: str | None) -> None:
        """Pull from NOW, after a fragment, or (FRAGMENT_NUMBER, None) from where the last pull stopped."""
        if selector_type == "FRAGMENT_NUMBER" and after_fragment is None:
            selector = self._resume_selector() or start_selector("NOW", None)
        else:
            selector = start_selector(selector_type, after_fragment)
        self._running = True
        self._generation += 1
        generation, previous = self._generation, self._loop
        run = lambda _=None: Deferred.fromCoroutine(self._run(selector, generation))
        # A loop still winding down after a stop finishes first (it holds the connection state).
        self._loop = previous.addBoth(run) if previous is not None and not previous.called else run()
        self._loop.addErrback(lambda f: log.failure("call {guid}: KVS pull failed", f, guid=self.guid))

    def stop(self) -> Deferred:
        """Stop pulling (stop-streaming, after its flush); fires when the connection is gone."""
        self._running = False
        self._abort()
        if self._sleep is not None:
            self._sleep.cancel()
        return self._loop if self._loop is not None else succeed(None)

    def forget_metrics(self) -> None:
        for metric in _METRICS:
            try:
                metric.remove(self.guid)
            except KeyError:
                pass

    def _resume_selector(self) -> dict | None:
        if self.media.continuation_token is not None:
            return {"StartSelectorType": "CONTINUATION_TOKEN",
                    "ContinuationToken": self.media.continuation_token}
        if self.media.last_fragment is not None and self.media.last_fragment.isdigit():
            return start_selector("FRAGMENT_NUMBER", self.media.last_fragment)
        return None

    def _live(self, generation: int) -> bool:
        return self._running and generation == self._generation

    async def _run(self, selector: dict, generation: int) -> None:
        failures = idle = 0
        first = True
        while self._live(generation):
            if not first:
                RESUMES.labels(self.guid).inc()
            first = False
            before = (self.media.last_fragment, self.media.continuation_token)
            failure = await self._connect(selector, generation)
            if not self._live(generation) or self.media.ended:
                break
            if (self.media.last_fragment, self.media.continuation_token) != before:
                failures = idle = 0
            elif failure is None:
                idle += 1  # caught up: the producer sent nothing new
            else:
                failures += 1
            if failure is not None:
                ERRORS.labels(self.guid).inc()
                if failures >= self._max_failures or not getattr(failure, "retryable", True):
                    self._end(f"the stream cannot be read: {failure}")
                    break
            selector = self._resume_selector() or selector
            delay = self._random() * min(self._backoff[1], self._backoff[0] * 2 ** min(failures + idle, 30))
            log.info("call {guid}: resuming GetMedia in {delay:.2f} s ({reason})", guid=self.guid,
                     delay=delay, reason=failure or "response ended")
            self._sleep = task.deferLater(self._clock, delay, lambda: None)
            try:
                await self._sleep
            except CancelledError:
                break
            finally:
                self._sleep = None

    async def _connect(self, selector: dict, generation: int):
        """One GetMedia response, read to its end: None, or what went wrong."""
        parser = MkvParser()
        self._error = None
        self._stalled = False
        try:
            self._request = Deferred.fromCoroutine(self._client.get_media(
                self._app_id, self.arn, selector, lambda data: self._data(parser, data)
            ))
            try:
                self._body = await self._request
            finally:
                self._request = None
            self._arm_stall()
            if not self._live(generation):
                self._abort()
            await self._body.done
            self._handle(parser.close())
        except KvsError as error:
            log.warn("call {guid}: KVS answered {error}", guid=self.guid, error=str(error))
            return error
        except Exception as error:
            if not self._live(generation):
                return None
            reason = self._error or ("stalled" if self._stalled else f"connection lost: {error!r}")
            log.warn("call {guid}: GetMedia {reason}", guid=self.guid, reason=reason)
            return Stalled(reason) if self._stalled else ConnectionError(reason)
        finally:
            self._body = None
            if self._stall is not None and self._stall.active():
                self._stall.cancel()
            self._stall = None
        return None

    def _arm_stall(self) -> None:
        if self._stall is not None and self._stall.active():
            self._stall.reset(self._stall_seconds)
        else:
            self._stall = self._clock.callLater(self._stall_seconds, self._stalled_now)

    def _stalled_now(self) -> None:
        self._stalled = True
        self._abort()

    def _abort(self) -> None:
        if self._request is not None:
            self._request.cancel()
        if self._body is not None:
            self._body.abort()

    def _data(self, parser: MkvParser, data: bytes) -> None:
        PULLED_BYTES.labels(self.guid).inc(len(data))
        self._arm_stall()
        if self._error is not None:
            return
        try:
            events = parser.feed(data)
        except MkvError as error:
            self._error = f"unreadable media: {error}"
            self._abort()
            return
        self._handle(events)

    def _handle(self, events) -> None:
        for action in self.media.receive(events):
            if isinstance(action, Audio):
                self.attachment.audio(action.leg, action.pcm)
            elif isinstance(action, FragmentDone):
                FRAGMENTS.labels(self.guid).inc()
                if action.millis_behind_now is not None:
                    LAG.labels(self.guid).set(action.millis_behind_now)
            elif isinstance(action, StreamError):
                self._error = f"error tag {action.code} ({action.error_id})"
                if action.error_id in _FATAL_ERROR_IDS or self.media.ended:
                    self._end(f"KVS reported {action.code} ({action.error_id})")
                self._abort()
            elif isinstance(action, ContactEnded):
                log.info("call {guid}: the stream moved on to contact {next}", guid=self.guid,
                         next=action.next_contact)
                self._end("the contact ended")

    def _end(self, reason: str) -> None:
        """The call's streams end here: flush them, forget the call."""
        if not self._running:
            return
        self._running = False
        self._abort()
        log.info("call {guid}: ending its streams: {reason}", guid=self.guid, reason=reason)
        self._on_end(self, reason)
