# -*- test-case-name: tests.test_audiohook_session -*-
"""
What an AudioHook session tells its transport, beside each channel's
L{mgateway.ingress.events.LegAudio}: the open, pauses and gaps the client
reports, its errors, and how the session ends.
"""

from __future__ import annotations

from typing import Mapping

import attrs


@attrs.frozen
class Participant:
    id: str
    ani: str
    ani_name: str
    dnis: str


@attrs.frozen
class Media:
    format: str
    channels: tuple[str, ...]
    rate: int


# Events.
@attrs.frozen
class Opened:
    """A real call's session is open; C{opened} is queued."""

    session_id: str
    organization_id: str
    conversation_id: str
    participant: Participant
    media: Media
    language: str | None
    custom_config: Mapping


@attrs.frozen
class Probed:
    """
    Genesys's connection probe (null conversation id) got its C{opened}. No
    call exists: audio in a probe is counted but yields no L{LegAudio}.
    """

    session_id: str
    organization_id: str


@attrs.frozen
class Paused:
    position_ns: int


@attrs.frozen
class Resumed:
    """Audio resumes; C{discarded_ns} of it from C{start_ns} were dropped."""

    start_ns: int
    discarded_ns: int


@attrs.frozen
class Discarded:
    start_ns: int
    duration_ns: int


@attrs.frozen
class Updated:
    """The conversation's language changed."""

    language: str


@attrs.frozen
class Error:
    """The client reported an error (it normally closes right after)."""

    code: int
    message: str
    retry_after_ns: int | None


@attrs.frozen
class Closed:
    """C{closed} is queued; the client closes the socket next."""

    reason: str | None


@attrs.frozen
class Disconnected:
    """A C{disconnect} is queued; the client should answer with C{close}."""

    reason: str
    info: str | None


@attrs.frozen
class Declined:
    """
    The C{open} was answered with C{disconnect} (reason C{error}) instead of
    C{opened}, as C{info} says: another session streams its conversation.
    """

    info: str


@attrs.frozen
class TimedOut:
    """The client did not close its socket within the grace period: drop it."""

    state: str
