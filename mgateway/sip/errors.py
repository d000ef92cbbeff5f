# -*- test-case-name: tests.test_sip_message,tests.test_sip_uas -*-
"""
The SIP error family: every failure of a SIP core carries the status code and
reason phrase the server answers with, so the transport can turn any of them
into a response (or, when no response is possible, a dropped message).
"""

from __future__ import annotations


class SIPError(Exception):
    """
    A request cannot be handled.

    @ivar status: the response status code (400, 415, 488, ...).
    @ivar reason: the response reason phrase.
    @ivar detail: what exactly was wrong, for logs (never sent to the peer).
    """

    def __init__(self, status: int, reason: str, detail: str = ""):
        super().__init__(f"{status} {reason}" + (f": {detail}" if detail else ""))
        self.status = status
        self.reason = reason
        self.detail = detail


class ParseError(SIPError):
    """The bytes are not a well-formed SIP message, header, SDP or body: 400."""

    def __init__(self, detail: str):
        super().__init__(400, "Bad Request", detail)


class VersionNotSupported(SIPError):
    """The start line names a SIP version other than 2.0: 505."""

    def __init__(self, detail: str):
        super().__init__(505, "Version Not Supported", detail)


class MessageTooLarge(SIPError):
    """A message on a stream transport is bigger than the configured maximum: 513."""

    def __init__(self, detail: str):
        super().__init__(513, "Message Too Large", detail)


class UnsupportedMediaType(SIPError):
    """The body has no part the server understands: 415 (the response carries C{Accept})."""

    def __init__(self, detail: str):
        super().__init__(415, "Unsupported Media Type", detail)


class NotAcceptableHere(SIPError):
    """The session description cannot be answered at all: 488."""

    def __init__(self, detail: str):
        super().__init__(488, "Not Acceptable Here", detail)


class ServiceUnavailable(SIPError):
    """
    The node takes no new call now (draining, full, not ready): 503, whose
    C{Retry-After} tells the peer when to try again (RFC 3261 §21.5.4) and
    whose Warning says why; an SBC or Kamailio's dispatcher tries another node.
    """

    def __init__(self, detail: str, retry_after: int):
        super().__init__(503, "Service Unavailable", detail)
        self.retry_after = retry_after
