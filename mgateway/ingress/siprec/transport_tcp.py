# -*- test-case-name: tests.test_sip_transports -*-
"""
SIP over TCP and TLS (RFC 3261 §18.3): messages framed by Content-Length,
responses written back on the connection the request came on.
"""

from __future__ import annotations

import attrs
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from zope.interface import implementer

from mgateway.sip.channel import ISipChannel
from mgateway.sip.errors import SIPError
from mgateway.sip.framing import Malformed, StreamFramer

log = Logger()


@implementer(ISipChannel)
@attrs.frozen
class StreamChannel:
    """One connection, as the SIP cores see it."""

    connection: Protocol
    transport: str
    local_host: str
    local_port: int
    reliable: bool = True

    def send(self, data: bytes) -> None:
        if self.connection.connected:
            self.connection.transport.write(data)


class SipStreamProtocol(Protocol):
    def connectionMade(self):
        self.framer = StreamFramer(self.factory.max_message_bytes)
        local = self.transport.getHost()
        name = "TLS" if ISSLTransport.providedBy(self.transport) else "TCP"
        self.channel = StreamChannel(self, name, local.host, local.port)

    def dataReceived(self, data: bytes) -> None:
        try:
            messages = self.framer.feed(data)
        except SIPError:
            return  # already failed: the connection is closing
        pongs = self.framer.data_to_send()
        if pongs:
            self.transport.write(pongs)
        # The requests completed before bytes that cannot be framed still get their responses.
        for message in messages:
            if isinstance(message, Malformed):
                self.factory.uas.malformed(message.data, message.error, self.channel)
            else:
                self.factory.uas.receive(message, self.channel)
        if self.framer.failure is not None:
            log.warn("SIP connection from {peer} closed: {error}", peer=self.transport.getPeer(),
                     error=str(self.framer.failure))
            self.transport.loseConnection()


class SipStreamFactory(Factory):
    protocol = SipStreamProtocol

    def __init__(self, uas, max_message_bytes: int = 65536):
        self.uas = uas
        self.max_message_bytes = max_message_bytes
