"""
A recording client for the SIPREC tests: sipp (Debian sip-tester) runs the
signalling from the scenarios in tests/fixtures/sipp (and plays the first
recorded stream from a capture where the scenario says so), and a small RTP
sender plays what sipp cannot (its C{play_pcap_audio} only reaches the first
m-line).
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import time
import uuid
from pathlib import Path

from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol, ProcessProtocol

from mgateway.media.g711 import ulaw_encode
from mgateway.media.rtp import build_rtp
from tests.support.audio import chunks, pace

SCENARIOS = Path(__file__).resolve().parent.parent / "fixtures" / "sipp"
SIPP = shutil.which("sipp") or "/usr/bin/sipp"


def free_sip_port() -> int:
    """
    A loopback port free for UDP and TCP alike: sipp binds its main socket
    on it with whichever transport the test runs (one free for UDP only may
    hold a TCP connection, and sipp then fails with 'Address already in use').
    """
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port


def new_ucid() -> tuple[str, str]:
    """A random Avaya UCID: (User-to-User hex, the 20-digit guid it decodes to)."""
    node, sequence, seconds = random.randrange(1, 65536), random.randrange(65536), int(time.time())
    hex_form = "00FA08" + f"{node:04X}{sequence:04X}{seconds:08X}"
    return hex_form, f"{node:05d}{sequence:05d}{seconds:010d}"


class Sipp(ProcessProtocol):
    """One sipp run: its output, and C{ended} firing with its exit code."""

    def __init__(self):
        self.output = ""
        self.ended = Deferred()

    def outReceived(self, data):
        self.output += data.decode("utf-8", "replace")

    errReceived = outReceived

    def processEnded(self, reason):
        self.ended.callback(reason.value.exitCode)


def run_sipp(reactor, scenario: str, target: str, *args: str, transport: str = "u1",
             port: int | None = None, call_id: str | None = None, workdir: Path | None = None) -> Sipp:
    """
    Run one call of C{scenario} against C{target} (C{host:port}); sipp gives
    up after 60 s. C{-trace_err} logs land in C{workdir}.
    """
    protocol = Sipp()
    argv = [SIPP, "-sf", str(SCENARIOS / scenario), "-m", "1", "-t", transport, "-i", "127.0.0.1",
            "-p", str(port or free_sip_port()), "-timeout", "60", "-timeout_error", "-nostdin",
            "-trace_err"]
    if call_id:
        argv += ["-cid_str", call_id]
    argv += [*args, target]
    reactor.spawnProcess(protocol, SIPP, argv, env=dict(os.environ), path=str(workdir) if workdir else None)
    return protocol


def go_on(reactor, sipp_port: int, call_id: str) -> None:
    """Send the INFO a scenario waits for before it goes on (sipp matches it by Call-ID)."""
    listening = reactor.listenUDP(0, DatagramProtocol(), interface="127.0.0.1")
    listening.write(_info(sipp_port, call_id), ("127.0.0.1", sipp_port))
    listening.stopListening()


def _info(sipp_port: int, call_id: str) -> bytes:
    # A new branch and CSeq each time: sipp takes a repeated message for a retransmission.
    return (
        f"INFO sip:src@127.0.0.1:{sipp_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-go-{uuid.uuid4().hex}\r\n"
        "From: <sip:test@127.0.0.1>;tag=test\r\n"
        "To: <sip:src@127.0.0.1>;tag=sipp\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {random.randrange(1, 1 << 31)} INFO\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


class RtpSender(DatagramProtocol):
    """Sends G.711 mu-law RTP from one local socket, 20 ms per packet."""

    def __init__(self):
        self.ssrc = random.getrandbits(32)
        self.sequence = random.getrandbits(16)
        self.timestamp = random.getrandbits(32)

    def packets(self, pcm: bytes) -> list[bytes]:
        out = []
        for chunk in chunks(pcm):
            out.append(build_rtp(0, self.sequence, self.timestamp, self.ssrc, ulaw_encode(chunk)))
            self.sequence = (self.sequence + 1) & 0xFFFF
            self.timestamp = (self.timestamp + len(chunk) // 2) & 0xFFFFFFFF
        return out


def send_streams(reactor, streams: list[tuple[int, bytes]]):
    """
    Play each C{(port, pcm)} to 127.0.0.1:port at the same time, much faster
    than real time (see L{pace}); fires when all is sent.
    """
    senders = []
    interleaved = []
    for port, pcm in streams:
        sender = RtpSender()
        listening = reactor.listenUDP(0, sender, interface="127.0.0.1")
        senders.append(listening)
        for i, packet in enumerate(sender.packets(pcm)):
            interleaved.append((i, port, sender, packet))
    interleaved.sort(key=lambda item: item[0])
    done = pace(reactor, interleaved, lambda item: item[2].transport.write(item[3], ("127.0.0.1", item[1])))

    def close(result):
        for listening in senders:
            listening.stopListening()
        return result

    return done.addBoth(close)
