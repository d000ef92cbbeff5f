# -*- test-case-name: tests.test_sip_uas -*-
"""
Session timers (RFC 4028) from the server's side: the client asks for a
session interval; we accept it, leave the refreshing to the client, and end
a session whose refresh (re-INVITE or UPDATE) never comes.
"""

from __future__ import annotations

import attrs

from mgateway.sip.errors import ParseError, SIPError
from mgateway.sip.message import Request

#: The smallest session interval accepted, in seconds (RFC 4028 §4 recommends 90).
MIN_SE = 90


class IntervalTooSmall(SIPError):
    """422: the requested interval is below ours; the response carries C{Min-SE}."""

    def __init__(self, minimum: int, requested: int):
        super().__init__(422, "Session Interval Too Small", f"Session-Expires {requested} < {minimum}")
        self.minimum = minimum


@attrs.frozen
class SessionTimer:
    interval: int

    def headers(self) -> list[tuple[str, str]]:
        """What the 2xx says: the client refreshes, and it must (RFC 4028 §9)."""
        return [("Session-Expires", f"{self.interval};refresher=uac"), ("Require", "timer")]

    @property
    def expires_after(self) -> float:
        """When to give up on the refresh: before the interval ends, by a third of it at most 32 s (§10)."""
        return self.interval - min(32, self.interval / 3)


def negotiate(request: Request, minimum: int = MIN_SE) -> SessionTimer | None:
    """
    The session timer a request (INVITE, re-INVITE, UPDATE) sets up: None when
    it asks for none or its client cannot refresh (no C{Supported: timer}).

    @raise IntervalTooSmall: the requested interval is below C{minimum}.
    @raise ParseError: C{Session-Expires} is not a number.
    """
    value = request.headers.get("Session-Expires")
    if value is None:
        return None
    delta = value.split(";", 1)[0].strip()
    if not delta.isascii() or not delta.isdigit() or len(delta) > 10:
        raise ParseError(f"bad Session-Expires {value[:40]!r}")
    if not any(tag.lower() == "timer" for tag in request.headers.get_list("Supported")):
        return None
    if int(delta) < minimum:
        raise IntervalTooSmall(minimum, int(delta))
    return SessionTimer(int(delta))
