# -*- test-case-name: tests.test_admission,tests.test_drain -*-
"""
Whether this node takes a new call: the one question every ingress asks
before it sets a call up (a SIPREC INVITE of a new dialog, a Twilio or
AudioHook WebSocket upgrade, a direct API C{startStream}), each answering a
refusal in its own protocol's terms. Requests for calls the node already
holds (re-INVITEs, BYEs, start- and stop-streaming) never ask it.

A node refuses when it is draining (it was told to stop: SIGTERM), when it
is full (the participant streams it holds and those the call would add pass
C{limits.max_streams}), and when it is not ready (its models still load).
"""

from __future__ import annotations

from typing import Callable

import attrs
from twisted.logger import Logger
from zope.interface import implementer

from mgateway.interfaces import IAdmission

log = Logger()

DRAINING = "draining"
FULL = "full"
NOT_READY = "not ready"

_DESCRIPTIONS = {
    DRAINING: "the node is shutting down",
    FULL: "the node carries all the streams it can",
    NOT_READY: "the node's models are still loading",
}


@attrs.frozen
class Refusal:
    """Why a new call is refused now, and when to try again."""

    reason: str = attrs.field(validator=attrs.validators.in_(_DESCRIPTIONS))
    retry_after: int = attrs.field(validator=attrs.validators.ge(1))

    @property
    def description(self) -> str:
        return _DESCRIPTIONS[self.reason]


@attrs.frozen
class Capacity:
    """The participant streams a node can carry, and those it carries now."""

    streams: int
    in_use: int

    def to_json(self) -> dict:
        return {"streams": self.streams, "inUse": self.in_use,
                "available": max(0, self.streams - self.in_use)}


@implementer(IAdmission)
class Admission:
    """
    @param max_streams: the participant streams the node carries.
    @param in_use: the participant streams it carries now.
    @param loaded: whether its models are loaded.
    @param retry_after: the seconds a refusal tells the peer to wait.
    """

    def __init__(self, *, max_streams: int, in_use: Callable[[], int], loaded: Callable[[], bool],
                 retry_after: int):
        self._max_streams = max_streams
        self._in_use = in_use
        self._loaded = loaded
        self._retry_after = retry_after
        self.draining = False

    def refusal(self, streams: int) -> Refusal | None:
        if self.draining:
            return Refusal(DRAINING, self._retry_after)
        if not self._loaded():
            return Refusal(NOT_READY, self._retry_after)
        if self._in_use() + streams > self._max_streams:
            return Refusal(FULL, self._retry_after)
        return None

    def capacity(self) -> Capacity:
        return Capacity(self._max_streams, self._in_use())

    def drain(self) -> None:
        if not self.draining:
            log.info("draining: new calls are refused from now on ({in_use} streams in progress)",
                     in_use=self._in_use())
        self.draining = True
