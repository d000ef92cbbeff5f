# -*- test-case-name: tests.test_media_gateway_api -*-
"""JSON responses and the spec's error body."""

from __future__ import annotations

import json
import uuid

from twisted.logger import Logger

from mgateway.calls.errors import ApiError

log = Logger()

GENERIC = {
    400: ("400-01", "Bad request"),
    401: ("401-01", "Unauthorized"),
    404: ("404-01", "Not Found"),
    405: ("405-01", "Method Not Allowed"),
    413: ("413-01", "Request Entity Too Large"),
    500: ("500-01", "Internal server error"),
}


def request_id(request) -> str:
    """One id per request, in the error body and every log line about it."""
    rid = getattr(request, "asapp_request_id", None)
    if rid is None:
        rid = request.asapp_request_id = str(uuid.uuid4())
    return rid


def json_body(request, status: int, body: dict) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    return json.dumps(body).encode("utf-8")


def error_body(request, error: ApiError) -> bytes:
    rid = request_id(request)
    log.info(
        "{method} {path} -> {status} {code}: {message} (request {request_id})",
        method=request.method.decode("ascii", "replace"),
        path=request.path.decode("ascii", "replace"),
        status=error.status,
        code=error.code,
        message=error.message,
        request_id=rid,
    )
    return json_body(
        request,
        error.status,
        {"error": {"requestId": rid, "message": error.message, "code": error.code}},
    )


def generic_error(status: int, message: str | None = None) -> ApiError:
    code, default = GENERIC[status]
    return ApiError(status, code, message or default)
