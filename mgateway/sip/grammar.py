# -*- test-case-name: tests.test_sip_message -*-
"""
The grammars of the header values the server reads (RFC 3261 §25.1): CSeq,
name-addr (From, To, Contact), Via, parameters, quoted strings and
comma-separated lists. Every malformed value raises L{ParseError}, never
another exception.
"""

from __future__ import annotations

import re

import attrs

from mgateway.sip.errors import ParseError

TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
TOKEN_RE = re.compile(TOKEN)
SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*:\S+")
_MAX_CSEQ = 2**31 - 1
_DISPLAY_TOKENS_RE = re.compile(rf"{TOKEN}(?:\s+{TOKEN})*")


@attrs.frozen
class CSeq:
    number: int
    method: str


class _Parameters:
    """Case-insensitive access to a value's C{;name=value} parameters."""

    params: tuple[tuple[str, str | None], ...]

    def param(self, name: str) -> str | None:
        """The value of parameter C{name}; None when absent or valueless."""
        name = name.lower()
        return next((value for key, value in self.params if key.lower() == name), None)

    def has_param(self, name: str) -> bool:
        name = name.lower()
        return any(key.lower() == name for key, _ in self.params)


@attrs.frozen
class NameAddress(_Parameters):
    """
    A From, To or Contact value: C{"Display" <uri>;param=value}.

    @ivar params: the header parameters (outside the angle brackets) in order;
        a parameter without C{=} has the value C{None}.
    """

    display_name: str | None
    uri: str
    params: tuple[tuple[str, str | None], ...] = ()

    @property
    def tag(self) -> str | None:
        return self.param("tag")


@attrs.frozen
class Via(_Parameters):
    """One Via element: C{SIP/2.0/UDP host:port;branch=...;rport}."""

    transport: str
    host: str
    port: int | None
    params: tuple[tuple[str, str | None], ...] = ()

    @property
    def branch(self) -> str | None:
        return self.param("branch")


def split_list(value: str) -> list[str]:
    """Split a header value on the commas that are outside quotes and angle brackets."""
    return [part.strip() for part in _split_outside_quotes(value, ",", brackets=True) if part.strip()]


def parse_params(text: str) -> tuple[tuple[str, str | None], ...]:
    """
    Parse C{;name=value;flag} parameters (quoted values are unquoted); the
    text must be empty or start with C{;}.
    """
    text = text.strip()
    if not text:
        return ()
    if not text.startswith(";"):
        raise ParseError(f"unexpected text {text[:40]!r} before parameters")
    params: list[tuple[str, str | None]] = []
    for raw in _split_outside_quotes(text[1:], ";"):
        name, sep, value = raw.partition("=")
        name = name.strip()
        if not TOKEN_RE.fullmatch(name):
            raise ParseError(f"bad parameter {raw[:40]!r}")
        if not sep:
            params.append((name, None))
            continue
        value = value.strip()
        if value.startswith('"'):
            unquoted, rest = _quoted_string(value)
            if rest.strip():
                raise ParseError(f"text after quoted parameter {raw[:40]!r}")
            value = unquoted
        params.append((name, value))
    return tuple(params)


def _split_outside_quotes(text: str, separator: str, brackets: bool = False) -> list[str]:
    """Split on C{separator} outside quoted strings (and, with C{brackets}, outside C{<...>})."""
    pieces: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    depth = 0
    for char in text:
        if quoted:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif brackets and char in "<>":
            depth = depth + 1 if char == "<" else max(0, depth - 1)
        elif char == separator and depth == 0:
            pieces.append("".join(current))
            current = []
            continue
        current.append(char)
    if quoted:
        raise ParseError(f"unterminated quoted string in {text[:40]!r}")
    pieces.append("".join(current))
    return pieces


def _quoted_string(text: str) -> tuple[str, str]:
    """Read the quoted string at the start of C{text}: (its unescaped content, the rest)."""
    out: list[str] = []
    index = 1
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text):
            out.append(text[index + 1])
            index += 2
            continue
        if char == '"':
            return "".join(out), text[index + 1:]
        out.append(char)
        index += 1
    raise ParseError(f"unterminated quoted string in {text[:40]!r}")


def parse_cseq(value: str) -> CSeq:
    parts = value.split()
    if len(parts) != 2 or not parts[0].isdigit() or not parts[0].isascii():
        raise ParseError(f"bad CSeq {value[:40]!r}")
    number = int(parts[0])
    if number > _MAX_CSEQ or not TOKEN_RE.fullmatch(parts[1]):
        raise ParseError(f"bad CSeq {value[:40]!r}")
    return CSeq(number, parts[1])


def parse_name_addr(value: str) -> NameAddress:
    """Parse a From, To or single Contact value (name-addr or addr-spec form)."""
    text = value.strip()
    display: str | None = None
    if text.startswith('"'):
        display, text = _quoted_string(text)
        text = text.lstrip()
        if not text.startswith("<"):
            raise ParseError(f"quoted display name without <uri> in {value[:60]!r}")
    elif "<" in text:
        display = text[: text.index("<")].strip() or None
        text = text[text.index("<"):]
        if display is not None and not _DISPLAY_TOKENS_RE.fullmatch(display):
            # RFC 4475 §3.1.2.15: an unquoted display name is tokens only.
            raise ParseError(f"unquoted display name with non-token characters in {value[:60]!r}")
    if text.startswith("<"):
        end = text.find(">")
        if end < 0:
            raise ParseError(f"unterminated <uri> in {value[:60]!r}")
        uri, rest = text[1:end], text[end + 1:]
        if uri != uri.strip():
            # RFC 4475 §3.1.2.14: no whitespace inside the angle brackets.
            raise ParseError(f"whitespace inside <uri> in {value[:60]!r}")
    else:
        uri, sep, rest = text.partition(";")
        uri, rest = uri.strip(), sep + rest
    if not (uri == "*" or SCHEME_RE.fullmatch(uri)):
        raise ParseError(f"bad URI {uri[:60]!r}")
    return NameAddress(display, uri, parse_params(rest))


def parse_contact(value: str) -> NameAddress:
    """
    A Contact value, read as L{parse_name_addr} does, except that a missing
    closing C{>} (seen in real SBC templates: C{<sip:src@192.0.2.1;+sip.src})
    is tolerated: the URI ends at its first C{;}, the rest are header
    parameters.
    """
    try:
        return parse_name_addr(value)
    except ParseError:
        text = value.strip()
        start = text.find("<")
        if start < 0 or ">" in text[start:]:
            raise
        uri, sep, params = text[start + 1:].partition(";")
        return parse_name_addr(f"{text[:start]}<{uri.strip()}>{sep}{params}")


_VIA_RE = re.compile(
    r"\s*(?P<name>[^/\s]+)\s*/\s*(?P<version>[^/\s]+)\s*/\s*(?P<transport>[^\s;]+)"
    r"\s+(?P<host>\[[0-9A-Fa-f:.]+\]|[^\s;:\[\]]+)(?::(?P<port>[0-9]{1,5}))?\s*(?P<params>.*)",
    re.DOTALL,
)


def parse_via(value: str) -> Via:
    """Parse one Via element (use L{Headers.get_list} to split a combined Via line)."""
    match = _VIA_RE.fullmatch(value)
    if not match:
        raise ParseError(f"bad Via {value[:60]!r}")
    port = int(match["port"]) if match["port"] else None
    if port is not None and not 0 < port < 65536:
        raise ParseError(f"bad Via port in {value[:60]!r}")
    return Via(match["transport"].upper(), match["host"], port, parse_params(match["params"]))
