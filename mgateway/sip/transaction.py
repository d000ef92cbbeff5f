# -*- test-case-name: tests.test_sip_uas -*-
"""
SIP server transactions (RFC 3261 §17.2, with RFC 6026's Accepted state).

The transaction layer sits between a transport and the server's core: every
request goes through L{ServerTransactions.receive}, which says whether it is
new (for the core) or a retransmission (absorbed here, the last response sent
again). Every response goes out through L{ServerTransactions.respond}, which
keeps it for those retransmissions and runs the timers: over an unreliable
transport a non-2xx final response to INVITE is retransmitted (Timer G,
doubling from T1 to T2) until the ACK comes or Timer H gives up. Retransmitting
a 2xx to INVITE is the dialog's job, not the transaction's (RFC 3261
§13.3.1.4).

Each request arrives on a L{mgateway.sip.channel.ISipChannel}: where it came
from and where its responses go.
"""

from __future__ import annotations

import enum

import attrs
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from mgateway.sip.message import Request, Response, serialize

log = Logger()

#: RFC 3261 §17.1.1.1 defaults, in seconds.
T1 = 0.5
T2 = 4.0
T4 = 5.0
#: The RFC 3261 branch prefix; branches without it come from RFC 2543 peers.
MAGIC_COOKIE = "z9hG4bK"


def transaction_key(request: Request) -> tuple:
    """
    What identifies a request's server transaction (RFC 3261 §17.2.3): the top
    Via's branch and sent-by, and the method, ACK counting as INVITE. For an
    RFC 2543 peer (no magic cookie) the dialog identifiers stand in for the branch.
    """
    via = request.vias[0]
    method = "INVITE" if request.method == "ACK" else request.method
    if via.branch and via.branch.startswith(MAGIC_COOKIE):
        return (via.branch, via.host.lower(), via.port, method)
    return (request.call_id, request.from_address.tag, request.cseq.number, via.host.lower(), via.port, method)


class State(enum.Enum):
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    ACCEPTED = "accepted"


class ServerTransaction:
    """
    One server transaction: its request, its last response, its timers.

    @ivar final: whether a final response was sent.
    """

    def __init__(self, key: tuple, request: Request, channel):
        self.key = key
        self.request = request
        self.channel = channel
        self.state = State.PROCEEDING if request.method == "INVITE" else State.TRYING
        self.last: bytes | None = None
        self.final = False
        self.timers: list[IDelayedCall] = []

    @property
    def is_invite(self) -> bool:
        return self.request.method == "INVITE"

    def cancel_timers(self) -> None:
        for timer in self.timers:
            if timer.active():
                timer.cancel()
        self.timers = []


class ServerTransactions:
    """Every live server transaction, keyed by L{transaction_key}."""

    def __init__(self, clock: IReactorTime, *, t1: float = T1, t2: float = T2, t4: float = T4):
        self.clock = clock
        self.t1, self.t2, self.t4 = t1, t2, t4
        self._transactions: dict[tuple, ServerTransaction] = {}

    def __len__(self) -> int:
        return len(self._transactions)

    def receive(self, request: Request, channel) -> bool:
        """
        Take one request: true when it is new and the core must handle it
        (ACKs to 2xx included), false when it was absorbed here.
        """
        key = transaction_key(request)
        transaction = self._transactions.get(key)
        if request.method == "ACK":
            if transaction is not None and transaction.state is State.COMPLETED:
                self._confirm(transaction)
                return False
            # An ACK for a non-2xx response that was already confirmed is a
            # retransmission; any other is the ACK to a 2xx: the dialog's.
            return transaction is None or transaction.state is not State.CONFIRMED
        if transaction is None:
            self._transactions[key] = ServerTransaction(key, request, channel)
            return True
        if transaction.last is not None and transaction.state is not State.ACCEPTED:
            transaction.channel.send(transaction.last)
        return False

    def find(self, request: Request) -> ServerTransaction | None:
        return self._transactions.get(transaction_key(request))

    def invite_cancelled_by(self, cancel: Request) -> ServerTransaction | None:
        """The INVITE transaction a CANCEL names (RFC 3261 §9.2): same key, method INVITE."""
        key = transaction_key(cancel)
        return self._transactions.get(key[:-1] + ("INVITE",))

    def respond(self, request: Request, response: Response) -> None:
        """Send C{response} to C{request} within its transaction."""
        transaction = self._transactions.get(transaction_key(request))
        if transaction is None:
            log.warn("no transaction for {method} {call_id}: response {status} dropped",
                     method=request.method, call_id=request.call_id, status=response.status)
            return
        if transaction.final:
            log.warn("{method} {call_id} already has a final response; {status} dropped",
                     method=request.method, call_id=request.call_id, status=response.status)
            return
        data = serialize(response)
        transaction.last = data
        transaction.channel.send(data)
        if response.status < 200:
            if not transaction.is_invite:
                transaction.state = State.PROCEEDING
            return
        transaction.final = True
        # Only its identity is needed from now on: the body (2-5 kB of SDP and
        # metadata per SIPREC INVITE) need not wait for the timers.
        transaction.request = attrs.evolve(transaction.request, body=b"")
        if not transaction.is_invite:
            transaction.state = State.COMPLETED
            self._later(transaction, 0 if transaction.channel.reliable else 64 * self.t1, self._forget, transaction)
        elif response.status < 300:
            # RFC 6026: retransmitted INVITEs are absorbed (the dialog resends
            # the 2xx) until Timer L.
            transaction.state = State.ACCEPTED
            self._later(transaction, 64 * self.t1, self._forget, transaction)
        else:
            transaction.state = State.COMPLETED
            if not transaction.channel.reliable:
                self._later(transaction, self.t1, self._retransmit, transaction, self.t1)
            self._later(transaction, 64 * self.t1, self._timed_out, transaction)

    def _later(self, transaction: ServerTransaction, delay: float, f, *args) -> None:
        transaction.timers.append(self.clock.callLater(delay, f, *args))

    def _retransmit(self, transaction: ServerTransaction, interval: float) -> None:
        """Timer G."""
        if transaction.state is not State.COMPLETED:
            return
        transaction.channel.send(transaction.last)
        interval = min(2 * interval, self.t2)
        self._later(transaction, interval, self._retransmit, transaction, interval)

    def _timed_out(self, transaction: ServerTransaction) -> None:
        """Timer H: the ACK never came."""
        log.warn("no ACK for the final response to INVITE {call_id}", call_id=transaction.request.call_id)
        self._forget(transaction)

    def _confirm(self, transaction: ServerTransaction) -> None:
        """The ACK came: absorb its retransmissions for Timer I, then end."""
        transaction.cancel_timers()
        transaction.state = State.CONFIRMED
        self._later(transaction, 0 if transaction.channel.reliable else self.t4, self._forget, transaction)

    def _forget(self, transaction: ServerTransaction) -> None:
        transaction.cancel_timers()
        if self._transactions.get(transaction.key) is transaction:
            del self._transactions[transaction.key]

    def close(self) -> None:
        """Stop every timer (the server is shutting down)."""
        for transaction in list(self._transactions.values()):
            transaction.cancel_timers()
        self._transactions.clear()
