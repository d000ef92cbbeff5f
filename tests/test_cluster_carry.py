"""The signature of a start or stop carried between nodes, checked against the owner's clock."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet.task import Clock
from twisted.web.http_headers import Headers

from mgateway.cluster.carry import APP, REQUEST_ID, SIGNATURE, TIMESTAMP, BadSignature, Carrier, signature

SECRET = "0123456789abcdef0123"
BODY = b'{"namespace": "twilio", "guid": "CA1"}'


class Request:
    """What C{verify} reads of a twisted.web request: its headers."""

    def __init__(self, headers: dict):
        self.requestHeaders = Headers({k: [v] for k, v in headers.items()})

    def getHeader(self, name):
        return self.requestHeaders.getRawHeaders(name, [None])[0]


def carrier(now: float) -> Carrier:
    clock = Clock()
    clock.advance(now)
    return Carrier(membership=None, secret=SECRET, clock=clock, reactor=None, timeout_seconds=5)


def signed(timestamp="1000", operation="start-streaming", body=BODY, secret=SECRET, **changes) -> Request:
    headers = {TIMESTAMP: timestamp, APP: "app-1", REQUEST_ID: "req-1"}
    headers[SIGNATURE] = signature(secret.encode(), timestamp, operation, "app-1", "req-1", body)
    headers.update(changes)
    return Request(headers)


def test_a_request_signed_with_the_secret_gives_its_app_and_request_id():
    assert carrier(1010).verify(signed(), "start-streaming", BODY) == ("app-1", "req-1")


@pytest.mark.parametrize("request_, operation, body", [
    pytest.param(signed(secret="another-secret-entirely"), "start-streaming", BODY, id="other secret"),
    pytest.param(signed(), "stop-streaming", BODY, id="other operation"),
    pytest.param(signed(), "start-streaming", BODY + b" ", id="body changed"),
    pytest.param(signed(**{APP: "app-2"}), "start-streaming", BODY, id="app changed"),
    pytest.param(signed(**{REQUEST_ID: "req-2"}), "start-streaming", BODY, id="request id changed"),
    pytest.param(Request({TIMESTAMP: "1000", APP: "app-1", REQUEST_ID: "req-1"}), "start-streaming", BODY,
                 id="unsigned"),
])
def test_a_request_not_signed_for_what_it_carries_is_refused(request_, operation, body):
    with pytest.raises(BadSignature, match="bad signature"):
        carrier(1000).verify(request_, operation, body)


@pytest.mark.parametrize("now", [939, 1061])
def test_a_request_signed_more_than_a_minute_from_the_owners_clock_is_refused(now):
    with pytest.raises(BadSignature, match="away from this node's clock"):
        carrier(now).verify(signed(), "start-streaming", BODY)


def test_a_signed_timestamp_that_is_not_a_number_is_refused():
    with pytest.raises(BadSignature, match="bad timestamp"):
        carrier(1000).verify(signed(timestamp="soon"), "start-streaming", BODY)


@pytest_twisted.ensureDeferred
async def test_a_single_node_takes_no_carried_requests(gateway):
    response = await gateway.post("/internal/v1/cluster/start-streaming", raw=BODY,
                                  headers={TIMESTAMP: "0", APP: "app-1", REQUEST_ID: "r", SIGNATURE: "x"})
    assert response.code == 404
    assert (await response.json())["error"]["code"] == "404-01"
