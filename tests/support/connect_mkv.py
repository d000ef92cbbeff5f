"""
Connect-shaped KVS fragments built from PCM: the element order, the size-VINT
widths and the cadence (16 blocks of 1024 bytes = 1.024 s per track per
fragment, tracks interleaved) of a real Amazon Connect fragment dump, as in
C{tests/fixtures/kvs/synthetic_connect_layout} (see its PROVENANCE.md), with
the tags GetMedia adds (fragment number, timestamps, millis behind now,
continuation token).
"""

from __future__ import annotations

import attrs

FIRST_FRAGMENT = 91343852333181551234925834077012571618243808844
BLOCK_BYTES = 1024
BLOCKS_PER_TRACK = 16
FRAGMENT_PCM = BLOCK_BYTES * BLOCKS_PER_TRACK
INSTANCE_ID = "6b1f5e1c-2d7a-4b6e-9c1e-3f0a8d5e7b21"
MIME = "audio/L16;rate=8000;channels=1;"


def _size(n: int, width: int | None) -> bytes:
    width = width or next(w for w in range(1, 9) if n < (1 << (7 * w)) - 1)
    return ((1 << (7 * width)) | n).to_bytes(width, "big")


def element(element_id: int, payload: bytes, width: int | None = None) -> bytes:
    return element_id.to_bytes((element_id.bit_length() + 7) // 8, "big") + _size(len(payload), width) + payload


def uint(element_id: int, value: int, length: int = 1) -> bytes:
    """An unsigned integer in C{length} bytes (KVS writes UIDs, scales and timecodes in 8)."""
    return element(element_id, value.to_bytes(length, "big"))


def text(element_id: int, value: str, width: int | None = None) -> bytes:
    return element(element_id, value.encode(), width)


def tags(pairs, width: int) -> bytes:
    simple = b"".join(element(0x67C8, text(0x45A3, k, width) + text(0x4487, v, width), width)
                      for k, v in pairs)
    return element(0x1254C367, element(0x7373, simple, width), width)


EBML_HEADER = element(0x1A45DFA3, uint(0x4286, 1) + uint(0x42F7, 1) + uint(0x42F2, 4) + uint(0x42F3, 8)
                      + text(0x4282, "matroska") + uint(0x4287, 2) + uint(0x4285, 2))
SEGMENT_UNKNOWN = bytes.fromhex("18538067") + b"\x01" + b"\xff" * 7
CLUSTER_UNKNOWN = bytes.fromhex("1F43B675") + b"\xff"


def _info() -> bytes:
    return element(0x1549A966, element(0x73A4, bytes(range(16))) + uint(0x2AD7B1, 1000000, 8)
                   + text(0x7BA9, "Kinesis Video SDK") + text(0x4D80, "Kinesis Video SDK 1.1.0 JNI 2.0")
                   + text(0x5741, "Kinesis Video SDK 1.1.0 JNI 2.0"), 2)


def _tracks() -> bytes:
    def entry(number, uid, name):
        return element(0xAE, uint(0xD7, number) + uint(0x73C5, uid, 8) + uint(0x83, 2) + text(0x536E, name)
                       + text(0x86, "A_AAC") + element(0x63A2, b"\x11\x90"), 4)
    return element(0x1654AE6B, entry(1, 2, "AUDIO_TO_CUSTOMER") + entry(2, 1, "AUDIO_FROM_CUSTOMER"), 4)


@attrs.frozen
class Fragment:
    number: str
    data: bytes
    customer_pcm: bytes
    agent_pcm: bytes


def fragment(contact_id: str, number: int, producer_ms: int, customer: bytes, agent: bytes,
             millis_behind_now: int = 0, server_ms: int | None = None,
             instance_id: str = INSTANCE_ID) -> Fragment:
    """One fragment: up to 16 KiB of each track (AUDIO_FROM_CUSTOMER = customer)."""
    connect = [("ContactId", contact_id), ("InstanceId", instance_id), ("MimeType", MIME),
               ("AUDIO_TO_CUSTOMER", "2"), ("AUDIO_FROM_CUSTOMER", "1")]
    connect_tags = b"".join(tags([pair], 8) for pair in connect)
    stamp = lambda ms: f"{ms // 1000}.{ms % 1000:03d}"
    blocks = b""
    for i in range(BLOCKS_PER_TRACK):
        for track, pcm in ((1, agent), (2, customer)):
            payload = pcm[i * BLOCK_BYTES : (i + 1) * BLOCK_BYTES]
            if payload:
                header = bytes([0x80 | track]) + (i * 64).to_bytes(2, "big", signed=True) + b"\x80"
                blocks += element(0xA3, header + payload, 8)
    cluster = CLUSTER_UNKNOWN + uint(0xE7, producer_ms, 8) + uint(0xA7, 0) + blocks
    data = (EBML_HEADER + SEGMENT_UNKNOWN + _info() + _tracks() + connect_tags
            + tags([("AWS_KINESISVIDEO_FRAGMENT_NUMBER", str(number)),
                    ("AWS_KINESISVIDEO_SERVER_TIMESTAMP", stamp(server_ms or producer_ms + 170)),
                    ("AWS_KINESISVIDEO_PRODUCER_TIMESTAMP", stamp(producer_ms))], 4)
            + cluster + connect_tags
            + tags([("AWS_KINESISVIDEO_MILLIS_BEHIND_NOW", str(millis_behind_now)),
                    ("AWS_KINESISVIDEO_CONTINUATION_TOKEN", str(number))], 4))
    return Fragment(str(number), data, customer[:FRAGMENT_PCM], agent[:FRAGMENT_PCM])


def error_fragment(code: str, error_id: int) -> bytes:
    """What GetMedia sends when it fails mid-stream: a Segment holding only error tags."""
    return (EBML_HEADER + SEGMENT_UNKNOWN
            + tags([("AWS_KINESISVIDEO_ERROR_CODE", code), ("AWS_KINESISVIDEO_ERROR_ID", str(error_id))], 4))


def contact_fragments(contact_id: str, customer: bytes, agent: bytes, first: int = FIRST_FRAGMENT,
                      start_ms: int = 1782912654536) -> list[Fragment]:
    """The whole of two tracks as consecutive fragments of one contact."""
    count = -(-max(len(customer), len(agent)) // FRAGMENT_PCM)
    return [
        fragment(contact_id, first + i * 1000, start_ms + i * 1024,
                 customer[i * FRAGMENT_PCM : (i + 1) * FRAGMENT_PCM],
                 agent[i * FRAGMENT_PCM : (i + 1) * FRAGMENT_PCM],
                 millis_behind_now=(count - i) * 1024)
        for i in range(count)
    ]
