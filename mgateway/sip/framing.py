# -*- test-case-name: tests.test_sip_message,tests.test_sip_transports -*-
"""
Cutting SIP messages out of a TCP or TLS byte stream (RFC 3261 §18.3).

On a stream every message must carry C{Content-Length}: it is the only way to
find where the body ends. Empty lines between messages are keep-alives;
a double CRLF is a ping that the server answers with a single CRLF
(RFC 5626 §4.4.1), collected by L{StreamFramer.data_to_send}.
"""

from __future__ import annotations

import attrs

from mgateway.sip.errors import MessageTooLarge, ParseError, SIPError
from mgateway.sip.message import Request, Response, content_length, head_end, parse_message, split_head

DEFAULT_MAX_SIZE = 64 * 1024

_PONG = b"\r\n"


@attrs.frozen
class Malformed:
    """
    A message whose extent was clear (head and C{Content-Length} readable) but
    which did not parse. The stream goes on after it.
    """

    error: SIPError
    data: bytes


class StreamFramer:
    """
    Feed it the bytes of one connection as they come; it returns each complete
    message once.

    When the stream cannot be framed any more (no C{Content-Length}, a
    message over C{max_size}, an unreadable head), L{failure} is set: the
    messages completed before that point are still returned (they get their
    responses), the connection must then be closed, and every later call to
    L{feed} raises that error.

    @param max_size: the largest message accepted, head and body together.
    """

    def __init__(self, max_size: int = DEFAULT_MAX_SIZE):
        self._max_size = max_size
        self._buffer = bytearray()
        self._scanned = 0
        self._expected: int | None = None
        self._newlines = 0
        self._pongs = 0
        #: Why the stream cannot be framed any more, once it cannot.
        self.failure: SIPError | None = None

    def feed(self, data: bytes) -> list[Request | Response | Malformed]:
        """
        The messages completed by C{data}, in order.

        @raise SIPError: the stream had already failed (L{failure}).
        """
        if self.failure is not None:
            raise self.failure
        self._buffer += data
        messages: list[Request | Response | Malformed] = []
        try:
            self._drain(messages)
        except SIPError as failure:
            self.failure = failure
            self._buffer.clear()
        return messages

    def data_to_send(self) -> bytes:
        """Keep-alive pongs owed to the peer since the last call."""
        pongs, self._pongs = self._pongs, 0
        return _PONG * pongs

    def _drain(self, messages: list) -> None:
        while self._skip_keepalives():
            total = self._expected if self._expected is not None else self._message_length()
            if total is None or len(self._buffer) < total:
                break
            data = bytes(self._buffer[:total])
            del self._buffer[:total]
            self._expected = None
            self._scanned = 0
            self._newlines = 0
            try:
                messages.append(parse_message(data))
            except SIPError as error:
                messages.append(Malformed(error, data))

    def _skip_keepalives(self) -> bool:
        """Drop empty lines before a message; true when message bytes are waiting."""
        if self._expected is not None:
            return True
        buffer = self._buffer
        while buffer:
            if buffer.startswith(b"\r\n"):
                del buffer[:2]
            elif buffer.startswith(b"\n"):
                del buffer[:1]
            elif buffer == b"\r":
                return False
            else:
                return True
            self._newlines += 1
            if self._newlines == 2:
                self._newlines = 0
                self._pongs += 1
        return False

    def _message_length(self) -> int | None:
        """The full length of the message at the buffer's start, once its head is complete."""
        buffer = self._buffer
        end = head_end(buffer, max(0, self._scanned - 3))
        if end is None:
            self._scanned = len(buffer)
            if len(buffer) > self._max_size:
                raise MessageTooLarge(f"no end of headers within {self._max_size} bytes")
            return None
        _, headers, _ = split_head(bytes(buffer[:end]))
        length = content_length(headers)
        if length is None:
            raise ParseError("Content-Length is required on a stream transport")
        total = end + length
        if total > self._max_size:
            raise MessageTooLarge(f"message of {total} bytes, limit {self._max_size}")
        self._expected = total
        return total
