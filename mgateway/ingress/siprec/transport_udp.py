# -*- test-case-name: tests.test_sip_transports,tests.test_sip_flood -*-
"""
SIP over UDP: one socket for every peer. Responses go where RFC 3261 §18.2.2
and RFC 3581 say: to the address the request came from, at the port it came
from when the top Via asks for C{rport}, else at the Via's port.
"""

from __future__ import annotations

import attrs
from prometheus_client import Counter
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from zope.interface import implementer

from mgateway.sip.channel import ISipChannel
from mgateway.sip.errors import SIPError
from mgateway.sip.intake import Intake, is_urgent
from mgateway.sip.grammar import Via
from mgateway.sip.message import Request, parse_message

log = Logger()

DROPPED = Counter("asapp_mg_sip_dropped_messages", "SIP datagrams dropped unread: too many were waiting.")

DEFAULT_SIP_PORT = 5060


@implementer(ISipChannel)
@attrs.frozen
class UdpChannel:
    """A peer address reached through our UDP socket."""

    udp: object
    address: tuple[str, int]
    local_host: str
    local_port: int
    transport: str = "UDP"
    reliable: bool = False

    def send(self, data: bytes) -> None:
        self.udp.write(data, self.address)


def format_via(via: Via) -> str:
    host = via.host + (f":{via.port}" if via.port is not None else "")
    params = "".join(f";{name}" if value is None else f";{name}={value}" for name, value in via.params)
    return f"SIP/2.0/{via.transport} {host}{params}"


def stamp_via(request: Request, host: str, port: int) -> tuple[Request, tuple[str, int]]:
    """
    The request with its top Via stamped with C{received} and C{rport}
    (RFC 3581 §4), and where its responses go.
    """
    vias = request.vias
    top = vias[0]
    params = [(name, value) for name, value in top.params if name.lower() not in ("received", "rport")]
    wants_rport = top.has_param("rport")
    if top.host != host or wants_rport:
        params.append(("received", host))
    if wants_rport:
        params.append(("rport", str(port)))
    stamped = attrs.evolve(top, params=tuple(params))
    headers = request.headers.without("Via")
    lines = [("Via", format_via(stamped))] + [("Via", format_via(via)) for via in vias[1:]]
    headers = type(headers)(lines + list(headers))
    reply_port = port if wants_rport else (top.port or DEFAULT_SIP_PORT)
    return attrs.evolve(request, headers=headers), (host, reply_port)


class SipDatagramProtocol(DatagramProtocol):
    """
    @param uas: the L{mgateway.sip.uas.UserAgentServer} every message goes to.
    @param advertised_host: our address for Via and Contact when the socket is
        bound to every interface.
    @param clock: where the handling of what was read is scheduled, between
        reads (see L{mgateway.sip.intake}).
    """

    def __init__(self, uas, advertised_host: str, clock=None, intake: Intake | None = None):
        self.uas = uas
        self.advertised_host = advertised_host
        self.clock = clock if clock is not None else uas.clock
        self.intake = intake if intake is not None else Intake()
        self._draining = None

    def _channel(self, address: tuple[str, int]) -> UdpChannel:
        local = self.transport.getHost()
        host = local.host if local.host not in ("0.0.0.0", "::") else self.advertised_host
        return UdpChannel(self.transport, address, host, local.port)

    def datagramReceived(self, data: bytes, addr) -> None:
        if not data.strip(b"\r\n\0 "):
            return  # a keep-alive
        if is_urgent(data):
            self._handle(data, addr)
            return
        if not self.intake.push(data, addr):
            DROPPED.inc()
            if self.intake.dropped % 1000 == 1:
                log.warn("SIP over UDP: {dropped} messages dropped so far, {waiting} waiting to be handled",
                         dropped=self.intake.dropped, waiting=len(self.intake))
            return
        if self._draining is None:
            self._draining = self.clock.callLater(0, self._drain)

    def _drain(self) -> None:
        """Handle one batch of what waits, then let the socket be read again."""
        self._draining = None
        for data, addr in self.intake.batch():
            self._handle(data, addr)
        if len(self.intake):
            self._draining = self.clock.callLater(0, self._drain)

    def stopProtocol(self) -> None:
        if self._draining is not None and self._draining.active():
            self._draining.cancel()
        self._draining = None

    def _handle(self, data: bytes, addr) -> None:
        try:
            message = parse_message(data)
            if isinstance(message, Request):
                message, addr = stamp_via(message, addr[0], addr[1])
        except SIPError as error:
            self.uas.malformed(data, error, self._channel(addr))
            return
        self.uas.receive(message, self._channel(addr))
