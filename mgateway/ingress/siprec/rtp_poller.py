# -*- test-case-name: tests.test_rtp_poller -*-
"""
Reading every RTP socket on a timer, in slices, so that media never holds up
signalling.

One socket per stream, each on the reactor as a reader, costs a wake-up, a
log context and two system calls (the datagram, then the empty read) for
every packet: about 50 µs a packet in all, so one core saturated at 400
streams, and past that SIP and REST waited behind the queued media.

Instead the sockets are taken off the reactor and polled: every
L{POLL_SECONDS} one C{epoll} call (with no wait) says which have data, and
each of those is read to empty and its packets handed over as one batch
(L{RtpReceiver.receive}), whose in-order G.711 run is decoded in one call.
The round runs in slices of at most L{SLICE_SECONDS}, each ending with a
return to the reactor, which serves SIP and HTTP before the next slice.

When media comes faster than the core can take it, rounds get longer and
the sockets fill up. After a round that took more than L{OVERLOAD_SECONDS}
(reactor time, other work between its slices included), a stream that has
more than L{MAX_BACKLOG_PACKETS} waiting has its oldest packets shed (read,
counted and dropped undecoded; see L{RtpReceiver.shed}), so the gateway
stays current, and reading a packet costs a fraction of handling it. A
sender that is merely fast (a burst after a network stall) loses nothing
while the gateway keeps up.
"""

from __future__ import annotations

import select
import time

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

log = Logger()

#: How often the sockets are read: the batch is one or two 20 ms packets a stream.
POLL_SECONDS = 0.02
#: The most reactor time one slice of a round takes before SIP and HTTP get their turn.
SLICE_SECONDS = 0.005
#: A round longer than this means media is falling behind: the next one sheds.
OVERLOAD_SECONDS = 0.1
#: Packets a stream may have waiting, when falling behind, before its oldest
#: are shed: 0.3 s of 20 ms packets.
MAX_BACKLOG_PACKETS = 15
#: Larger than any RTP datagram we accept (the SIP transport's own limit is 64 kB too).
MAX_DATAGRAM = 65536


class RtpPoller:
    """
    The receivers' sockets, polled on C{reactor}.

    @ivar rounds: polling rounds begun; C{slices}: reactor turns they took.
    @ivar skipped: ticks that came while the previous round was still going.
    @ivar overloaded: the last round took longer than C{overload_seconds}.
    @param timer: seconds, for slices and rounds (C{time.perf_counter}).
    """

    def __init__(self, reactor, poll_seconds: float = POLL_SECONDS, slice_seconds: float = SLICE_SECONDS,
                 overload_seconds: float = OVERLOAD_SECONDS, max_backlog: int = MAX_BACKLOG_PACKETS,
                 timer=time.perf_counter):
        self.reactor = reactor
        self.poll_seconds = poll_seconds
        self.slice_seconds = slice_seconds
        self.overload_seconds = overload_seconds
        self.max_backlog = max_backlog
        self.overloaded = False
        self._round_began = 0.0
        self._timer = timer
        self._epoll = select.epoll()
        self._receivers: dict[int, object] = {}
        self._ready: list[int] = []
        self._round_going = False
        self.rounds = self.slices = self.skipped = 0
        self._ticking = LoopingCall(self._tick)
        self._ticking.clock = reactor

    def __len__(self) -> int:
        return len(self._receivers)

    @property
    def lagging(self) -> bool:
        """Whether sockets may hold packets older than a poll: a round is going, or the last one overran."""
        return self._round_going or self.overloaded

    def add(self, receiver) -> None:
        """Poll C{receiver}'s socket (its C{port}, a listening UDP port) instead of the reactor reading it."""
        port = receiver.port
        port.stopReading()
        fd = port.fileno()
        self._epoll.register(fd, select.EPOLLIN)
        self._receivers[fd] = receiver
        if not self._ticking.running:
            self._ticking.start(self.poll_seconds, now=False).addErrback(
                lambda failure: log.failure("RTP polling stopped", failure))

    def remove(self, receiver) -> None:
        """Stop polling C{receiver}'s socket; call before it is closed."""
        fd = receiver.port.fileno()
        if self._receivers.get(fd) is receiver:
            del self._receivers[fd]
            self._epoll.unregister(fd)
        if not self._receivers and self._ticking.running:
            self._ticking.stop()

    def stop(self) -> None:
        if self._ticking.running:
            self._ticking.stop()

    def _tick(self) -> None:
        if self._round_going:
            self.skipped += 1
            return
        self._ready = [fd for fd, _ in self._epoll.poll(0)]
        if self._ready:
            self.rounds += 1
            self._round_going = True
            self._round_began = self._timer()
            self._slice()

    def _slice(self) -> None:
        """Read ready sockets until the slice's time is up; the rest after the reactor's next turn."""
        self.slices += 1
        deadline = self._timer() + self.slice_seconds
        ready = self._ready
        while ready:
            receiver = self._receivers.get(ready.pop())
            if receiver is not None:
                self._read(receiver)
            if ready and self._timer() > deadline:
                self.reactor.callLater(0, self._slice)
                return
        self._round_going = False
        self.overloaded = self._timer() - self._round_began > self.overload_seconds

    def _read(self, receiver) -> None:
        """Everything waiting on one socket, to its receiver; the oldest shed past the backlog."""
        batch = []
        receive = receiver.port.socket.recv
        try:
            while True:
                batch.append(receive(MAX_DATAGRAM))
        except BlockingIOError:
            pass
        except OSError as error:  # e.g. ICMP errors queued on the socket: nothing to read there
            log.debug("RTP port {port}: {error}", port=receiver.port.getHost().port, error=error)
        excess = len(batch) - self.max_backlog
        try:
            if excess > 0 and self.overloaded:
                receiver.shed(excess)
                del batch[:excess]
            if batch:
                receiver.receive(batch)
        except Exception:  # one stream's failure must not stop the others
            log.failure("RTP port {port}: handling {count} datagrams failed",
                        port=receiver.port.getHost().port, count=len(batch))
