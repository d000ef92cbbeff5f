"""
A flood of malformed INVITEs must not silence the server: OPTIONS pings are
answered first, what waits is bounded, and over real sockets every ping of
an SBC (sipp) is answered while the flood goes on.
"""

from __future__ import annotations

import random

import pytest_twisted
from prometheus_client import REGISTRY
from twisted.internet import reactor
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock

from mgateway.ingress.siprec.transport_udp import SipDatagramProtocol
from mgateway.sip.intake import Intake
from mgateway.sip.message import parse_message
from mgateway.sip.uas import UserAgentServer
from tests.support.audio import until
from tests.support.siprec_peer import run_sipp
from tests.support.siprec_samples import FULL_INVITE, sample
from tests.test_sip_transports import options
from tests.test_sip_uas import Handler
from tests.test_siprec_api import sip_target


def malformed_invites(count: int, seed: int = 4475) -> list[bytes]:
    """
    Mutations of a real SIPREC INVITE (Intrado's): bytes of the head flipped,
    cut or repeated, headers dropped, and an SDP no server can take (a port
    that is not a number).
    """
    rng = random.Random(seed)
    invite = sample(FULL_INVITE)
    head, _, body = invite.partition(b"\r\n\r\n")
    body = body.replace(b"m=audio ", b"m=audio x", 1)
    out = []
    for index in range(count):
        mutated = bytearray(head.replace(b"Call-ID: ", b"Call-ID: flood-%d-" % index, 1))
        for _ in range(rng.randrange(1, 4)):
            kind, at = rng.randrange(4), rng.randrange(len(mutated))
            if kind == 0:
                mutated[at] = rng.randrange(256)
            elif kind == 1:
                del mutated[at:at + rng.randrange(1, 40)]
            elif kind == 2:
                mutated[at:at] = mutated[at:at + rng.randrange(1, 200)] * rng.randrange(1, 5)
            else:
                lines = bytes(mutated).split(b"\r\n")
                del lines[rng.randrange(1, len(lines))]
                mutated = bytearray(b"\r\n".join(lines))
        out.append(bytes(mutated) + b"\r\n\r\n" + body)
    return out


class FakeUdp:
    """The socket under a L{SipDatagramProtocol}: what it writes, in order."""

    def __init__(self):
        self.written = []

    def write(self, data, address):
        self.written.append(data)

    def getHost(self):
        return type("Host", (), {"host": "127.0.0.1", "port": 5070})()


def protocol_on(clock, intake=None):
    handler = Handler()
    uas = UserAgentServer(clock, handler)
    handler.server = uas
    protocol = SipDatagramProtocol(uas, "127.0.0.1", clock, intake)
    protocol.transport = FakeUdp()
    return protocol


def test_options_read_during_a_flood_are_answered_before_the_invites_waiting():
    clock = Clock()
    protocol = protocol_on(clock)
    flood = malformed_invites(300)
    for index, invite in enumerate(flood):
        protocol.datagramReceived(invite, ("127.0.0.1", 5060))
        if index % 30 == 0:
            ping = options(f"SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-ping-{index}")
            protocol.datagramReceived(ping.replace(b"ka-1", b"ping-%d" % index), ("127.0.0.1", 5060))
    answered = [parse_message(data) for data in protocol.transport.written]
    assert [m.cseq.method for m in answered] == ["OPTIONS"] * 10, "every ping at once, nothing else yet"
    while len(protocol.intake):
        clock.advance(0)
    assert len(protocol.transport.written) > 10, "then the flood's answers (400s)"


def test_what_waits_is_bounded_and_what_does_not_fit_is_counted():
    protocol = protocol_on(Clock(), Intake(backlog=100, batch=10))
    for invite in malformed_invites(150):
        protocol.datagramReceived(invite, ("127.0.0.1", 5060))
    assert (len(protocol.intake), protocol.intake.dropped) == (100, 50)
    assert REGISTRY.get_sample_value("asapp_mg_sip_dropped_messages_total") >= 50


def test_a_head_of_many_folded_lines_parses_in_one_pass():
    folded = b"X-Folded: start\r\n" + b" more\r\n" * 20000
    data = options("SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK-f").replace(b"Max-Forwards", folded + b"Max-Forwards")
    assert parse_message(data).headers.get("X-Folded") == "start" + " more" * 20000


class Flooder(DatagramProtocol):
    def datagramReceived(self, data, addr):
        pass


@pytest_twisted.ensureDeferred
async def test_every_options_ping_of_an_sbc_is_answered_during_a_flood_of_malformed_invites(gateway, tmp_path):
    target = gateway.service.siprec.udp.getHost().port
    flooder = Flooder()
    port = reactor.listenUDP(0, flooder, interface="127.0.0.1")
    pings = run_sipp(reactor, "options.xml", sip_target(gateway), "-m", "20", "-r", "10", workdir=tmp_path)
    flood = malformed_invites(3000)
    try:
        for start in range(0, len(flood), 100):
            for invite in flood[start:start + 100]:
                flooder.transport.write(invite, ("127.0.0.1", target))
            await until(reactor, lambda: True)  # one reactor turn between bursts
        assert await pings.ended == 0, pings.output
        await until(reactor, lambda: len(gateway.service.siprec.udp.protocol.intake) == 0)
    finally:
        port.stopListening()
        # A mutation that loses the SDP part leaves a delayed offer, answered: end those.
        uas = gateway.service.siprec.server.uas
        for dialog in [d for d in uas.dialogs.values() if d.call_id.startswith("flood-")]:
            uas.hang_up(dialog, "test over")
