# -*- test-case-name: tests.test_kvs_pull -*-
"""
Kinesis Video Streams over HTTP: GetDataEndpoint and a streamed GetMedia.

Requests are signed with botocore's SigV4 signer (signing name
C{kinesisvideo} for both the control and the data plane) and sent with treq;
the GetMedia body is handed over as it arrives, never buffered. Resolving and
refreshing credentials may block (instance metadata, STS), and so does
signing with them: both run on a worker thread, never on the reactor's.
"""

from __future__ import annotations

import json
import re
from typing import Callable

import attrs
from treq.client import HTTPClient
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from twisted.internet import threads
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone

SIGNING_NAME = "kinesisvideo"
#: The StreamARN pattern of the KVS API model.
STREAM_ARN = re.compile(
    r"arn:[a-z\d-]+:kinesisvideo:(?P<region>[a-z0-9-]+):[0-9]+:[a-z]+/[a-zA-Z0-9_.-]+/[0-9]+"
)
#: Error types worth retrying after a back-off (the call rate, the connection count, AWS's side).
RETRYABLE = frozenset({
    "ClientLimitExceededException", "ConnectionLimitExceededException", "ThrottlingException",
    "ExpiredTokenException", "InvalidEndpointException", "InternalFailure", "ServiceUnavailable",
})


def stream_region(arn: str) -> str | None:
    """The region of a KVS stream ARN, or None when it is not one."""
    match = STREAM_ARN.fullmatch(arn) if len(arn) <= 1024 else None
    return match.group("region") if match else None


@attrs.frozen
class KvsError(Exception):
    """An error answer: HTTP status, the C{x-amzn-ErrorType} type, the message."""

    status: int
    type: str
    message: str

    @property
    def retryable(self) -> bool:
        return self.status >= 500 or self.type in RETRYABLE

    def __str__(self) -> str:
        return f"{self.type} (HTTP {self.status}): {self.message}"


def _error_type(headers, body: dict) -> str:
    for name in ("x-amzn-ErrorType", "x-amz-ErrorType"):
        values = headers.getRawHeaders(name)
        if values:
            return values[0].split(":", 1)[0]
    return str(body.get("__type", "")).rsplit("#", 1)[-1] or "UnknownError"


async def _error(response) -> KvsError:
    raw = await response.content()
    try:
        body = json.loads(raw)
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    message = body.get("Message", body.get("message", raw[:200].decode("utf-8", "replace")))
    return KvsError(response.code, _error_type(response.headers, body), str(message))


class _Body(Protocol):
    """Hands each piece of a response body to C{on_data}; C{done} fires at its end."""

    def __init__(self, on_data: Callable[[bytes], None]):
        self.on_data = on_data
        self.done: Deferred = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.on_data(data)

    def connectionLost(self, reason) -> None:
        if reason.check(ResponseDone):
            self.done.callback(None)
        else:
            self.done.errback(reason)

    def abort(self) -> None:
        """Drop the connection (a stalled response)."""
        if self.transport is not None:
            self.transport.stopProducing()


class KvsClient:
    """
    @param credentials: C{(app_id) -> credentials} with botocore's
        C{get_frozen_credentials()}; called on a worker thread.
    @param endpoint_url: the control plane's URL; None: AWS's for the region.
    @param region: signing region and AWS endpoint; None: the stream ARN's.
    """

    def __init__(self, reactor, credentials: Callable[[str], object], endpoint_url: str | None = None,
                 connect_timeout: float = 10.0, region: str | None = None):
        self._reactor = reactor
        self._region = region
        self._credentials = credentials
        self._endpoint_url = endpoint_url
        self._timeout = connect_timeout
        self._endpoints: dict[str, str] = {}
        pool = HTTPConnectionPool(reactor, persistent=False)
        self._http = HTTPClient(Agent(reactor, pool=pool, connectTimeout=connect_timeout))

    def _sign(self, app_id: str, region: str, url: str, body: bytes) -> dict:
        """On a worker thread: the headers of a signed POST (credentials refreshed as needed)."""
        frozen = self._credentials(app_id).get_frozen_credentials()
        request = AWSRequest(method="POST", url=url, data=body,
                             headers={"Content-Type": "application/json"})
        SigV4Auth(frozen, SIGNING_NAME, region).add_auth(request)
        return {name: [value] for name, value in request.headers.items()}

    async def _post(self, app_id: str, region: str, url: str, payload: dict):
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = await threads.deferToThreadPool(
            self._reactor, self._reactor.getThreadPool(), self._sign, app_id, region, url, body
        )
        response = await self._http.post(url, data=body, headers=headers, unbuffered=True,
                                         timeout=self._timeout)
        if response.code != 200:
            raise await _error(response)
        return response

    async def data_endpoint(self, app_id: str, arn: str) -> str:
        """GetDataEndpoint for GET_MEDIA, cached per stream until L{forget_endpoint}."""
        cached = self._endpoints.get(arn)
        if cached is None:
            cached = await self._data_endpoint(app_id, arn)
            self._endpoints[arn] = cached
        return cached

    def _region_of(self, arn: str) -> str:
        return self._region or stream_region(arn)

    def forget_endpoint(self, arn: str) -> None:
        self._endpoints.pop(arn, None)

    async def _data_endpoint(self, app_id: str, arn: str) -> str:
        region = self._region_of(arn)
        base = self._endpoint_url or f"https://kinesisvideo.{region}.amazonaws.com"
        response = await self._post(app_id, region, base.rstrip("/") + "/getDataEndpoint",
                                    {"APIName": "GET_MEDIA", "StreamARN": arn})
        answer = json.loads(await response.content())
        return answer["DataEndpoint"]

    async def get_media(self, app_id: str, arn: str, selector: dict,
                        on_data: Callable[[bytes], None]) -> _Body:
        """
        Open GetMedia with C{selector} (the C{StartSelector} object); the
        returned body's C{done} fires when the response ends.
        """
        endpoint = await self.data_endpoint(app_id, arn)
        try:
            response = await self._post(app_id, self._region_of(arn), endpoint.rstrip("/") + "/getMedia",
                                        {"StreamARN": arn, "StartSelector": selector})
        except KvsError as error:
            if error.type in ("InvalidEndpointException", "ResourceNotFoundException"):
                self.forget_endpoint(arn)
            raise
        except Exception:
            self.forget_endpoint(arn)
            raise
        body = _Body(on_data)
        response.deliverBody(body)
        return body
