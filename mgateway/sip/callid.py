# -*- test-case-name: tests.test_callid -*-
"""
The call's guid: the identifier the customer's systems know the call by, taken
from vendor headers or recording metadata of a SIPREC INVITE.

The spec wants decimal forms: an Avaya UCID as 20 digits (C{00002542391662063156})
and a Cisco GUID as four 10-digit words (C{0867617078-0032318833-2221801472-0002236962}).

Sources, tried in a configurable order:

  - C{uui}: Avaya UCID in the C{User-to-User} header (hex, IE C{FA}, length 8);
  - C{ucid}: a UCID in the metadata: Oracle/Acme C{<apkt:ucid>} (any prefix;
    the user-to-user hex, or the bare 8-byte UCID element in hex as Oracle
    generates it, or already decimal), AudioCodes C{<ac:AvayaUCID>} (hex
    without the leading C{00}), or a C{User-to-User} header copied into the
    metadata;
  - C{cisco-guid}: the C{Cisco-Guid} header, a copy of it in the metadata, or
    the C{GCI} of CUBE's C{application/gtd} body part (hex);
  - C{gcid}: Ribbon/Sonus C{callData/gcid};
  - C{genesys}: the C{X-GenesysConversationID} header, else AudioCodes'
    C{GenesysUUID} in the metadata;
  - C{header}: a header named in the configuration: the metadata's copy of
    the recorded call's header (Oracle C{<apkt:header label=...>}), else the
    request's own;
  - C{session-id}: the metadata's first session id (decoded when Avaya SBCE
    puts a UCID there).

When no source yields a value, the SIP Call-ID of the request is the guid
(source C{call-id}), so every call has one.
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

import attrs

from mgateway.sip.errors import SIPError
from mgateway.sip.message import Request
from mgateway.sip.metadata import RecordingMetadata
from mgateway.sip.multipart import parse_content_type, parse_multipart

SOURCES = ("uui", "ucid", "cisco-guid", "gcid", "genesys", "header", "session-id")
DEFAULT_ORDER = SOURCES
FALLBACK_SOURCE = "call-id"

_UCID_IE = 0xFA
_UCID_LENGTH = 8
_GCI_RE = re.compile(rb"GCI,([0-9A-Fa-f]{32})")
_DECIMAL_GUID_RE = re.compile(r"([0-9]{1,10})-([0-9]{1,10})-([0-9]{1,10})-([0-9]{1,10})")
_HEX_GUID_RE = re.compile(r"[0-9A-Fa-f]{8}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{12}")
_SBCE_UCID_RE = re.compile(r"00FA08[0-9A-Fa-f]{16}")


@attrs.frozen
class CallId:
    value: str
    source: str


def decode_ucid(text: str) -> str | None:
    """
    The 20-digit decimal form of an Avaya UCID carried as hex user-to-user
    information (C{00FA08...;encoding=hex}), or None when there is no UCID.

    The UCID element is 2 bytes of network node id, 2 bytes of sequence number
    and 4 bytes of Unix time, written C{%05d%05d%010d}.
    """
    data = _hex_bytes(text)
    if data is None:
        return None
    # A leading protocol discriminator byte precedes the elements, except in
    # AudioCodes' copy, which starts at the UCID element itself.
    offset = 0 if data[:1] == bytes([_UCID_IE]) else 1
    while offset + 2 <= len(data):
        tag, length = data[offset], data[offset + 1]
        element = data[offset + 2: offset + 2 + length]
        if tag == _UCID_IE and length == _UCID_LENGTH and len(element) == _UCID_LENGTH:
            return _decimal_ucid(element)
        offset += 2 + length
    return None


def decode_metadata_ucid(text: str) -> str | None:
    """
    A UCID as recording metadata carries it, in decimal: user-to-user hex
    (L{decode_ucid}), the bare 8-byte UCID element in hex (Oracle/Acme's
    C{<apkt:ucid>00391770615DEF95</apkt:ucid>}: node 57, sequence 6000, time
    1633546133), or the 20-digit decimal form itself; None for anything else.
    """
    value = text.split(";", 1)[0].strip()
    if len(value) == 20 and value.isascii() and value.isdigit():
        return value
    data = _hex_bytes(value)
    if data is not None and len(data) == _UCID_LENGTH:
        return _decimal_ucid(data)
    return decode_ucid(value)


def _hex_bytes(text: str) -> bytes | None:
    value = text.split(";", 1)[0].strip()
    if len(value) % 2 or not re.fullmatch(r"[0-9A-Fa-f]*", value):
        return None
    return bytes.fromhex(value)


def _decimal_ucid(element: bytes) -> str:
    node = int.from_bytes(element[0:2], "big")
    sequence = int.from_bytes(element[2:4], "big")
    seconds = int.from_bytes(element[4:8], "big")
    return f"{node:05d}{sequence:05d}{seconds:010d}"


def cisco_guid(text: str) -> str | None:
    """
    A Cisco GUID in its decimal four-word form, from that form (re-padded) or
    from 32 hex digits (CUBE's C{GCI}); None when it is neither.
    """
    value = text.strip()
    match = _DECIMAL_GUID_RE.fullmatch(value)
    if match:
        words = [int(word) for word in match.groups()]
        if all(word < 2**32 for word in words):
            return "-".join(f"{word:010d}" for word in words)
        return None
    if _HEX_GUID_RE.fullmatch(value):
        digits = value.replace("-", "")
        return "-".join(f"{int(digits[i:i + 8], 16):010d}" for i in range(0, 32, 8))
    return None


def check_order(order: Sequence[str]) -> None:
    """
    Refuse a source order naming unknown sources (call it when loading the configuration).

    @raise ValueError: an unknown name.
    """
    unknown = [name for name in order if name not in SOURCES]
    if unknown:
        raise ValueError(f"unknown call id sources {unknown}; known: {', '.join(SOURCES)}")


def extract_call_id(
    request: Request,
    metadata: RecordingMetadata | None,
    order: Sequence[str] = DEFAULT_ORDER,
    custom_header: str | None = None,
) -> CallId:
    """The guid of the call recorded by C{request}, from the first source in C{order} that has one."""
    check_order(order)
    finders: dict[str, Callable[[], str | None]] = {
        "uui": lambda: _first(decode_ucid, request.headers.get_all("User-to-User")),
        "ucid": lambda: _metadata_ucid(metadata),
        "cisco-guid": lambda: _cisco_guid(request, metadata),
        "gcid": lambda: _extension(metadata, "gcid"),
        "genesys": lambda: _header(request, "X-GenesysConversationID") or _extension(metadata, "genesysuuid"),
        "header": lambda: _custom_header(request, metadata, custom_header),
        "session-id": lambda: _session_id(metadata),
    }
    for source in order:
        value = finders[source]()
        if value:
            return CallId(value, source)
    return CallId(request.call_id, FALLBACK_SOURCE)


def _first(decode: Callable[[str], str | None], values: Sequence[str | None]) -> str | None:
    return next((found for found in (decode(v) for v in values if v) if found), None)


def _header(request: Request, name: str) -> str | None:
    value = request.headers.get(name)
    return value.strip() if value and value.strip() else None


def _extension(metadata: RecordingMetadata | None, name: str) -> str | None:
    return metadata.extension(name) if metadata is not None else None


def _metadata_ucid(metadata: RecordingMetadata | None) -> str | None:
    for name in ("ucid", "avayaucid", "header:user-to-user"):
        value = _extension(metadata, name)
        if value:
            return decode_metadata_ucid(value) or value.split(";", 1)[0].strip() or None
    return None


def _cisco_guid(request: Request, metadata: RecordingMetadata | None) -> str | None:
    candidates = [_header(request, "Cisco-Guid"), _extension(metadata, "header:cisco-guid")]
    return _first(cisco_guid, candidates) or _gtd_guid(request)


def _gtd_guid(request: Request) -> str | None:
    """The GCI of an C{application/gtd} part (Cisco CUBE's SIPREC INVITE)."""
    if request.content_type is None:
        return None
    try:
        content_type = parse_content_type(request.content_type)
        if not content_type.media_type.startswith("multipart/"):
            return None
        parts = parse_multipart(content_type, request.body)
    except SIPError:
        return None
    for part in parts:
        if part.content_type is not None and part.content_type.media_type == "application/gtd":
            match = _GCI_RE.search(part.body)
            if match:
                return cisco_guid(match[1].decode("ascii"))
    return None


def _custom_header(request: Request, metadata: RecordingMetadata | None, name: str | None) -> str | None:
    if not name:
        return None
    # The metadata's copy is the recorded call's own header; the request's may be the recording leg's.
    return _extension(metadata, f"header:{name.lower()}") or _header(request, name)


def _session_id(metadata: RecordingMetadata | None) -> str | None:
    session_id = metadata.session_id if metadata is not None else None
    if session_id and _SBCE_UCID_RE.fullmatch(session_id):
        return decode_ucid(session_id)
    return session_id
