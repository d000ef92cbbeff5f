# -*- test-case-name: tests.test_kvs_contact -*-
"""
One Amazon Connect contact's audio out of a KVS stream's fragments (sans-I/O).

Connect writes both directions of a contact as two tracks, named
C{AUDIO_FROM_CUSTOMER} (what the customer says) and C{AUDIO_TO_CUSTOMER} (what
the customer hears: the agent), as 16-bit little-endian 8 kHz PCM whatever
the CodecID says; track numbers are not fixed, so tracks are known by name
only. One stream carries contact after contact: only fragments whose
C{ContactId} tag is ours are audio for us, and a fragment of another contact
after ours means our contact is over.

L{ContactMedia} also remembers where the stream stands (the last complete
fragment, its continuation token) and how much of a fragment it has handed
out, so that a reconnection that replays a fragment delivers none of it twice.
"""

from __future__ import annotations

import attrs

from mgateway.ingress.kvs.mkv import Block, ClusterStarted, FragmentEnded, Truncated

#: Track name -> the call leg it feeds (C{Track_audio/L16}: older Connect, customer audio).
TRACK_LEGS = {
    "AUDIO_FROM_CUSTOMER": "AUDIO_FROM_CUSTOMER",
    "Track_audio/L16": "AUDIO_FROM_CUSTOMER",
    "AUDIO_TO_CUSTOMER": "AUDIO_TO_CUSTOMER",
}
LEG_ROLES = {"AUDIO_FROM_CUSTOMER": "customer", "AUDIO_TO_CUSTOMER": "agent"}

CONTACT_ID = "ContactId"
MIME_TYPE = "MimeType"
FRAGMENT_NUMBER = "AWS_KINESISVIDEO_FRAGMENT_NUMBER"
CONTINUATION_TOKEN = "AWS_KINESISVIDEO_CONTINUATION_TOKEN"
MILLIS_BEHIND_NOW = "AWS_KINESISVIDEO_MILLIS_BEHIND_NOW"
ERROR_CODE = "AWS_KINESISVIDEO_ERROR_CODE"
ERROR_ID = "AWS_KINESISVIDEO_ERROR_ID"


def connect_roles(request, legs) -> dict:
    """The registry's role mapper for namespace C{amazonconnect}: fixed by track name."""
    return {leg: LEG_ROLES[leg] for leg in legs if leg in LEG_ROLES}


@attrs.frozen
class Audio:
    leg: str
    pcm: bytes = attrs.field(repr=lambda p: f"<{len(p)} bytes>")


@attrs.frozen
class FragmentDone:
    """A fragment of ours was delivered whole."""

    number: str | None
    millis_behind_now: int | None


@attrs.frozen
class StreamError:
    """KVS ended the response with error tags (or the media is not what Connect sends)."""

    code: str
    error_id: str | None


@attrs.frozen
class ContactEnded:
    """A fragment of another contact followed ours."""

    next_contact: str


def _is_l16_8k(mime: str) -> bool:
    parts = [p.strip().lower() for p in mime.split(";") if p.strip()]
    return bool(parts) and parts[0] == "audio/l16" and "rate=8000" in parts[1:]


def _not_after(number: str, last: str | None) -> bool:
    """Whether fragment C{number} was already delivered whole, C{last} being the latest."""
    if last is None:
        return False
    if number.isdigit() and last.isdigit():
        return int(number) <= int(last)
    return number == last


class ContactMedia:
    """Turns parser events into audio per leg for the contact C{contact_id}."""

    def __init__(self, contact_id: str):
        self.contact_id = contact_id
        #: The last complete fragment of ours, and where the stream stands for a resume.
        self.last_fragment: str | None = None
        self.continuation_token: str | None = None
        self.millis_behind_now: int | None = None
        self.ended = False
        self._seen_ours = False
        self._routes: dict[int, str] | None = None  #: track -> leg, None: not ours
        self._number: str | None = None
        self._delivered: dict[str, int] = {}  #: bytes handed out per leg of fragment C{_number}
        self._skip: dict[str, int] = {}

    def receive(self, events) -> list:
        out: list = []
        for event in events:
            if self.ended:
                break
            if isinstance(event, ClusterStarted):
                self._cluster(event, out)
            elif isinstance(event, Block):
                self._block(event, out)
            elif isinstance(event, FragmentEnded):
                self._fragment_ended(event, out)
            elif isinstance(event, Truncated):
                self._routes = None
        return out

    def _cluster(self, event: ClusterStarted, out: list) -> None:
        self._routes = None
        if self._error(event, out):
            return
        contact = event.tag(CONTACT_ID)
        if contact != self.contact_id:
            if contact is not None and self._seen_ours:
                self.ended = True
                out.append(ContactEnded(contact))
            return
        self._seen_ours = True
        mime = event.tag(MIME_TYPE)
        if mime is not None and not _is_l16_8k(mime):
            self.ended = True
            out.append(StreamError(f"unsupported media {mime!r}", None))
            return
        number = event.tag(FRAGMENT_NUMBER)
        if number is not None and _not_after(number, self.last_fragment):
            return
        if number is None or number != self._number:
            self._number = number
            self._delivered = {}
        self._skip = dict(self._delivered)
        self._routes = {
            track.number: TRACK_LEGS[track.name] for track in event.tracks if track.name in TRACK_LEGS
        }

    def _block(self, block: Block, out: list) -> None:
        leg = self._routes.get(block.track) if self._routes else None
        if leg is None:
            return
        pcm = block.payload
        skip = self._skip.get(leg, 0)
        if skip:
            self._skip[leg] = skip - min(skip, len(pcm))
            pcm = pcm[skip:]
        if pcm:
            self._delivered[leg] = self._delivered.get(leg, 0) + len(pcm)
            out.append(Audio(leg, pcm))

    def _fragment_ended(self, event: FragmentEnded, out: list) -> None:
        ours = self._routes is not None
        self._routes = None
        if self._error(event, out):
            return
        token = event.tag(CONTINUATION_TOKEN)
        if token is not None:
            self.continuation_token = token
        millis = event.tag(MILLIS_BEHIND_NOW)
        if millis is not None and millis.isdigit():
            self.millis_behind_now = int(millis)
        if ours:
            number = event.tag(FRAGMENT_NUMBER)
            self.last_fragment = number
            self._number, self._delivered = None, {}
            out.append(FragmentDone(number, self.millis_behind_now))

    def _error(self, event, out: list) -> bool:
        code = event.tag(ERROR_CODE)
        if code is None:
            return False
        out.append(StreamError(code, event.tag(ERROR_ID)))
        return True
