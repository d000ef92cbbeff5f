# -*- test-case-name: tests.test_media_source,tests.test_amazon_connect_api -*-
"""
The Amazon Connect ingress: the call registry's media source for namespace
C{amazonconnect}.

Nothing is pushed to the gateway for Connect: start-streaming itself creates
the call (its two legs, one per Connect track) and, once the call is started,
begins pulling the contact's audio from the stream named by
C{amazonConnectParams.streamArn}. stop-streaming stops the pull after the
registry's final flush; a later start pulls again from NOW, from a given
fragment, or (FRAGMENT_NUMBER without afterFragmentNumber) from where the
last pull stopped.
"""

from __future__ import annotations

import attrs
from twisted.internet.defer import DeferredList
from twisted.logger import Logger
from zope.interface import implementer

from mgateway.calls.errors import bad_parameter, internal, pending
from mgateway.calls.registry import CallState
from mgateway.interfaces import IMediaSource
from mgateway.ingress.kvs.client import KvsClient, stream_region
from mgateway.ingress.kvs.contact import LEG_ROLES, connect_roles
from mgateway.ingress.kvs.credentials import AssumedRole, CredentialSource
from mgateway.ingress.kvs.pull import ContactPull

log = Logger()

NAMESPACE = "amazonconnect"


@attrs.frozen
class PullSettings:
    stall_seconds: float = 3.0
    backoff_base: float = 0.2
    backoff_cap: float = 5.0
    max_failures: int = 10
    #: A stopped call not started again within this time ends (nothing else says a contact is over).
    stopped_call_seconds: float = 3600.0


@implementer(IMediaSource)
class AmazonConnectSource:
    """One L{ContactPull} per call of namespace C{amazonconnect}."""

    roles = staticmethod(connect_roles)

    def __init__(self, client: KvsClient, clock, settings: PullSettings = PullSettings(), random=None):
        self._client = client
        self._clock = clock
        self._settings = settings
        self._random = random
        self._pulls: dict[str, ContactPull] = {}
        self._expiries: dict[str, object] = {}
        self._preparing: set[str] = set()  #: guids whose stream is being reached (409-202 meanwhile)

    def pull(self, guid: str) -> ContactPull | None:
        return self._pulls.get(guid)

    async def prepare(self, registry, request) -> None:
        params = request.amazon_connect
        arn = params.get("streamArn")
        if arn is None:
            raise bad_parameter("amazonConnectParams.streamArn is required")
        if stream_region(arn) is None:
            raise bad_parameter(f"amazonConnectParams.streamArn is not a Kinesis Video stream ARN: {arn!r}")
        after = params.get("afterFragmentNumber")
        if after is not None and not (after.isdigit() and len(after) <= 128):
            raise bad_parameter("amazonConnectParams.afterFragmentNumber must be a KVS fragment number")
        existing = self._pulls.get(request.guid)
        call = registry.find(NAMESPACE, request.guid)
        if existing is not None and call is not None and call.state not in (CallState.ENDING, CallState.ENDED):
            if existing.arn != arn:
                raise bad_parameter("amazonConnectParams.streamArn differs from the call's stream")
            return
        if params.get("startSelectorType") == "FRAGMENT_NUMBER" and after is None:
            raise bad_parameter("amazonConnectParams.afterFragmentNumber is required for FRAGMENT_NUMBER")
        if request.guid in self._preparing:
            raise pending()
        self._preparing.add(request.guid)
        try:
            await self._client.data_endpoint((request.app or ""), arn)
        except Exception as error:
            log.warn("call {guid}: stream {arn} cannot be reached: {error}", guid=request.guid, arn=arn,
                     error=str(error))
            raise internal(f"Amazon Kinesis Video stream cannot be reached: {error}")
        finally:
            self._preparing.discard(request.guid)
        attachment = registry.attach(NAMESPACE, request.guid, list(LEG_ROLES),
                                     on_stop=lambda: self._stopped(request.guid))
        self._pulls[request.guid] = ContactPull(
            client=self._client, clock=self._clock, guid=request.guid, app_id=(request.app or ""), arn=arn,
            attachment=attachment, on_end=self._ended,
            stall_seconds=self._settings.stall_seconds, backoff_base=self._settings.backoff_base,
            backoff_cap=self._settings.backoff_cap, max_failures=self._settings.max_failures,
            **({"random": self._random} if self._random else {}),
        )

    def begin(self, call, request) -> None:
        self._cancel_expiry(request.guid)
        pull = self._pulls[request.guid]
        params = request.amazon_connect
        pull.start(params.get("startSelectorType") or "NOW", params.get("afterFragmentNumber"))

    def abandon(self, request) -> None:
        """The start failed after L{prepare}: a call nothing pulled for yet is dropped."""
        pull = self._pulls.get(request.guid)
        if pull is not None and not pull.running and pull.media.last_fragment is None:
            self._forget(pull)
            pull.attachment.hang_up()

    def _stopped(self, guid: str) -> None:
        pull = self._pulls.get(guid)
        if pull is not None:
            pull.stop()
            self._cancel_expiry(guid)
            self._expiries[guid] = self._clock.callLater(
                self._settings.stopped_call_seconds, self._expire, pull)

    def _expire(self, pull: ContactPull) -> None:
        self._expiries.pop(pull.guid, None)
        log.info("call {guid}: not started again for {seconds} s, ending it", guid=pull.guid,
                 seconds=self._settings.stopped_call_seconds)
        self._ended(pull, "stopped too long")

    def _cancel_expiry(self, guid: str) -> None:
        expiry = self._expiries.pop(guid, None)
        if expiry is not None and expiry.active():
            expiry.cancel()

    def _ended(self, pull: ContactPull, reason: str) -> None:
        self._forget(pull)
        pull.attachment.hang_up()

    def _forget(self, pull: ContactPull) -> None:
        self._cancel_expiry(pull.guid)
        if self._pulls.get(pull.guid) is pull:
            del self._pulls[pull.guid]
        pull.forget_metrics()

    def shut_down(self):
        """Stop every pull (the registry then flushes the calls)."""
        pulls = list(self._pulls.values())
        for guid in list(self._expiries):
            self._cancel_expiry(guid)
        return DeferredList([p.stop() for p in pulls], consumeErrors=True)


def make_amazon_connect(config, reactor) -> AmazonConnectSource:
    """The Amazon Connect ingress from the C{[amazonconnect]} section."""
    roles = {app: AssumedRole(role.role_arn, role.external_id) for app, role in config.apps}
    credentials = CredentialSource(roles, region=config.region or None,
                                   sts_endpoint_url=config.sts_endpoint_url or None)
    client = KvsClient(reactor, credentials, endpoint_url=config.endpoint_url or None,
                       connect_timeout=config.connect_timeout_seconds, region=config.region or None)
    settings = PullSettings(config.stall_seconds, config.backoff_base_seconds,
                            config.backoff_max_seconds, config.max_failures, config.stopped_call_seconds)
    return AmazonConnectSource(client, reactor, settings)
