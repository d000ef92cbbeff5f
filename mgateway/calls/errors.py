# -*- test-case-name: tests.test_call_registry,tests.test_start_request -*-
"""
Errors of the call registry: those of the REST APIs, carrying the spec's HTTP
status and error code (the body is always C{{"error": {"requestId",
"message", "code"}}}), and those an ingress gets when it attaches media.
"""

from __future__ import annotations

from typing import Sequence


class LegBusy(ValueError):
    """
    A media leg another attachment feeds now was attached again (a second
    socket for the same Twilio track, an m-line offered twice). Each ingress
    answers in its own terms: a WebSocket close, a SIP 4xx.
    """

    def __init__(self, namespace: str, guid: str, legs: Sequence[str]):
        super().__init__(f"legs {list(legs)} already attached to {namespace}/{guid}")
        self.namespace = namespace
        self.guid = guid
        self.legs = tuple(legs)


class ApiError(Exception):
    """A request failed with one of the spec's error codes."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{code} {message}")
        self.status = status
        self.code = code
        self.message = message


def bad_parameter(message: str) -> ApiError:
    """400-201: MG AI Transcribe API parameter incorrect."""
    return ApiError(400, "400-201", message)


def bad_transcribe_parameter(message: str) -> ApiError:
    """400-202: AI Transcribe parameter or combination incorrect."""
    return ApiError(400, "400-202", message)


def no_such_call(namespace: str, guid: str) -> ApiError:
    """400-203: no call with the specified guid."""
    return ApiError(400, "400-203", f"No call with guid {guid!r} found in namespace {namespace!r}")


def already(state: str) -> ApiError:
    """409-201: transcription already started or already stopped."""
    return ApiError(409, "409-201", f"Call transcription already {state}")


def pending() -> ApiError:
    """409-202: another request for the same guid is still being processed."""
    return ApiError(409, "409-202", "Another API request for same guid is pending")


def ending() -> ApiError:
    """409-203: the call is hanging up (SIPREC BYE or end of stream being processed)."""
    return ApiError(409, "409-203", "SIPREC BYE being processed")


def internal(message: str = "MG AI Transcribe internal error") -> ApiError:
    """500-201."""
    return ApiError(500, "500-201", message)
