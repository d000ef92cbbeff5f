# -*- test-case-name: tests.test_rtp -*-
"""
RTP packets (RFC 3550 section 5.1), parsed from and built into datagrams.

RTCP may share the RTP port (RFC 5761): L{is_rtcp} tells the two apart so the
receiver can skip it before parsing.
"""

from __future__ import annotations

import struct

import attrs

from mgateway.media import MediaError

VERSION = 2
HEADER = struct.Struct("!BBHII")
EXTENSION_HEADER = struct.Struct("!HH")

# RFC 5761 section 4: with RTP and RTCP on one port, RTP must not use payload
# types 64-95, so a second octet of 192-223 (marker bit set, type 64-95) is an
# RTCP packet type: SR 200, RR 201, SDES 202, BYE 203, APP 204, and the
# feedback and XR types after them.
_RTCP_SECOND_OCTET = range(192, 224)


class RtpError(MediaError):
    """A datagram that is not a well-formed RTP packet."""


@attrs.frozen
class RtpExtension:
    """A header extension: the profile-defined 16 bits and the data words."""

    profile: int
    data: bytes


@attrs.frozen
class RtpPacket:
    """
    @ivar padding: how many padding octets followed the payload (0 when the
        P bit was clear); they are not part of C{payload}.
    """

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extension: RtpExtension | None = None
    padding: int = 0
    version: int = VERSION


def is_rtcp(datagram: bytes) -> bool:
    """Whether a datagram arriving on an RTP port is RTCP (RFC 5761 section 4)."""
    return len(datagram) >= 2 and datagram[0] >> 6 == VERSION and datagram[1] in _RTCP_SECOND_OCTET


def parse_rtp(datagram: bytes) -> RtpPacket:
    """
    @raise RtpError: the datagram is too short for what its header declares,
        is not version 2, or has an impossible padding count.
    """
    if len(datagram) < HEADER.size:
        raise RtpError(f"{len(datagram)} bytes is shorter than an RTP header")
    first, second, sequence, timestamp, ssrc = HEADER.unpack_from(datagram)
    version = first >> 6
    if version != VERSION:
        raise RtpError(f"RTP version {version}, expected {VERSION}")
    offset = HEADER.size
    csrc_count = first & 0x0F
    csrcs: tuple[int, ...] = ()
    if csrc_count:
        end = offset + 4 * csrc_count
        if len(datagram) < end:
            raise RtpError(f"{csrc_count} CSRCs do not fit in {len(datagram)} bytes")
        csrcs = struct.unpack_from(f"!{csrc_count}I", datagram, offset)
        offset = end
    extension = None
    if first & 0x10:
        if len(datagram) < offset + EXTENSION_HEADER.size:
            raise RtpError("header extension flagged but missing")
        profile, words = EXTENSION_HEADER.unpack_from(datagram, offset)
        offset += EXTENSION_HEADER.size
        end = offset + 4 * words
        if len(datagram) < end:
            raise RtpError(f"header extension of {words} words does not fit")
        extension = RtpExtension(profile, datagram[offset:end])
        offset = end
    end = len(datagram)
    padding = 0
    if first & 0x20:
        padding = datagram[-1] if end > offset else 0
        # The count includes itself, so it is at least 1.
        if not 1 <= padding <= end - offset:
            raise RtpError(f"padding count {padding} with {end - offset} bytes after the header")
        end -= padding
    return RtpPacket(
        payload_type=second & 0x7F,
        sequence=sequence,
        timestamp=timestamp,
        ssrc=ssrc,
        payload=datagram[offset:end],
        marker=bool(second & 0x80),
        csrcs=csrcs,
        extension=extension,
        padding=padding,
    )


def build_rtp(
    payload_type: int,
    sequence: int,
    timestamp: int,
    ssrc: int,
    payload: bytes,
    *,
    marker: bool = False,
    csrcs: tuple[int, ...] = (),
    extension: RtpExtension | None = None,
    padding: int = 0,
) -> bytes:
    """
    The datagram of one RTP packet: what L{parse_rtp} reads back as an
    L{RtpPacket} with the same fields.

    @param padding: padding octets to append (0-255), the last one holding the count.
    @raise RtpError: a field does not fit its header bits.
    """
    if not 0 <= payload_type <= 127:
        raise RtpError(f"payload type {payload_type} does not fit in 7 bits")
    if len(csrcs) > 15:
        raise RtpError(f"{len(csrcs)} CSRCs, at most 15 fit")
    if extension is not None and (len(extension.data) % 4 or len(extension.data) > 4 * 0xFFFF):
        raise RtpError("header extension data must be whole 32-bit words, at most 65535")
    if not 0 <= padding <= 255:
        raise RtpError(f"padding of {padding} octets, at most 255 fit")
    first = VERSION << 6 | bool(padding) << 5 | (extension is not None) << 4 | len(csrcs)
    try:
        parts = [
            HEADER.pack(first, bool(marker) << 7 | payload_type, sequence, timestamp, ssrc),
            struct.pack(f"!{len(csrcs)}I", *csrcs),
        ]
        if extension is not None:
            parts.append(EXTENSION_HEADER.pack(extension.profile, len(extension.data) // 4))
            parts.append(extension.data)
    except struct.error as e:
        raise RtpError(f"header field out of range: {e}") from None
    parts.append(payload)
    if padding:
        parts.append(bytes(padding - 1) + bytes([padding]))
    return b"".join(parts)
