# -*- test-case-name: tests.test_siprec_api,tests.test_lifecycle -*-
"""
The SIPREC server's sockets: SIP over UDP (a socket of its own: UDP ports are
not stream endpoints), SIP over TCP/TLS from endpoint strings, and the RTP
port range. The gateway opens them once it can serve and closes them first
when it stops.
"""

from __future__ import annotations

from twisted.internet.defer import DeferredList, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger

from mgateway.ingress.siprec.rtp_listener import RtpPorts, decodable_codecs, enlarge_receive_buffer
from mgateway.ingress.siprec.srs import RecordingServer
from mgateway.ingress.siprec.transport_tcp import SipStreamFactory
from mgateway.ingress.siprec.transport_udp import SipDatagramProtocol

log = Logger()


class SiprecListeners:
    """
    @param config: the frozen C{[sip]} section (L{mgateway.config.SipConfig}),
        whose values it reads.
    @ivar udp: the SIP UDP port once listening.
    @ivar streams: the TCP/TLS listening ports.
    """

    def __init__(self, config, registry, reactor, admission=None):
        self.config = config
        self.reactor = reactor
        ports = RtpPorts(reactor, config.rtp_interface, config.rtp_port_min, config.rtp_port_max,
                         config.rtp_receive_buffer_bytes, quiet_after=config.fill_silence_after_ms / 1000)
        self.server = RecordingServer(
            reactor, registry, ports,
            media_address=config.rtp_address,
            codecs={name: pt for name, pt in decodable_codecs().items() if name in config.codecs},
            accept_plain=config.accept_plain_invites,
            call_id_sources=config.call_id_sources,
            call_id_header=config.call_id_header,
            media_timeout=config.media_timeout_seconds,
            replace_silent_after=config.replace_silent_after_seconds,
            admission=admission,
        )
        self.udp = None
        self.streams = []

    async def listen(self) -> None:
        config = self.config
        protocol = SipDatagramProtocol(self.server.uas, config.rtp_address, self.reactor)
        self.udp = self.reactor.listenUDP(config.udp_port, protocol, interface=config.udp_interface,
                                          maxPacketSize=config.max_message_bytes)
        # One socket takes the SIP of every call: a burst of INVITEs (an SBC
        # failing over) must not overflow the kernel's default buffer.
        enlarge_receive_buffer(self.udp, config.rtp_receive_buffer_bytes)
        log.info("SIP listening on udp:{host}:{port}", host=config.udp_interface, port=self.udp.getHost().port)
        factory = SipStreamFactory(self.server.uas, config.max_message_bytes)
        for description in config.listen:
            self.streams.append(await serverFromString(self.reactor, description).listen(factory))
            log.info("SIP listening on {description}", description=description)
        log.info("SIPREC offers codecs {codecs}; RTP on {interface} ports {low}-{high}",
                 codecs=", ".join(self.server.codecs), interface=config.rtp_interface,
                 low=config.rtp_port_min, high=config.rtp_port_max)

    async def stop(self) -> None:
        """Stop accepting, end every recording with a BYE, and wait until each call is flushed."""
        ports = ([self.udp] if self.udp is not None else []) + self.streams
        self.udp, self.streams = None, []
        ending = self.server.close()
        await DeferredList([maybeDeferred(port.stopListening) for port in ports], consumeErrors=True)
        await ending
