# -*- test-case-name: tests.test_audiohook_session -*-
"""
AudioHook protocol version 2 messages: the JSON envelope, durations, and the
checks every message must pass before its type is looked at.

Every message is one compact JSON object (the way Genesys and the reference
peers serialise them, keys in this order):

    client -> server  {"version":"2","type":..,"id":..,"seq":..,"serverseq":..,"position":..,"parameters":{..}}
    server -> client  {"version":"2","type":..,"id":..,"seq":..,"clientseq":..,"parameters":{..}}

C{parameters} is mandatory in both directions, C{{}} when empty. Durations
(C{position}, C{rtt}, C{start}, C{discarded}, ...) are ISO 8601 durations in
seconds only, C{"PT13.05525S"}; they are held here as integer nanoseconds so
that sample counts convert exactly (one 8 kHz sample is 125000 ns).
"""

from __future__ import annotations

import json
import re
from decimal import Decimal

VERSION = "2"
NULL_UUID = "00000000-0000-0000-0000-000000000000"
#: Longest text message either reference peer accepts, in characters.
MAX_TEXT_CHARS = 65535

CLOSE_REASONS = ("end", "disconnect", "error", "reconnect")
DISCONNECT_REASONS = ("completed", "unauthorized", "error")

NS_PER_SECOND = 1_000_000_000
#: Durations must stay below 2**53 ns, as in the reference (about 104 days).
_MAX_DURATION_NS = 2**53

# UUID versions 1-5 in the RFC 4122 variant, or the null UUID: what the
# reference validators accept.
_UUID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[1-5][0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-[0-9a-fA-F]{12}"
    r"|00000000-0000-0000-0000-000000000000"
)
_DURATION = re.compile(r"PT((?:[0-9]*\.)?[0-9]+)S")
_LANGUAGE = re.compile(r"[a-z]{2,3}-[A-Za-z]{2,3}")


class ProtocolError(Exception):
    """
    A message that breaks the protocol. C{info} is the text the server puts
    in its C{disconnect} message; the session turns this into that message,
    it never leaves the session.
    """

    def __init__(self, info: str):
        super().__init__(info)
        self.info = info


def as_text(value: object, limit: int = 256) -> str:
    """
    A client's value for the text of a C{disconnect}: compact JSON (what the
    client sent, in its own notation), never a Python repr; cut to C{limit}.
    """
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_uuid(value: object) -> bool:
    return isinstance(value, str) and _UUID.fullmatch(value) is not None


def is_language(value: object) -> bool:
    return isinstance(value, str) and _LANGUAGE.fullmatch(value) is not None


def is_sequence_number(value: object) -> bool:
    return type(value) is int and value >= 0


def parse_duration(value: object) -> int:
    """C{"PT1.5S"} -> 1500000000 (nanoseconds, rounded to the nearest)."""
    match = _DURATION.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ProtocolError(f"{as_text(value)} is not a duration of the form PT<seconds>S")
    ns = int((Decimal(match.group(1)) * NS_PER_SECOND).to_integral_value())
    if ns >= _MAX_DURATION_NS:
        raise ProtocolError(f"duration {as_text(value)} is too large")
    return ns


def format_duration(ns: int) -> str:
    """1500000000 -> C{"PT1.5S"}: the shortest exact decimal, no exponent."""
    seconds, fraction = divmod(ns, NS_PER_SECOND)
    if not fraction:
        return f"PT{seconds}S"
    return f"PT{seconds}.{fraction:09d}".rstrip("0") + "S"


def _dumps(message: dict) -> str:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


def encode_server_message(type: str, session_id: str, seq: int, clientseq: int, parameters: dict) -> str:
    return _dumps({"version": VERSION, "type": type, "id": session_id, "seq": seq,
                   "clientseq": clientseq, "parameters": parameters})


def encode_client_message(type: str, session_id: str, seq: int, serverseq: int, position_ns: int,
                          parameters: dict) -> str:
    return _dumps({"version": VERSION, "type": type, "id": session_id, "seq": seq, "serverseq": serverseq,
                   "position": format_duration(position_ns), "parameters": parameters})


def decode_client_message(text: str) -> dict:
    """
    The JSON object of one client text message whose envelope is well
    formed, with its C{position} already parsed into nanoseconds.

    @raise ProtocolError: too large, not JSON, or a bad envelope. The type
        and its parameters are the caller's to check.
    """
    if len(text) > MAX_TEXT_CHARS:
        raise ProtocolError(f"Text message too large (>64K). Length: {len(text)}")
    try:
        message = json.loads(text)
    except (ValueError, RecursionError):
        raise ProtocolError("Text message not valid JSON") from None
    if not (
        isinstance(message, dict)
        and message.get("version") == VERSION
        and is_uuid(message.get("id"))
        and isinstance(message.get("type"), str)
        and is_sequence_number(message.get("seq"))
        and is_sequence_number(message.get("serverseq"))
        and isinstance(message.get("parameters"), dict)
    ):
        raise ProtocolError("Message not a well-formed client message "
                            "(version, id, type, seq, serverseq, parameters)")
    message["position"] = parse_duration(message.get("position"))
    return message
