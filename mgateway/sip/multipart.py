# -*- test-case-name: tests.test_siprec_metadata,tests.test_sdp -*-
"""
The bodies of SIPREC requests: C{multipart/mixed} (RFC 2046 §5.1) holding the
SDP offer and the recording metadata, or a single part.

Real recording clients vary (see the samples under tests/fixtures/siprec):
quoted or bare boundaries, any part order (BroadWorks puts the metadata
first), a part's own C{Content-Length} (ignored here: the boundary decides),
extra parts such as Cisco's C{application/gtd}, and stray blank lines.
"""

from __future__ import annotations

import re

import attrs

from mgateway.sip.errors import ParseError, UnsupportedMediaType
from mgateway.sip.grammar import parse_params
from mgateway.sip.message import Headers, head_end, parse_header_block

SDP = "application/sdp"
METADATA_TYPES = ("application/rs-metadata+xml", "application/rs-metadata")
#: What the server understands, for the C{Accept} header of a 415 response.
ACCEPTED_TYPES = (SDP, *METADATA_TYPES, "multipart/mixed")

_MEDIA_TYPE_RE = re.compile(r"[A-Za-z0-9!#$&^_.+\-]+/[A-Za-z0-9!#$&^_.+\-]+")
_HEADER_LINE_RE = re.compile(rb"[A-Za-z0-9\-.!%*_+`'~]+[ \t]*:")


@attrs.frozen
class ContentType:
    """A media type, lower-cased, and its parameters (names lower-cased)."""

    media_type: str
    params: tuple[tuple[str, str | None], ...] = ()

    def param(self, name: str) -> str | None:
        return dict(self.params).get(name.lower())


@attrs.frozen
class Part:
    """One body part; C{content_type} is None when the part has no Content-Type."""

    headers: Headers
    body: bytes
    content_type: ContentType | None

    @property
    def disposition(self) -> str | None:
        """The disposition type (C{session}, C{recording-session}, ...), lower-cased."""
        value = self.headers.get("Content-Disposition")
        return value.split(";", 1)[0].strip().lower() if value else None


def parse_content_type(value: str) -> ContentType:
    media_type, _, params = value.strip().partition(";")
    media_type = media_type.strip()
    if not _MEDIA_TYPE_RE.fullmatch(media_type):
        raise ParseError(f"bad Content-Type {value[:60]!r}")
    parsed = parse_params(";" + params) if params.strip() else ()
    return ContentType(media_type.lower(), tuple((k.lower(), v) for k, v in parsed))


def parse_multipart(content_type: ContentType, body: bytes) -> list[Part]:
    """
    The parts of a multipart body, in order; the preamble and epilogue are
    dropped. A missing close delimiter ends the last part at the end of the body.
    """
    boundary = content_type.param("boundary")
    if not boundary:
        raise ParseError(f"{content_type.media_type} without a boundary")
    delimiter = re.compile(
        rb"(?:\A|\r?\n)--" + re.escape(boundary.encode("utf-8", "surrogateescape"))
        + rb"(?P<close>--)?[ \t]*(?=\r?\n|\Z)"
    )
    matches = list(delimiter.finditer(body))
    if not matches:
        raise ParseError(f"boundary {boundary!r} not found in the body")
    parts: list[Part] = []
    for match, following in zip(matches, matches[1:] + [None]):
        if match["close"]:
            break
        end = following.start() if following else len(body)
        parts.append(_parse_part(body[match.end():end]))
    return parts


def _parse_part(raw: bytes) -> Part:
    raw = _strip_line_break(raw)
    if raw.startswith((b"\r\n", b"\n")):
        head, body = b"", _strip_line_break(raw)
    elif _HEADER_LINE_RE.match(raw):
        end = head_end(raw)
        head, body = (raw[:end], raw[end:]) if end is not None else (raw, b"")
    else:
        head, body = b"", raw
    headers = parse_header_block(head)
    return Part(headers, body, _part_content_type(headers.get("Content-Type")))


def _strip_line_break(data: bytes) -> bytes:
    return data[2:] if data.startswith(b"\r\n") else data[1:] if data.startswith(b"\n") else data


def _part_content_type(value: str | None) -> ContentType | None:
    """A part's type; a mangled one counts as absent so that sniffing can still place the part."""
    if value is None:
        return None
    try:
        return parse_content_type(value)
    except ParseError:
        return None


def _looks_like_sdp(part: Part) -> bool:
    return part.body.lstrip().startswith(b"v=0")


def _looks_like_metadata(part: Part) -> bool:
    return part.disposition == "recording-session" or part.body.lstrip().startswith(b"<?xml")


def recording_parts(content_type: str | None, body: bytes) -> tuple[bytes | None, bytes | None]:
    """
    The SDP and the recording metadata of a SIPREC request body, either may be
    None (an UPDATE can carry metadata only; a plain INVITE SDP only).

    Parts are chosen by Content-Type, then by sniffing: C{v=0} for SDP, a
    C{recording-session} disposition or C{<?xml} for metadata.

    @raise UnsupportedMediaType: the body holds neither SDP nor metadata.
    @raise ParseError: the Content-Type or the multipart structure is broken.
    """
    if not body.strip():
        return None, None
    if content_type is None:
        raise UnsupportedMediaType("body without Content-Type")
    parsed = parse_content_type(content_type)
    if parsed.media_type == SDP:
        return body, None
    if parsed.media_type in METADATA_TYPES:
        return None, body
    if not parsed.media_type.startswith("multipart/"):
        raise UnsupportedMediaType(f"body of type {parsed.media_type}")
    parts = parse_multipart(parsed, body)
    sdp = _first(parts, lambda p: _type_of(p) == SDP) or _first(parts, _looks_like_sdp)
    rest = [p for p in parts if p is not sdp]
    metadata = _first(rest, lambda p: _type_of(p) in METADATA_TYPES) or _first(rest, _looks_like_metadata)
    if sdp is None and metadata is None:
        raise UnsupportedMediaType("multipart body without SDP or recording metadata")
    return (sdp.body if sdp else None), (metadata.body if metadata else None)


def _type_of(part: Part) -> str | None:
    return part.content_type.media_type if part.content_type else None


def _first(parts: list[Part], predicate) -> Part | None:
    return next((part for part in parts if predicate(part)), None)
