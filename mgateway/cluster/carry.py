# -*- test-case-name: tests.test_cluster_carry,tests.test_cluster_nodes -*-
"""
Carrying a start-streaming or stop-streaming to the node that holds the call.

The node a request reaches looks the call up in the directory; when a live
node other than itself holds it, it POSTs the request's body as it came to
that node's C{internal_url} + L{INTERNAL_PATH}, signed with the cluster's
shared secret (HMAC-SHA256 over the time, the operation, the app, the request
id and the body), and answers with the owner's status and body unchanged.
The owner runs the request as if it had come to it (it holds the call's busy
flag, so a second request for the guid gets its 409-202 wherever it came in),
under the entry node's request id, so the two bodies are the same bytes.

Internal HTTP rather than LISTEN/NOTIFY: one round trip to the owner instead
of two through the database (NOTIFY, then the reply), no connection held
LISTENing per node, no 8000-byte payload limit, and the owner's answer comes
back on the same connection it was asked on; a dead owner shows as a
connection error at once (see C{bench/cluster_carry.py}).
"""

from __future__ import annotations

import hashlib
import hmac

import treq
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from mgateway.calls.errors import internal
from mgateway.cluster.records import CallRecord

log = Logger()

#: Where a node takes the requests other nodes carry to it.
INTERNAL_PATH = "/internal/v1/cluster/"
#: The operations that are carried.
OPERATIONS = ("start-streaming", "stop-streaming")
SIGNATURE = "asapp-mg-signature"
TIMESTAMP = "asapp-mg-timestamp"
APP = "asapp-mg-app"
REQUEST_ID = "asapp-mg-request-id"
#: How far a carried request's time may be from the owner's clock.
MAX_SKEW_SECONDS = 60


class BadSignature(Exception):
    """A carried request whose signature or time does not check out."""


def signature(secret: bytes, timestamp: str, operation: str, app: str, request_id: str, body: bytes) -> str:
    message = "\n".join((timestamp, operation, app, request_id)).encode("utf-8") + b"\n" + body
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


class Carrier:
    """
    @param membership: this node's L{mgateway.cluster.membership.Membership}.
    @param timeout_seconds: how long to wait for the owner's answer.
    """

    def __init__(self, membership, secret: str, clock: IReactorTime, reactor, timeout_seconds: float):
        self._membership = membership
        self._secret = secret.encode("utf-8")
        self._clock = clock
        self._reactor = reactor
        self._timeout = timeout_seconds

    async def owner(self, namespace: str, guids) -> CallRecord | None:
        """The record of the call when a live node other than this one holds it."""
        membership = self._membership
        for guid in guids:
            record = await membership.directory.owner(namespace, guid)
            if (record is not None and record.node_id != membership.node_id
                    and record.alive(membership.now_us(), membership.dead_after_us)):
                return record
        return None

    async def carry(self, record: CallRecord, operation: str, body: bytes, app: str,
                    request_id: str) -> tuple[int, bytes]:
        """The owner's status and body for the request, or the spec's 500-201 when it cannot be reached."""
        timestamp = str(int(self._clock.seconds()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP: timestamp,
            APP: app,
            REQUEST_ID: request_id,
            SIGNATURE: signature(self._secret, timestamp, operation, app, request_id, body),
        }
        url = f"{record.address}{INTERNAL_PATH}{operation}"
        try:
            response = await treq.post(url, data=body, headers=headers, timeout=self._timeout,
                                       reactor=self._reactor, persistent=False)
            content = await response.content()
        except Exception as e:
            log.error("{operation} {namespace}/{guid}: node {node} at {url} did not answer: {error}",
                      operation=operation, namespace=record.namespace, guid=record.guid,
                      node=record.node_id, url=url, error=e)
            raise internal(f"the node holding the call ({record.node_id}) did not answer") from None
        log.info("{operation} {namespace}/{guid} carried to node {node}: {status}",
                 operation=operation, namespace=record.namespace, guid=record.guid,
                 node=record.node_id, status=response.code)
        return response.code, content

    def verify(self, request, operation: str, body: bytes) -> tuple[str, str]:
        """The app and request id of a carried request, or L{BadSignature}."""
        header = lambda name: (request.getHeader(name) or "")
        timestamp, app, request_id = header(TIMESTAMP), header(APP), header(REQUEST_ID)
        expected = signature(self._secret, timestamp, operation, app, request_id, body)
        if not hmac.compare_digest(expected, header(SIGNATURE)):
            raise BadSignature("bad signature")
        try:
            skew = abs(self._clock.seconds() - int(timestamp))
        except ValueError:
            raise BadSignature("bad timestamp") from None
        if skew > MAX_SKEW_SECONDS:
            raise BadSignature(f"timestamp {skew:.0f} s away from this node's clock")
        return app, request_id
