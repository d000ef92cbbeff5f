# -*- test-case-name: tests.test_sip_flood -*-
"""
What a SIP socket has read but not yet handled, sans I/O: under a flood of
INVITEs (an SBC failing over, or a storm of malformed ones) the cheap
requests that keep peers' view of us alive are handled first.

OPTIONS is what SBCs ping a recording server with; if it goes unanswered for
a few seconds the SBC marks the server down. So an OPTIONS is handled the
moment it is read, and every other message waits its turn in a bounded
queue, drained a batch per reactor turn (between reads). What does not fit
is dropped and counted: SIP over UDP is retransmitted by its sender.
"""

from __future__ import annotations

from collections import deque

#: Messages waiting, at most; at 2-5 kB per SIPREC INVITE, a few megabytes.
DEFAULT_BACKLOG = 1000
#: Messages handled per turn before the socket is read again.
DEFAULT_BATCH = 32

_URGENT = (b"OPTIONS ",)


def is_urgent(data: bytes) -> bool:
    """Whether C{data} is a request to answer before anything waiting (an OPTIONS ping)."""
    return data.lstrip(b"\r\n").startswith(_URGENT)


class Intake:
    """
    The messages read and not yet handled, in arrival order.

    @ivar dropped: messages refused because the backlog was full.
    """

    def __init__(self, backlog: int = DEFAULT_BACKLOG, batch: int = DEFAULT_BATCH):
        self._backlog = backlog
        self._batch = batch
        self._waiting: deque[tuple[bytes, object]] = deque()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._waiting)

    def push(self, data: bytes, source: object) -> bool:
        """Queue one message; false when the backlog is full and it was dropped."""
        if len(self._waiting) >= self._backlog:
            self.dropped += 1
            return False
        self._waiting.append((data, source))
        return True

    def batch(self) -> list[tuple[bytes, object]]:
        """The next messages to handle this turn, oldest first."""
        count = min(self._batch, len(self._waiting))
        return [self._waiting.popleft() for _ in range(count)]
