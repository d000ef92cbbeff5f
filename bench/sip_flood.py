"""
A flood of malformed SIPREC INVITEs through the SIP UDP path on one core:
how many are handled per second, where the OPTIONS pings read among them
are answered, and how much memory is left once their transactions' timers
have run out.

    .venv/bin/python bench/sip_flood.py [--invites 20500]
"""

from __future__ import annotations

import argparse
import random
import re
import time
from pathlib import Path

from twisted.internet.task import Clock

from mgateway.calls.registry import CallRegistry
from mgateway.calls.roles import media_line_roles
from mgateway.memory import resident_bytes
from mgateway.ingress.siprec.rtp_listener import RtpPorts, decodable_codecs
from mgateway.ingress.siprec.srs import RecordingServer
from mgateway.ingress.siprec.transport_udp import SipDatagramProtocol
from mgateway.sip.transaction import T1

INVITE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "siprec" / "drachtio_intrado_viper_invite.txt"
PING_EVERY = 100
PING = (b"OPTIONS sip:srs@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-ping-%d\r\n"
        b"From: <sip:sbc@127.0.0.1>;tag=1\r\nTo: <sip:srs@127.0.0.1>\r\nCall-ID: ping-%d\r\n"
        b"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")


def flood(count: int) -> list[bytes]:
    """The INVITE with a few random bytes of its head changed, and an SDP port that is not a number."""
    invite = re.sub(rb"\r?\n", b"\r\n", INVITE.read_bytes()).replace(b"m=audio ", b"m=audio x", 1)
    split = invite.index(b"\r\n\r\n")
    rng = random.Random(20500)
    out = []
    for index in range(count):
        data = bytearray(invite.replace(b"Call-ID: ", b"Call-ID: %d-" % index, 1))
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(split)] = rng.randrange(256)
        out.append(bytes(data))
    return out


class Socket:
    def __init__(self):
        self.sent = []

    def write(self, data, address):
        self.sent.append(data[:12])

    def getHost(self):
        return type("Host", (), {"host": "127.0.0.1", "port": 5070})()


def rss_mb() -> float:
    return resident_bytes() / 2**20


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--invites", type=int, default=20_500)
    invites = flood(parser.parse_args().invites)
    clock = Clock()
    registry = CallRegistry(None, [], clock, {"siprec": media_line_roles()})
    from twisted.internet import reactor
    server = RecordingServer(clock, registry, RtpPorts(reactor, "127.0.0.1", 47000, 47999, 1 << 20, clock=clock),
                             media_address="127.0.0.1", codecs=decodable_codecs(), media_timeout=0)
    protocol = SipDatagramProtocol(server.uas, "127.0.0.1", clock)
    protocol.transport = socket = Socket()
    before = rss_mb()
    started = time.perf_counter()
    pings_at = []
    for index, invite in enumerate(invites):
        protocol.datagramReceived(invite, ("127.0.0.1", 5060))
        if index % PING_EVERY == 0:
            sent = len(socket.sent)
            protocol.datagramReceived(PING % (index, index), ("127.0.0.1", 5060))
            assert socket.sent[sent:] == [b"SIP/2.0 200 "], "answered at once"
            pings_at.append(len(protocol.intake))
        if index % 1000 == 999:
            clock.advance(0)  # a reactor turn: what waits is handled
    while len(protocol.intake):
        clock.advance(0)
    elapsed = time.perf_counter() - started
    peak, live = rss_mb(), len(server.uas.transactions)
    clock.advance(64 * T1 + 1)  # every timer runs out
    for _ in range(400):
        clock.advance(T1)
    print(f"{len(invites)} malformed INVITEs: {len(invites) / elapsed:,.0f}/s on one core, "
          f"{1e6 * elapsed / len(invites):.0f} us each; dropped (backlog full): {protocol.intake.dropped}")
    print(f"OPTIONS pings: {len(pings_at)}, each answered 200 as it was read, "
          f"ahead of up to {max(pings_at)} INVITEs waiting")
    print(f"transactions live after the flood: {live}, after their timers: {len(server.uas.transactions)}")
    print(f"RSS: {before:.0f} MB before, {peak:.0f} MB after the flood, {rss_mb():.0f} MB once the timers ran out")
    server.close()


if __name__ == "__main__":
    main()
