# -*- test-case-name: tests.test_kvs_mkv -*-
"""
An incremental EBML/Matroska reader for Kinesis Video Streams GetMedia bodies.

A GetMedia response is a run of KVS fragments, each a complete Matroska
document (EBML header, then a Segment, usually of unknown size) with tags
before and after one Cluster (also usually of unknown size). L{MkvParser}
takes the bytes as they arrive, in any pieces, and returns the same events for
any chunking: L{ClusterStarted} (the fragment's tracks and the tags seen so
far, so audio can be routed before the fragment ends), each L{Block}, and
L{FragmentEnded} with every tag of the fragment once its Segment is over.

It never looks for magic bytes (PCM may contain them): an unknown-size master
ends only when an element arrives that cannot be its child (the rule of RFC
9559 §6.2). Elements it does not need are skipped by their size without
being buffered; the ones it reads are capped (L{MkvParser.max_element}), as
is the audio held for one fragment; anything that breaks framing is a
L{MkvError}, after which the parser refuses more input.
"""

from __future__ import annotations

import attrs

DEFAULT_MAX_ELEMENT = 1 << 20

EBML = 0x1A45DFA3
SEGMENT = 0x18538067
INFO = 0x1549A966
TRACKS = 0x1654AE6B
TRACK_ENTRY = 0xAE
TAGS = 0x1254C367
TAG = 0x7373
SIMPLE_TAG = 0x67C8
CLUSTER = 0x1F43B675
BLOCK_GROUP = 0xA0

TRACK_NUMBER = 0xD7
TRACK_UID = 0x73C5
NAME = 0x536E
CODEC_ID = 0x86
TAG_NAME = 0x45A3
TAG_STRING = 0x4487
TIMECODE = 0xE7
SIMPLE_BLOCK = 0xA3
BLOCK = 0xA1

#: Elements valid as a child of any master (Void, CRC-32).
_GLOBAL = frozenset({0xEC, 0xBF})

#: The children of each master that can be of unknown size, per the Matroska schema.
_CHILDREN = {
    SEGMENT: frozenset({0x114D9B74, INFO, TRACKS, CLUSTER, 0x1C53BB6B, 0x1941A469, 0x1043A770, TAGS}),
    CLUSTER: frozenset({TIMECODE, 0xA7, 0xAB, SIMPLE_BLOCK, BLOCK_GROUP, 0x5854, 0xAF}),
}
_TOP_LEVEL = frozenset({EBML, SEGMENT})

#: Masters entered (their children read); every other master is skipped whole.
_MASTERS = frozenset({SEGMENT, TRACKS, TRACK_ENTRY, TAGS, TAG, SIMPLE_TAG, CLUSTER, BLOCK_GROUP})
#: Leaves read into memory; every other leaf is skipped by its size.
_LEAVES = frozenset({TRACK_NUMBER, TRACK_UID, NAME, CODEC_ID, TAG_NAME, TAG_STRING, TIMECODE,
                     SIMPLE_BLOCK, BLOCK})
_UINTS = frozenset({TRACK_NUMBER, TRACK_UID, TIMECODE})


class MkvError(Exception):
    """The stream cannot be framed as EBML/Matroska any more."""


@attrs.frozen
class Track:
    number: int
    uid: int | None
    name: str
    codec_id: str


@attrs.frozen
class ClusterStarted:
    """A fragment's Cluster begins: its tracks and the tags given before it."""

    tracks: tuple[Track, ...]
    tags: tuple[tuple[str, str], ...]

    def tag(self, name: str) -> str | None:
        return _last(self.tags, name)


@attrs.frozen
class Block:
    """A SimpleBlock or Block: the frame data of one track (lacing is not undone)."""

    track: int
    timecode: int  #: the Cluster's timecode plus the block's relative one
    flags: int
    payload: bytes = attrs.field(repr=lambda p: f"<{len(p)} bytes>")


@attrs.frozen
class FragmentEnded:
    """A Segment is over: every tag it held, before and after its Cluster, in order."""

    tracks: tuple[Track, ...]
    tags: tuple[tuple[str, str], ...]
    blocks: int
    block_bytes: int

    def tag(self, name: str) -> str | None:
        return _last(self.tags, name)


@attrs.frozen
class Truncated:
    """The input ended inside an element: the fragment being read is incomplete."""

    pending_bytes: int


Event = ClusterStarted | Block | FragmentEnded | Truncated


def _last(tags, name: str) -> str | None:
    for key, value in reversed(tags):
        if key == name:
            return value
    return None


def _vint_length(first: int) -> int:
    for length in range(1, 9):
        if first & (0x80 >> (length - 1)):
            return length
    raise MkvError("invalid variable-length integer (a 0x00 first byte)")


def _text(data: bytes) -> str:
    """A string element: UTF-8, NUL padding stripped (KVS producers pad)."""
    return data.split(b"\x00", 1)[0].decode("utf-8", "replace")


@attrs.define
class _Master:
    id: int
    end: int | None  #: absolute offset where it ends, None for unknown size


class _Fragment:
    """What one Segment has shown so far."""

    def __init__(self) -> None:
        self.tracks: list[Track] = []
        self.track: dict[int, object] = {}
        self.tags: list[tuple[str, str]] = []
        self.tag_name: str | None = None
        self.cluster_timecode = 0
        self.blocks = 0
        self.block_bytes = 0


class MkvParser:
    """
    Feed it a GetMedia body as it arrives; L{close} at its end.

    @param max_element: the largest element read into memory (a block, a string).
    @param max_fragment_bytes: the most block data one fragment may carry.
    """

    def __init__(self, max_element: int = DEFAULT_MAX_ELEMENT, max_fragment_bytes: int = 64 << 20):
        self.max_element = max_element
        self.max_fragment_bytes = max_fragment_bytes
        self._buffer = bytearray()
        self._offset = 0  #: absolute offset of the buffer's first byte
        self._skip = 0  #: bytes still to drop of an element being skipped
        self._stack: list[_Master] = []
        self._fragment: _Fragment | None = None
        self._failure: MkvError | None = None
        self._closed = False

    def feed(self, data: bytes) -> list[Event]:
        if self._failure is not None:
            raise self._failure
        if self._closed:
            raise MkvError("fed after close")
        events: list[Event] = []
        try:
            self._drop(data)
            while self._step(events):
                pass
        except MkvError as failure:
            self._failure = failure
            raise
        return events

    def close(self) -> list[Event]:
        """The input is over: end what is open; a partial element is L{Truncated}."""
        if self._failure is not None or self._closed:
            return []
        self._closed = True
        events: list[Event] = []
        pending = len(self._buffer) + self._skip
        incomplete = pending or any(m.end is not None and m.end > self._offset for m in self._stack)
        if incomplete:
            events.append(Truncated(pending))
            self._stack.clear()
            self._fragment = None
        else:
            self._close_until(lambda: False, events)
        return events

    # -- framing --------------------------------------------------------------

    def _drop(self, data: bytes) -> None:
        """Consume C{data}, first into any element being skipped."""
        if self._skip:
            used = min(self._skip, len(data))
            self._skip -= used
            self._offset += used
            data = data[used:]
        self._buffer += data

    def _step(self, events: list[Event]) -> bool:
        """Read one element header (and its body, if a leaf we want); false when more input is needed."""
        if self._skip:
            return False
        self._close_finished(events)
        header = self._header()
        if header is None:
            return False
        element_id, size, header_length = header
        self._close_unknown_parents(element_id, events)
        parent = self._stack[-1] if self._stack else None
        end = None if size is None else self._offset + header_length + size
        if parent is not None and parent.end is not None and (end is None or end > parent.end):
            raise MkvError(f"element 0x{element_id:X} overruns its parent 0x{parent.id:X}")
        if element_id in _MASTERS or (element_id == EBML and size is None):
            self._consume(header_length)
            self._open(element_id, end, events)
            return True
        if size is None:
            raise MkvError(f"element 0x{element_id:X} of unknown size is not a master")
        if element_id in _LEAVES and self._fragment is not None:
            if size > self.max_element:
                raise MkvError(f"element 0x{element_id:X} of {size} bytes, limit {self.max_element}")
            if len(self._buffer) < header_length + size:
                return False
            body = bytes(self._buffer[header_length : header_length + size])
            self._consume(header_length + size)
            self._leaf(element_id, body, events)
            return True
        if self._stack and element_id == EBML:
            raise MkvError("an EBML header inside a Segment of known size")
        if not self._stack and element_id != EBML:
            raise MkvError(f"element 0x{element_id:X} outside a Segment")
        self._consume(header_length)
        self._skip_bytes(size)
        return True

    def _header(self) -> tuple[int, int | None, int] | None:
        buffer = self._buffer
        if not buffer:
            return None
        id_length = _vint_length(buffer[0])
        if id_length > 4:
            raise MkvError(f"element ID of {id_length} bytes")
        if len(buffer) < id_length + 1:
            return None
        size_length = _vint_length(buffer[id_length])
        total = id_length + size_length
        if len(buffer) < total:
            return None
        element_id = int.from_bytes(buffer[:id_length], "big")
        raw = int.from_bytes(buffer[id_length:total], "big") & ((1 << (7 * size_length)) - 1)
        size = None if raw == (1 << (7 * size_length)) - 1 else raw
        return element_id, size, total

    def _consume(self, count: int) -> None:
        del self._buffer[:count]
        self._offset += count

    def _skip_bytes(self, count: int) -> None:
        used = min(count, len(self._buffer))
        self._consume(used)
        self._skip = count - used

    # -- structure ------------------------------------------------------------

    def _open(self, element_id: int, end: int | None, events: list[Event]) -> None:
        if element_id == SEGMENT:
            if self._stack:
                raise MkvError("a Segment inside another element")
            self._fragment = _Fragment()
        elif element_id == EBML:
            raise MkvError("an EBML header of unknown size")
        elif not self._stack:
            raise MkvError(f"element 0x{element_id:X} outside a Segment")
        fragment = self._fragment
        if element_id == TRACK_ENTRY:
            fragment.track = {}
        elif element_id == SIMPLE_TAG:
            fragment.tag_name = None
        elif element_id == CLUSTER:
            fragment.cluster_timecode = 0
            events.append(ClusterStarted(tuple(fragment.tracks), tuple(fragment.tags)))
        self._stack.append(_Master(element_id, end))

    def _close_finished(self, events: list[Event]) -> None:
        while self._stack and self._stack[-1].end is not None and self._stack[-1].end <= self._offset:
            self._end(self._stack.pop(), events)

    def _close_unknown_parents(self, element_id: int, events: list[Event]) -> None:
        def is_child() -> bool:
            top = self._stack[-1]
            if top.end is not None or element_id in _GLOBAL:
                return True
            children = _CHILDREN.get(top.id)
            if children is None:
                return True
            return element_id in children or element_id not in _KNOWN

        self._close_until(is_child, events)

    def _close_until(self, stop, events: list[Event]) -> None:
        while self._stack and not stop():
            self._end(self._stack.pop(), events)

    def _end(self, master: _Master, events: list[Event]) -> None:
        fragment = self._fragment
        if master.id == TRACK_ENTRY:
            track = fragment.track
            if "number" in track:
                fragment.tracks.append(Track(track["number"], track.get("uid"),
                                             track.get("name", ""), track.get("codec", "")))
        elif master.id == SEGMENT:
            events.append(FragmentEnded(tuple(fragment.tracks), tuple(fragment.tags),
                                        fragment.blocks, fragment.block_bytes))
            self._fragment = None

    def _leaf(self, element_id: int, body: bytes, events: list[Event]) -> None:
        fragment = self._fragment
        parent = self._stack[-1].id
        if element_id in _UINTS:
            if len(body) > 8:
                raise MkvError(f"unsigned integer 0x{element_id:X} of {len(body)} bytes")
            value = int.from_bytes(body, "big")
            if element_id == TIMECODE and parent == CLUSTER:
                fragment.cluster_timecode = value
            elif parent == TRACK_ENTRY:
                fragment.track["number" if element_id == TRACK_NUMBER else "uid"] = value
        elif element_id in (SIMPLE_BLOCK, BLOCK):
            if parent in (CLUSTER, BLOCK_GROUP):
                events.append(self._block(body, fragment))
        elif parent == TRACK_ENTRY and element_id in (NAME, CODEC_ID):
            fragment.track["name" if element_id == NAME else "codec"] = _text(body)
        elif parent == SIMPLE_TAG and element_id == TAG_NAME:
            fragment.tag_name = _text(body)
        elif parent == SIMPLE_TAG and element_id == TAG_STRING and fragment.tag_name is not None:
            fragment.tags.append((fragment.tag_name, _text(body)))

    def _block(self, body: bytes, fragment: _Fragment) -> Block:
        if not body:
            raise MkvError("empty block")
        length = _vint_length(body[0])
        if len(body) < length + 3:
            raise MkvError("block shorter than its header")
        track = int.from_bytes(body[:length], "big") & ((1 << (7 * length)) - 1)
        relative = int.from_bytes(body[length : length + 2], "big", signed=True)
        payload = body[length + 3 :]
        fragment.blocks += 1
        fragment.block_bytes += len(payload)
        if fragment.block_bytes > self.max_fragment_bytes:
            raise MkvError(f"fragment carries over {self.max_fragment_bytes} bytes of blocks")
        return Block(track, fragment.cluster_timecode + relative, body[length + 2], payload)


#: Every ID whose parent the schema fixes and this reader knows.
_KNOWN = frozenset().union(*_CHILDREN.values(), _TOP_LEVEL)
