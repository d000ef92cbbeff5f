# -*- test-case-name: tests.test_sip_uas -*-
"""
The seam between the SIP cores and the transports: a channel is where a
request came from and where everything sent back to that peer goes (a UDP
peer address, or one TCP/TLS connection).
"""

from __future__ import annotations

from zope.interface import Attribute, Interface


class ISipChannel(Interface):
    transport = Attribute("The Via transport name: C{UDP}, C{TCP} or C{TLS}.")
    reliable = Attribute("Whether the transport delivers (no retransmissions needed).")
    local_host = Attribute("Our address as the peer reaches it, for Via and Contact.")
    local_port = Attribute("Our port as the peer reaches it.")

    def send(data: bytes) -> None:
        """Send one whole serialised message to the peer."""
