# -*- test-case-name: tests.test_audiohook_session,tests.test_direct_session,tests.test_twilio_session -*-
"""
What every ingress core emits the same way, and the one error family the
cores raise internally.

A core is fed with C{receive_*} methods and timers (C{get_timer()},
C{handle_timer(now)}); it never raises on what a peer sends. What happened
is read back with C{events()}, what to write with C{data_to_send()}. Audio
comes out as L{LegAudio}, in timeline order; a connection the core gives up
on comes out as L{Terminated}, carrying the close code.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class LegAudio:
    """
    16-bit little-endian 8 kHz PCM of one media leg (a Twilio track, an
    AudioHook channel), next on that leg's timeline. C{filled}: comfort
    noise the core put in a gap of the sender's timeline, counted apart from
    the audio received.
    """

    leg: str
    pcm: bytes
    filled: bool = False


@attrs.frozen
class Terminated:
    """The core gave up on the connection: close it with C{close_code}; C{reason} says why."""

    close_code: int
    reason: str


class IngressError(Exception):
    """
    The connection cannot go on. Raised inside a core and turned into a
    L{Terminated} event there; it never leaves the core.
    """

    def __init__(self, close_code: int, reason: str):
        super().__init__(reason)
        self.close_code = close_code
        self.reason = reason
