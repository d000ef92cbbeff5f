# -*- test-case-name: tests.test_audiohook_signature,tests.test_audiohook_api -*-
"""
Whether an AudioHook upgrade request is let in, decided without I/O: the
adapter hands over the request's headers and URI and gets a
L{VerifiedClient} or a L{Refusal} saying when and how to answer.

Every failed authentication is answered L{AUTH_FAILURE_SECONDS} after the
request arrived, whatever went wrong, so that its timing reveals nothing
(the reference server waits at least 500 ms too).
"""

from __future__ import annotations

from typing import Mapping

import attrs

from mgateway.ingress.audiohook.messages import is_uuid
from mgateway.ingress.audiohook.session import AUTH_FAILURES
from mgateway.ingress.audiohook.signature import NonceCache, SignatureError, VerifiedClient, verify_upgrade

#: How long after its arrival a refused upgrade is answered.
AUTH_FAILURE_SECONDS = 0.5


@attrs.frozen
class Refusal:
    """
    An upgrade that failed authentication.

    @ivar answer_at: when to answer it (the factory clock's seconds).
    @ivar session_id: its C{Audiohook-Session-Id}, as sent (may be empty).
    @ivar disconnect: accept it only to tell it is unauthorized (the
        C{disconnect} policy), rather than HTTP 401; never for a session id
        that is no UUID, as such a session cannot be spoken to.
    @ivar reason: what was wrong, for the log.
    """

    answer_at: float
    session_id: str
    disconnect: bool
    reason: str


@attrs.define
class UpgradeGate:
    """
    @param keys: API key -> base64 client secret (empty: that key may connect
        unsigned). No keys: every session is refused.
    @param auth_failure: one of L{AUTH_FAILURES}.
    """

    keys: Mapping[str, str] = attrs.field(converter=dict)
    auth_failure: str = attrs.field(default="disconnect")
    nonces: NonceCache = attrs.field(factory=NonceCache)

    @auth_failure.validator
    def _known(self, attribute, value) -> None:
        if value not in AUTH_FAILURES:
            raise ValueError(f"auth_failure must be one of {AUTH_FAILURES}, not {value!r}")

    def decide(self, headers: Mapping[str, str], request_uri: str, now: float) -> VerifiedClient | Refusal:
        """An upgrade request (headers with lower-case names) that arrived C{now}."""
        try:
            return verify_upgrade("GET", request_uri, headers.get("host", ""), headers, self.keys, now,
                                  self.nonces)
        except SignatureError as e:
            session_id = headers.get("audiohook-session-id", "").strip()
            return Refusal(now + AUTH_FAILURE_SECONDS, session_id,
                           self.auth_failure == "disconnect" and is_uuid(session_id), str(e))
