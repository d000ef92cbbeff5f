# -*- test-case-name: tests.test_sip_message,tests.test_sip_torture -*-
"""
SIP messages (RFC 3261 §7) as immutable values, and the header grammars the
server needs (their grammars are in L{mgateway.sip.grammar}).

L{parse_message} reads one whole message, as a UDP datagram carries it or as
L{mgateway.sip.framing.StreamFramer} cuts it from a stream; L{serialize} writes
one, always with a correct C{Content-Length}. Every malformed input raises
L{ParseError} (or L{VersionNotSupported}), never another exception.

Header text is decoded as UTF-8 with C{surrogateescape}, so bytes that are not
UTF-8 (a Latin-1 display name, say) survive a parse/serialize round trip.
"""

from __future__ import annotations

import re
from typing import Iterable, Iterator

import attrs

from mgateway.sip.errors import ParseError, VersionNotSupported
from mgateway.sip.grammar import (
    SCHEME_RE,
    TOKEN_RE,
    CSeq,
    NameAddress,
    Via,
    parse_cseq,
    parse_name_addr,
    parse_via,
    split_list,
)

#: RFC 3261 §7.3.3 and later RFCs' compact header names, by their full name.
COMPACT_FORMS = {
    "a": "accept-contact",
    "b": "referred-by",
    "c": "content-type",
    "d": "request-disposition",
    "e": "content-encoding",
    "f": "from",
    "i": "call-id",
    "j": "reject-contact",
    "k": "supported",
    "l": "content-length",
    "m": "contact",
    "o": "event",
    "r": "refer-to",
    "s": "subject",
    "t": "to",
    "u": "allow-events",
    "v": "via",
    "x": "session-expires",
    "y": "identity",
}

_BLANK_LINE_RE = re.compile(rb"\r?\n\r?\n")
_LINE_BREAK_RE = re.compile(r"\r?\n")
#: A NUL not preceded by an odd number of backslashes.
_BARE_NUL_RE = re.compile(r"(?<!\\)(?:\\\\)*\0")
#: Headers a request carries once at most (RFC 3261 §7.3.1, §20; RFC 4475 §3.3.8).
_SINGLE_HEADERS = ("Call-ID", "CSeq", "From", "To", "Max-Forwards", "Content-Type")
_ENCODING = "utf-8"
_ERRORS = "surrogateescape"


def header_key(name: str) -> str:
    """The lookup key of a header name: lower case, compact forms expanded."""
    lowered = name.lower()
    return COMPACT_FORMS.get(lowered, lowered)


def _has_bare_nul(value: str) -> bool:
    """
    Whether C{value} holds a NUL that is not escaped: RFC 3261's quoted-pair
    (C{\\} then any octet but CR and LF) makes C{\\<NUL>} legal inside a
    quoted string (RFC 4475 §3.1.1.2).
    """
    return _BARE_NUL_RE.search(value) is not None


def _check_header(pair) -> tuple[str, str]:
    name, value = pair
    if not TOKEN_RE.fullmatch(name):
        raise ValueError(f"header name {name!r} is not a token")
    if "\r" in value or "\n" in value or _has_bare_nul(value):
        raise ValueError(f"header {name} value {value!r} contains a line break or NUL")
    return (name, value)


def _to_items(pairs: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple(_check_header(pair) for pair in pairs)


@attrs.frozen
class Headers:
    """
    An ordered multi-dict of header fields.

    Fields keep their order and the name as written (so C{i} stays C{i} when
    serialised); look-ups ignore case and treat compact forms as their full
    names, so C{headers.get("Call-ID")} finds C{i: ...}.
    """

    items: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_to_items)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, name: str) -> bool:
        key = header_key(name)
        return any(header_key(n) == key for n, _ in self.items)

    def get(self, name: str, default: str | None = None) -> str | None:
        """The value of the first field called C{name}."""
        key = header_key(name)
        for n, value in self.items:
            if header_key(n) == key:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        """The values of every field called C{name}, one per header line."""
        key = header_key(name)
        return [value for n, value in self.items if header_key(n) == key]

    def get_list(self, name: str) -> list[str]:
        """
        The elements of a comma-separated list header (Via, Contact, Supported,
        Require, Allow, ...) across all its lines.
        """
        return [element for value in self.get_all(name) for element in split_list(value)]

    def with_header(self, name: str, value: str) -> Headers:
        """A copy with one more field at the end."""
        return Headers(self.items + ((name, value),))

    def without(self, name: str) -> Headers:
        """A copy without any field called C{name}."""
        key = header_key(name)
        return Headers(pair for pair in self.items if header_key(pair[0]) != key)

    def replaced(self, name: str, value: str) -> Headers:
        """A copy where C{name} has the single value C{value}, in place of the first old one."""
        key = header_key(name)
        out: list[tuple[str, str]] = []
        placed = False
        for pair in self.items:
            if header_key(pair[0]) != key:
                out.append(pair)
            elif not placed:
                out.append((name, value))
                placed = True
        if not placed:
            out.append((name, value))
        return Headers(out)


class _HeaderAccess:
    """Parsed views of the headers every request and response carries."""

    headers: Headers
    body: bytes

    def _required(self, name: str) -> str:
        value = self.headers.get(name)
        if value is None:
            raise ParseError(f"missing {name} header")
        return value

    @property
    def call_id(self) -> str:
        return self._required("Call-ID")

    @property
    def cseq(self) -> CSeq:
        return parse_cseq(self._required("CSeq"))

    @property
    def from_address(self) -> NameAddress:
        return parse_name_addr(self._required("From"))

    @property
    def to_address(self) -> NameAddress:
        return parse_name_addr(self._required("To"))

    @property
    def vias(self) -> list[Via]:
        """Every Via element, topmost first."""
        return [parse_via(value) for value in self.headers.get_list("Via")]

    @property
    def content_type(self) -> str | None:
        return self.headers.get("Content-Type")


@attrs.frozen
class Request(_HeaderAccess):
    method: str
    uri: str
    headers: Headers = Headers()
    body: bytes = b""


@attrs.frozen
class Response(_HeaderAccess):
    status: int
    reason: str
    headers: Headers = Headers()
    body: bytes = b""


def _parse_headers(lines: list[str]) -> Headers:
    # Each header's value as its pieces, joined once: folded lines cost
    # linear time however many there are.
    pairs: list[tuple[str, list[str]]] = []
    for line in lines:
        if line[:1] in (" ", "\t"):
            if not pairs:
                raise ParseError("continuation line before any header")
            pairs[-1][1].append(line.strip())
            continue
        name, sep, value = line.partition(":")
        name = name.rstrip(" \t")
        if not sep or not TOKEN_RE.fullmatch(name):
            raise ParseError(f"bad header line {line[:60]!r}")
        pairs.append((name, [value.strip()]))
    joined = [(name, " ".join(piece for piece in pieces if piece)) for name, pieces in pairs]
    if any(_has_bare_nul(value) or "\r" in value for _, value in joined):
        raise ParseError("stray CR or NUL in a header value")
    return Headers(joined)


def parse_header_block(data: bytes) -> Headers:
    """Parse header lines (no start line) such as a MIME part's head."""
    text = data.decode(_ENCODING, _ERRORS)
    return _parse_headers([line for line in _LINE_BREAK_RE.split(text) if line])


def head_end(data: bytes | bytearray, start: int = 0) -> int | None:
    """The offset just after the blank line that ends the head, searching from C{start}."""
    match = _BLANK_LINE_RE.search(data, start)
    return match.end() if match else None


def split_head(data: bytes) -> tuple[str, Headers, bytes]:
    """
    Split a message into its start line, headers and everything after the
    blank line. Empty lines before the start line are skipped (RFC 3261 §7.5).
    A message without the blank line has no body.
    """
    data = data.lstrip(b"\r\n")
    if not data:
        raise ParseError("empty message")
    end = head_end(data)
    head, rest = (data[:end], data[end:]) if end is not None else (data, b"")
    lines = _LINE_BREAK_RE.split(head.decode(_ENCODING, _ERRORS))
    return lines[0], _parse_headers([line for line in lines[1:] if line]), rest


def content_length(headers: Headers) -> int | None:
    """The C{Content-Length} value; several lines must agree."""
    values = {value.strip() for value in headers.get_all("Content-Length")}
    if not values:
        return None
    if len(values) > 1:
        raise ParseError(f"conflicting Content-Length values {sorted(values)}")
    (text,) = values
    if not text.isdigit() or not text.isascii() or len(text) > 9:
        raise ParseError(f"bad Content-Length {text[:20]!r}")
    return int(text)


def _check_version(version: str) -> None:
    if version.upper() == "SIP/2.0":
        return
    if re.fullmatch(r"SIP/[0-9]+\.[0-9]+", version, re.IGNORECASE):
        raise VersionNotSupported(f"SIP version {version!r}")
    raise ParseError(f"bad SIP version {version[:20]!r}")


def _start_line(line: str, headers: Headers, body: bytes) -> Request | Response:
    if "\r" in line or "\0" in line:
        raise ParseError("stray CR or NUL in the start line")
    if line.upper().startswith("SIP/"):
        version, _, rest = line.partition(" ")
        _check_version(version)
        code, _, reason = rest.partition(" ")
        if len(code) != 3 or not code.isdigit() or not code.isascii() or not 100 <= int(code) <= 699:
            raise ParseError(f"bad status line {line[:60]!r}")
        return Response(int(code), reason.strip(), headers, body)
    parts = line.split()
    if len(parts) != 3:
        raise ParseError(f"bad request line {line[:60]!r}")
    method, uri, version = parts
    _check_version(version)
    if not TOKEN_RE.fullmatch(method) or not SCHEME_RE.fullmatch(uri):
        raise ParseError(f"bad request line {line[:60]!r}")
    return Request(method, uri, headers, body)


def _validate(message: Request | Response) -> None:
    """RFC 3261 §8.1.1: the headers every message needs, and that they parse."""
    repeated = [name for name in _SINGLE_HEADERS if len(message.headers.get_all(name)) > 1]
    if repeated:
        raise ParseError(f"{', '.join(repeated)} appear more than once")
    if not message.call_id.strip():
        raise ParseError("empty Call-ID")
    cseq = message.cseq
    for name in ("From", "To"):
        parse_name_addr(message._required(name))
    if not message.vias:
        raise ParseError("missing Via header")
    if isinstance(message, Request) and cseq.method != message.method:
        raise ParseError(f"CSeq method {cseq.method} does not match {message.method}")


def parse_message(data: bytes) -> Request | Response:
    """
    Parse one whole message (a datagram). Without C{Content-Length} the body is
    the rest of the data; with it, extra bytes are dropped (RFC 3261 §18.3)
    and missing bytes are an error.
    """
    line, headers, rest = split_head(data)
    length = content_length(headers)
    if length is not None:
        if length > len(rest):
            raise ParseError(f"Content-Length {length} but only {len(rest)} body bytes")
        rest = rest[:length]
    message = _start_line(line, headers, rest)
    _validate(message)
    return message


def serialize(message: Request | Response) -> bytes:
    """The wire form, with one C{Content-Length} matching the body at the end of the headers."""
    if isinstance(message, Request):
        start = f"{message.method} {message.uri} SIP/2.0"
    else:
        start = f"SIP/2.0 {message.status} {message.reason}"
    lines = [start]
    lines.extend(f"{name}: {value}" for name, value in message.headers.without("Content-Length"))
    lines.append(f"Content-Length: {len(message.body)}")
    head = "\r\n".join(lines) + "\r\n\r\n"
    return head.encode(_ENCODING, _ERRORS) + message.body


def response_for(
    request: Request,
    status: int,
    reason: str,
    extra_headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    to_tag: str | None = None,
) -> Response:
    """
    A response to C{request} (RFC 3261 §8.2.6.2): Via lines in order, From,
    To, Call-ID and CSeq copied; C{to_tag} added to To when the request's To
    has no tag yet. Record-Route is copied into responses to INVITE that can
    set up a dialog (RFC 3261 §12.1.1). Then C{extra_headers}, in order.
    """
    headers: list[tuple[str, str]] = [("Via", via) for via in request.headers.get_all("Via")]
    headers.append(("From", request.headers.get("From", "")))
    to = request.headers.get("To", "")
    if to_tag is not None and request.to_address.tag is None:
        to = f"{to};tag={to_tag}"
    headers.append(("To", to))
    headers.append(("Call-ID", request.call_id))
    headers.append(("CSeq", request.headers.get("CSeq", "")))
    if request.method == "INVITE" and 100 < status < 300:
        headers.extend(("Record-Route", rr) for rr in request.headers.get_all("Record-Route"))
    headers.extend(extra_headers)
    return Response(status, reason, Headers(headers), body)
