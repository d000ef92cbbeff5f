# -*- test-case-name: tests.test_sdp -*-
"""
SDP (RFC 4566) as the recording server meets it, and the answer it gives
(RFC 3264 offer/answer, RFC 7866 §7 for recording sessions).

The parser is tolerant of what real recording clients send: the c= line at
session level, media level or nowhere, lines out of order (t= before c=),
unknown attributes (C{a=direction:both}). The answer keeps every m-line in the
offer's order, receives only, keeps the offerer's payload type numbers, and
takes every codec we decode in the offerer's order of preference (RFC 3264
§6.1): the offerer may send any of them.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Callable, Iterator, Mapping, Sequence

import attrs

from mgateway.sip.errors import NotAcceptableHere, ParseError, SIPError

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
#: The codecs accepted unless configured otherwise.
DEFAULT_CODEC_PREFERENCE = ("PCMU", "PCMA", "G729")
#: Codecs the gateway decodes, by their RFC 3551 static payload type.
DEFAULT_SUPPORTED = {"PCMU": 0, "PCMA": 8, "G729": 18}
#: The media pipeline runs at 8 kHz: formats at other clock rates are refused.
CLOCK_RATE = 8000
TELEPHONE_EVENT = "telephone-event"

_LINE_RE = re.compile(r"([a-zA-Z])=(.*)")
_ATTRIBUTE_NAME_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_HOLD_ADDRESSES = ("0.0.0.0", "::")


@attrs.frozen
class Connection:
    """A c= line: C{IN IP4 192.0.2.1}."""

    net_type: str
    addr_type: str
    address: str

    @property
    def is_hold(self) -> bool:
        """RFC 2543 hold: the sender stops sending by pointing us at nowhere."""
        return self.address in _HOLD_ADDRESSES


@attrs.frozen
class Origin:
    """An o= line; the session id and version stay text (they may exceed 64 bits)."""

    username: str
    session_id: str
    version: str
    net_type: str
    addr_type: str
    address: str


@attrs.frozen
class RtpMap:
    payload_type: int
    encoding: str
    clock_rate: int
    channels: int | None = None


@attrs.frozen
class Media:
    """
    One m= section.

    @ivar connection: the effective connection: the section's own c= line, else
        the session's, else None.
    @ivar direction: the effective direction: the section's attribute, else the
        session's, else C{sendrecv}.
    @ivar attributes: the section's own a= lines in order (name, value or None).
    """

    kind: str
    port: int
    proto: str
    formats: tuple[str, ...]
    connection: Connection | None
    direction: str
    attributes: tuple[tuple[str, str | None], ...] = ()
    port_count: int | None = None

    def attribute(self, name: str) -> str | None:
        """The value of the first a= line called C{name} (None when absent or valueless)."""
        return next((value for key, value in self.attributes if key == name), None)

    def attribute_values(self, name: str) -> list[str | None]:
        return [value for key, value in self.attributes if key == name]

    @property
    def label(self) -> str | None:
        """RFC 4574 C{a=label}, which ties the stream to the recording metadata."""
        return self.attribute("label")

    @property
    def rtpmaps(self) -> dict[int, RtpMap]:
        """The a=rtpmap lines by payload type; malformed ones are skipped."""
        maps: dict[int, RtpMap] = {}
        for value in self.attribute_values("rtpmap"):
            rtpmap = _parse_rtpmap(value or "")
            if rtpmap is not None:
                maps.setdefault(rtpmap.payload_type, rtpmap)
        return maps

    def fmtp(self, payload_type: int | str) -> str | None:
        """The format parameters of C{payload_type}."""
        for value in self.attribute_values("fmtp"):
            pt, _, params = (value or "").partition(" ")
            if pt == str(payload_type):
                return params.strip()
        return None

    @property
    def on_hold(self) -> bool:
        """The offerer will not send on this stream (inactive, recvonly or c=0.0.0.0)."""
        return self.direction in ("inactive", "recvonly") or bool(
            self.connection and self.connection.is_hold
        )

    @property
    def rejected(self) -> bool:
        return self.port == 0


@attrs.frozen
class SessionDescription:
    origin: Origin | None
    session_name: str | None
    connection: Connection | None
    attributes: tuple[tuple[str, str | None], ...]
    media: tuple[Media, ...]


def parse_sdp(data: bytes | str) -> SessionDescription:
    """
    Parse a session description.

    @raise ParseError: a line is not C{x=value}, or an o=, c= or m= line is malformed.
    """
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    session = _Section()
    sections: list[_Section] = []
    origin = session_name = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        match = _LINE_RE.fullmatch(line)
        if not match:
            raise ParseError(f"bad SDP line {line[:60]!r}")
        kind, value = match[1].lower(), match[2].strip()
        current = sections[-1] if sections else session
        if kind == "v":
            if value != "0":
                raise ParseError(f"SDP version {value[:10]!r}")
        elif kind == "o" and not sections:
            origin = _parse_origin(value)
        elif kind == "s" and not sections:
            session_name = value
        elif kind == "c":
            current.connection = _parse_connection(value)
        elif kind == "m":
            sections.append(_Section(media_line=value))
        elif kind == "a":
            current.attributes.append(_parse_attribute(value))
    return SessionDescription(
        origin=origin,
        session_name=session_name,
        connection=session.connection,
        attributes=tuple(session.attributes),
        media=tuple(section.build(session) for section in sections),
    )


@attrs.define
class _Section:
    media_line: str = ""
    connection: Connection | None = None
    attributes: list[tuple[str, str | None]] = attrs.field(factory=list)

    def direction(self) -> str | None:
        found = [name for name, _ in self.attributes if name in DIRECTIONS]
        return found[-1] if found else None

    def build(self, session: _Section) -> Media:
        parts = self.media_line.split()
        if len(parts) < 3:
            raise ParseError(f"bad m= line {self.media_line[:60]!r}")
        kind, port_text, proto, *formats = parts
        port_text, _, count_text = port_text.partition("/")
        port = _number(port_text, 65535, "m= port")
        count = _number(count_text, 65535, "m= port count") if count_text else None
        return Media(
            kind=kind.lower(),
            port=port,
            proto=proto,
            formats=tuple(formats),
            connection=self.connection or session.connection,
            direction=self.direction() or session.direction() or "sendrecv",
            attributes=tuple(self.attributes),
            port_count=count,
        )


def _number(text: str, maximum: int, what: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 10 or int(text) > maximum:
        raise ParseError(f"bad {what} {text[:20]!r}")
    return int(text)


def _parse_origin(value: str) -> Origin:
    parts = value.split()
    if len(parts) != 6:
        raise ParseError(f"bad o= line {value[:60]!r}")
    return Origin(*parts)


def _parse_connection(value: str) -> Connection:
    parts = value.split()
    if len(parts) != 3:
        raise ParseError(f"bad c= line {value[:60]!r}")
    net_type, addr_type, address = parts
    return Connection(net_type.upper(), addr_type.upper(), address.split("/", 1)[0])


def _parse_attribute(value: str) -> tuple[str, str | None]:
    name, sep, rest = value.partition(":")
    if not _ATTRIBUTE_NAME_RE.fullmatch(name):
        raise ParseError(f"bad a= line {value[:60]!r}")
    return name.lower(), (rest.strip() if sep else None)


def _parse_rtpmap(value: str) -> RtpMap | None:
    match = re.fullmatch(r"([0-9]{1,3})\s+([^/\s]+)/([0-9]{1,6})(?:/([0-9]{1,2}))?", value.strip())
    if not match:
        return None
    channels = int(match[4]) if match[4] else None
    return RtpMap(int(match[1]), match[2], int(match[3]), channels)


@attrs.frozen
class AcceptedStream:
    """
    A stream the answer takes, at index C{index} of the m-lines.

    @ivar port: our RTP port for it.
    @ivar formats: every codec the answer takes, as (the offerer's payload
        type, codec name), in the offerer's order: any may be sent.
    @ivar payload_type: the offerer's number for C{codec}, its preferred one.
    @ivar telephone_event_pt: the offerer's number for RFC 4733 events, if offered.
    @ivar remote_address: where the offerer sends from (its connection address).
    @ivar on_hold: the offer says nothing will be sent for now.
    """

    index: int
    label: str | None
    port: int
    payload_type: int
    codec: str
    telephone_event_pt: int | None
    remote_address: str | None
    remote_port: int
    on_hold: bool
    formats: tuple[tuple[int, str], ...] = ()


def build_answer(
    offer: SessionDescription,
    *,
    local_ip: str,
    ports: Callable[[int], int] | Sequence[int],
    session_id: int | str,
    version: int | str,
    supported: Mapping[str, int] = DEFAULT_SUPPORTED,
) -> tuple[str, list[AcceptedStream]]:
    """
    The SDP answer to a recording offer and the streams it accepts.

    Every m-line of the offer gets one in the answer, in the same order. An
    audio RTP/AVP stream with a codec we decode is accepted: every codec of
    C{supported} the offer has, in the offer's order, plus telephone-event
    if offered, with the offer's payload type numbers, C{a=recvonly} (or
    C{a=inactive} when the offer is inactive or recvonly) and the offer's label.
    Any other stream (port 0 in the offer, not audio, SRTP, no common codec)
    is refused with port 0.

    @param ports: our RTP port for an accepted stream, either a function of
        its m-line index or a list consumed in order, one per accepted stream.
    @param supported: the codecs we decode by static payload type, which
        names a format the offer lists without an rtpmap line.
    @raise SIPError: 503 when C{ports} runs out.
    """
    next_port = _port_source(ports)
    lines = _session_lines(local_ip, session_id, version)
    accepted: list[AcceptedStream] = []
    for index, media in enumerate(offer.media):
        choice = _choose(media, supported)
        if choice is None:
            lines.append(f"m={media.kind} 0 {media.proto} {media.formats[0] if media.formats else '0'}")
            continue
        formats, event_pt = choice
        port = next_port(index)
        stream = AcceptedStream(
            index=index,
            label=media.label,
            port=port,
            formats=formats,
            payload_type=formats[0][0],
            codec=formats[0][1],
            telephone_event_pt=event_pt,
            remote_address=media.connection.address if media.connection else None,
            remote_port=media.port,
            on_hold=media.on_hold,
        )
        accepted.append(stream)
        lines.extend(_answer_section(media, stream))
    return "\r\n".join(lines) + "\r\n", accepted


def build_offer(
    *, local_ip: str, port: int, session_id: int | str, version: int | str,
    supported: Mapping[str, int] = DEFAULT_SUPPORTED, telephone_event_pt: int = 101,
) -> str:
    """
    Our offer when an INVITE brought none (a delayed offer, as Cisco CUCM's
    built-in-bridge recording sends): one audio stream we receive on
    C{port}, in every codec of C{supported} (their static payload types)
    and telephone-event. The answer comes in the ACK.
    """
    formats = [*supported.values(), telephone_event_pt]
    lines = [
        *_session_lines(local_ip, session_id, version),
        f"m=audio {port} RTP/AVP {' '.join(map(str, formats))}",
        *(f"a=rtpmap:{pt} {name.upper()}/{CLOCK_RATE}" for name, pt in supported.items()),
        f"a=rtpmap:{telephone_event_pt} {TELEPHONE_EVENT}/{CLOCK_RATE}",
        "a=recvonly",
    ]
    return "\r\n".join(lines) + "\r\n"


def _session_lines(local_ip: str, session_id: int | str, version: int | str) -> list[str]:
    """The session-level lines of our SDP: our origin and connection address."""
    address_type = _address_type(local_ip)
    return [
        "v=0",
        f"o=- {session_id} {version} IN {address_type} {local_ip}",
        "s=-",
        f"c=IN {address_type} {local_ip}",
        "t=0 0",
    ]


def _answer_section(media: Media, stream: AcceptedStream) -> Iterator[str]:
    formats = [pt for pt, _ in stream.formats]
    if stream.telephone_event_pt is not None:
        formats.append(stream.telephone_event_pt)
    yield f"m=audio {stream.port} {media.proto} {' '.join(map(str, formats))}"
    for pt, codec in stream.formats:
        yield f"a=rtpmap:{pt} {codec}/{CLOCK_RATE}"
    if stream.telephone_event_pt is not None:
        yield f"a=rtpmap:{stream.telephone_event_pt} {TELEPHONE_EVENT}/{CLOCK_RATE}"
    for pt in formats:
        params = media.fmtp(pt)
        if params:
            yield f"a=fmtp:{pt} {params}"
    ptime = media.attribute("ptime")
    if ptime:
        yield f"a=ptime:{ptime}"
    if stream.label is not None:
        yield f"a=label:{stream.label}"
    yield "a=inactive" if media.direction in ("inactive", "recvonly") else "a=recvonly"


def _choose(
    media: Media, supported: Mapping[str, int]
) -> tuple[tuple[tuple[int, str], ...], int | None] | None:
    """
    For an acceptable stream, the formats we decode in the offer's order and
    the telephone-event payload type; None when there is none we decode.
    """
    if media.kind != "audio" or media.port == 0 or media.proto.upper() != "RTP/AVP":
        return None
    offered = _offered_formats(media, supported)
    decodable = {key.upper() for key in supported}
    formats = tuple(dict.fromkeys((pt, codec) for pt, codec in offered if codec in decodable))
    if not formats:
        return None
    event_pt = next((pt for pt, codec in offered if codec == TELEPHONE_EVENT.upper()), None)
    return formats, event_pt


def _offered_formats(media: Media, supported: Mapping[str, int]) -> list[tuple[int, str]]:
    """The offer's formats we can name, at 8 kHz mono, as (payload type, upper-case name)."""
    static = {pt: name.upper() for name, pt in supported.items()}
    rtpmaps = media.rtpmaps
    named: list[tuple[int, str]] = []
    for text in media.formats:
        if not text.isascii() or not text.isdigit() or len(text) > 3:
            continue
        pt = int(text)
        rtpmap = rtpmaps.get(pt)
        if rtpmap is None:
            if pt in static:
                named.append((pt, static[pt]))
        elif rtpmap.clock_rate == CLOCK_RATE and rtpmap.channels in (None, 1):
            named.append((pt, rtpmap.encoding.upper()))
    return named


def _port_source(ports: Callable[[int], int] | Sequence[int]) -> Callable[[int], int]:
    if callable(ports):
        return ports
    remaining = iter(ports)

    def take(index: int) -> int:
        try:
            return next(remaining)
        except StopIteration:
            raise SIPError(503, "Service Unavailable", f"no RTP port left for stream {index}") from None

    return take


def _address_type(address: str) -> str:
    try:
        return "IP6" if ipaddress.ip_address(address).version == 6 else "IP4"
    except ValueError:
        return "IP4"


@attrs.frozen
class StreamUpdate:
    """
    How one m-line of a new offer (re-INVITE, UPDATE) differs from the previous one.

    @ivar added: a new stream (a new m-line, or a refused slot reused).
    @ivar removed: the offer now refuses a stream it had (port 0).
    @ivar on_hold: the offerer will not send now; C{hold_changed} says it was otherwise before.
    @ivar remote_changed: the offerer's address or port moved.
    @ivar formats_changed: the offered payload types differ.
    """

    index: int
    label: str | None
    added: bool
    removed: bool
    on_hold: bool
    hold_changed: bool
    remote_address: str | None
    remote_port: int
    remote_changed: bool
    formats_changed: bool

    @property
    def changed(self) -> bool:
        return any((self.added, self.removed, self.hold_changed, self.remote_changed, self.formats_changed))


def compare_offers(previous: SessionDescription, current: SessionDescription) -> list[StreamUpdate]:
    """
    One L{StreamUpdate} per m-line of C{current}.

    @raise NotAcceptableHere: C{current} has fewer m-lines (RFC 3264 §8 forbids removing them).
    """
    if len(current.media) < len(previous.media):
        raise NotAcceptableHere(
            f"new offer has {len(current.media)} m-lines, the previous had {len(previous.media)}"
        )
    updates = []
    for index, media in enumerate(current.media):
        before = previous.media[index] if index < len(previous.media) else None
        added = media.port != 0 and (before is None or before.port == 0)
        address = media.connection.address if media.connection else None
        old_address = before.connection.address if before and before.connection else None
        updates.append(
            StreamUpdate(
                index=index,
                label=media.label,
                added=added,
                removed=media.port == 0 and before is not None and before.port != 0,
                on_hold=media.on_hold,
                hold_changed=before is not None and not added and media.on_hold != before.on_hold,
                remote_address=address,
                remote_port=media.port,
                remote_changed=before is not None and not added and media.port != 0
                and (media.port, address) != (before.port, old_address),
                formats_changed=before is not None and not added and media.formats != before.formats,
            )
        )
    return updates
