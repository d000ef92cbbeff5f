# -*- test-case-name: tests.test_siprec_server,tests.test_siprec_sessions,tests.test_rtp_poller,tests.test_rtp_fast_path -*-
"""
RTP reception for recorded streams: one UDP socket per accepted m-line, on a
port from the configured range, each packet through a jitter buffer into the
call's leg as PCM.

Every socket gets a large receive buffer: a burst of packets larger than the
kernel's default buffer (about 200 kB) is lost before the reactor reads it.
RTCP, which may share the port (RFC 5761) or use the next one, is ignored.

A stream is decoded in any codec its answer allowed: when the sender changes
payload type, the receiver follows. Packets of a payload type nobody agreed
to are counted and logged (once per type and stream), never silently lost.
"""

from __future__ import annotations

import socket
import struct
from typing import Callable

from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import LoopingCall
from prometheus_client import Counter
from twisted.logger import Logger

from mgateway.ingress.siprec.rtp_metrics import RTP_METRICS
from mgateway.ingress.siprec.rtp_poller import RtpPoller
from mgateway.media.g711 import alaw_decode, ulaw_decode
from mgateway.media.g729 import G729Decoder, load_bcg729
from mgateway.media.jitter import JitterBuffer
from mgateway.media.rtp import RtpError, is_rtcp, parse_rtp
from mgateway.sip.errors import SIPError

log = Logger()

_G711 = {"PCMU": ulaw_decode, "PCMA": alaw_decode}
#: Every codec we decode samples at 8 kHz.
CLOCK_RATE = 8000
#: RFC 3389 comfort noise: expected between talk spurts, carries no speech.
COMFORT_NOISE_PT = 13
UNEXPECTED_PACKETS = Counter(
    "asapp_mg_rtp_unexpected_payload_packets",
    "RTP packets of a payload type their stream's SDP answer did not allow, dropped undecoded.",
)


def decodable_codecs() -> dict[str, int]:
    """The codecs we can offer to decode, by static payload type: G.729 only when bcg729 loads."""
    codecs = {"PCMU": 0, "PCMA": 8}
    if load_bcg729() is not None:
        codecs["G729"] = 18
    return codecs


def jitter_buffer(codec: str, payload_type: int) -> JitterBuffer:
    """A jitter buffer decoding C{codec} sent as C{payload_type}."""
    if codec in _G711:
        return JitterBuffer(payload_type, _G711[codec], octet_per_sample=True)
    decoder = G729Decoder()
    return JitterBuffer(payload_type, decoder.decode, conceal=decoder.conceal)


#: How long at most a quiet sender's silence is filled (L{RtpReceiver.quiet}):
#: enough for recognition to end the utterance before, not a whole silent hour.
QUIET_FILL_SECONDS = 10.0
#: How often every receiver is checked for a quiet sender.
QUIET_CHECK_SECONDS = 0.1
#: The fixed RTP header, from the sequence number on.
_SEQUENCE_TIMESTAMP_SSRC = struct.Struct("!HII")
#: First octet of a plain RTP packet: version 2, no padding, extension or CSRCs.
_PLAIN_FIRST_OCTET = 0x80
_PLAIN_HEADER_SIZE = 12
#: At most one log line a stream about shedding in this many seconds.
SHED_LOG_SECONDS = 10.0


class RtpReceiver(DatagramProtocol):
    """
    One recorded stream's socket. It drops what arrives until it knows its
    codec (L{use}) and where its audio goes (C{deliver}).

    @param clock: when packets arrive, for L{quiet}.
    @param quiet_after: seconds without a packet after which silence is
        filled as it passes; 0: never.
    @ivar deliver: takes each run of decoded PCM, in timeline order.
    @ivar on_hold: packets are dropped (the offer said nothing is sent now).
    @ivar datagrams: every datagram read from the socket, used or not.
    @ivar shed_packets: datagrams read and dropped undecoded because media
        fell behind (L{shed}).
    @ivar stream: (call guid, leg) once attached to a call, for /metrics.
    @ivar formats: the payload types the answer allowed, with their codecs.
    @ivar unexpected: packets of a payload type the answer did not allow
        (nor telephone-event or comfort noise), by payload type.
    """

    def __init__(self, clock, quiet_after: float = 0.0):
        self.clock = clock
        self.quiet_after = quiet_after
        self.heard: float | None = None
        self._filled_to = 0.0
        self.codec: str | None = None
        self.payload_type: int | None = None
        self.jitter: JitterBuffer | None = None
        self.deliver: Callable[[bytes], None] | None = None
        self.formats: dict[int, str] = {}
        self.telephone_event_pt: int | None = None
        self.unexpected: dict[int, int] = {}
        self.on_hold = False
        self.malformed = 0
        self.datagrams = 0
        self.poller: RtpPoller | None = None
        self.shed_packets = 0
        self._shed_unlogged = 0
        self._shed_logged_at: float | None = None
        self.stream: tuple[str, str] | None = None
        self._retired = dict.fromkeys(("lost", "late", "out_of_order"), 0)
        self.port = None

    def datagramReceived(self, data: bytes, addr) -> None:
        self.receive([data])

    def receive(self, datagrams: list[bytes]) -> None:
        """
        Datagrams read from the socket in one go, oldest first: the plain
        in-order packets of the codec in use go through the jitter buffer's
        fast path (L{JitterBuffer.follow}) and are decoded and delivered
        together; any other goes through the full parse, one by one.
        """
        self.datagrams += len(datagrams)
        jitter = self.jitter
        if self.on_hold or jitter is None or self.deliver is None:
            return
        payload_type = self.payload_type
        unpack = _SEQUENCE_TIMESTAMP_SSRC.unpack_from
        heard = False
        for data in datagrams:
            if (len(data) > _PLAIN_HEADER_SIZE and data[0] == _PLAIN_FIRST_OCTET
                    and data[1] & 0x7F == payload_type
                    and jitter.follow(*unpack(data, 2), data[_PLAIN_HEADER_SIZE:])):
                heard = True
                continue
            heard = self._parse_and_push(data) or heard
            jitter, payload_type = self.jitter, self.payload_type  # the codec may have changed
        if heard:
            self.heard = self.clock.seconds()
        pcm = jitter.take()
        if pcm:
            self.deliver(pcm)

    def _parse_and_push(self, data: bytes) -> bool:
        """One datagram the full way; whether it was RTP (RTCP and malformed ones are not)."""
        if is_rtcp(data):
            return False
        try:
            packet = parse_rtp(data)
        except RtpError:
            self.malformed += 1
            return False
        if packet.payload_type != self.payload_type:
            self._other_payload_type(packet.payload_type)
        pcm = self.jitter.push(packet)
        if pcm:
            self.deliver(pcm)
        return True

    def shed(self, count: int) -> None:
        """
        C{count} of the oldest datagrams waiting were dropped unread because
        media is falling behind: counted, and logged at most every
        L{SHED_LOG_SECONDS}. The jitter buffer sees the hole they leave as
        lost packets and fills their time with comfort noise.
        """
        self.datagrams += count
        self.shed_packets += count
        self._shed_unlogged += count
        now = self.clock.seconds()
        if self._shed_logged_at is None or now - self._shed_logged_at >= SHED_LOG_SECONDS:
            self._log_shed()
            self._shed_logged_at = now

    def _log_shed(self) -> None:
        guid, leg = self.stream or (None, None)
        log.warn("call {guid} leg {leg} (RTP port {port}): media is falling behind; shed the oldest "
                 "{count} packets ({total} in all on this stream)",
                 guid=guid, leg=leg, port=self._port_number(), count=self._shed_unlogged, total=self.shed_packets)
        self._shed_unlogged = 0

    def counts(self) -> dict[str, int]:
        """This stream's packets by outcome (L{rtp_metrics.OUTCOMES}), over every codec it used."""
        jitter = self.jitter
        return {
            "received": self.datagrams,
            "lost": self._retired["lost"] + (jitter.lost if jitter else 0),
            "late": self._retired["late"] + (jitter.late if jitter else 0),
            "out_of_order": self._retired["out_of_order"] + (jitter.reordered if jitter else 0),
            "shed": self.shed_packets,
        }

    def _new_jitter(self) -> None:
        """A fresh jitter buffer for the codec in use; the old one's counts kept."""
        old = self.jitter
        if old is not None:
            self._retired["lost"] += old.lost
            self._retired["late"] += old.late
            self._retired["out_of_order"] += old.reordered
        self.jitter = jitter_buffer(self.codec, self.payload_type)

    def quiet(self, now: float) -> None:
        """
        Called every L{QUIET_CHECK_SECONDS}: once the sender has been silent
        for C{quiet_after} seconds (silence suppression, as G.729 Annex B
        and many SBCs do, without comfort-noise packets), comfort noise for
        the time that has passed, so that the utterance spoken last ends now
        instead of when the sender speaks again (L{JitterBuffer.idle} says
        what becomes of the packets that follow).
        """
        if not self.quiet_after or self.heard is None or self.on_hold or self.jitter is None or self.deliver is None:
            return
        silent = now - self.heard
        if not self.quiet_after <= silent <= QUIET_FILL_SECONDS:
            return
        start = max(self.heard, self._filled_to)
        samples = int((now - start) * CLOCK_RATE)
        if samples <= 0:
            return
        self._filled_to = start + samples / CLOCK_RATE
        pcm = self.jitter.idle(samples)
        if pcm:
            self.deliver(pcm)

    def flush(self) -> None:
        """Deliver what the jitter buffer holds, giving up on any missing packets."""
        pcm = self.jitter.flush() if self.jitter is not None else b""
        if pcm and self.deliver is not None:
            self.deliver(pcm)

    def use(self, formats, telephone_event_pt: int | None = None) -> None:
        """
        Decode what the answer allowed: C{formats}, (payload type, codec)
        pairs, the first expected first. On a change (re-INVITE) of the
        codec in use, what is buffered goes out first.
        """
        self.formats = dict(formats)
        self.telephone_event_pt = telephone_event_pt
        if self.formats.get(self.payload_type) == self.codec and self.codec is not None:
            return
        self._switch(*next(iter(formats)))

    def _switch(self, payload_type: int, codec: str) -> None:
        self.flush()
        self.codec, self.payload_type = codec, payload_type
        self._new_jitter()

    def _other_payload_type(self, payload_type: int) -> None:
        """A packet not of the codec in use: another allowed codec is followed; an unknown one counted."""
        codec = self.formats.get(payload_type)
        if codec is not None:
            log.info("RTP port {port}: the sender switched to {codec} (payload type {pt})",
                     port=self._port_number(), codec=codec, pt=payload_type)
            self._switch(payload_type, codec)
        elif payload_type not in (self.telephone_event_pt, COMFORT_NOISE_PT):
            count = self.unexpected.get(payload_type, 0) + 1
            self.unexpected[payload_type] = count
            UNEXPECTED_PACKETS.inc()
            if count == 1:
                log.warn("RTP port {port}: packets of payload type {pt}, which the answer did not allow "
                         "(allowed: {allowed}), cannot be decoded; counted and dropped",
                         port=self._port_number(), pt=payload_type, allowed=self.formats)

    def _port_number(self) -> int | None:
        return self.port.getHost().port if self.port is not None else None

    def hold(self, on_hold: bool) -> None:
        """
        Pause or resume. On resume the stream starts a fresh timeline where it
        stands: the time on hold is not part of the recording.
        """
        if on_hold == self.on_hold:
            return
        self.flush()
        self.on_hold = on_hold
        if not on_hold and self.codec is not None:
            self._new_jitter()

    def close(self):
        """Release what is buffered, then stop listening; returns what C{stopListening} does."""
        self.flush()
        self.on_hold = True
        if self._shed_unlogged:
            self._log_shed()
        RTP_METRICS.retire(self)
        if self.poller is not None and self.port is not None:
            self.poller.remove(self)
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None


class RtpPorts:
    """
    Listens for RTP on even ports of C{[low, high]} (the odd one above each is
    left for RTCP), round robin so that a port just freed is not reused at once.
    The sockets are read by an L{RtpPoller} on C{reactor}, not as readers.
    """

    def __init__(self, reactor, interface: str, low: int, high: int, receive_buffer: int, clock=None,
                 quiet_after: float = 0.0):
        self.reactor = reactor
        self.quiet_after = quiet_after
        self.clock = clock or reactor
        self.interface = interface
        self.ports = list(range(low + low % 2, high + 1, 2))
        self.receive_buffer = receive_buffer
        self._next = 0
        self._receivers: set[RtpReceiver] = set()
        self._checking = LoopingCall(self._check_quiet)
        self._checking.clock = self.clock
        self.poller = RtpPoller(reactor)

    def active_streams(self) -> int:
        """RTP streams with a socket open on these ports."""
        return len(self.poller)

    def receiver(self) -> RtpReceiver:
        """A receiver for a new stream, checked for quiet senders until it closes."""
        return RtpReceiver(self.clock, self.quiet_after)

    def _check_quiet(self) -> None:
        if self.poller.lagging:
            # Packets may be waiting unread: the senders are not quiet, we are behind.
            return
        now = self.clock.seconds()
        for receiver in list(self._receivers):
            if receiver.port is None:
                self._receivers.discard(receiver)
                continue
            try:
                receiver.quiet(now)
            except Exception:  # one stream's failure must not stop the others' checks
                log.failure("filling the silence of RTP port {port} failed", port=receiver.port.getHost().port)

    def stop(self) -> None:
        """Stop checking for quiet senders and polling (the sockets are the receivers' own to close)."""
        if self._checking.running:
            self._checking.stop()
        self.poller.stop()

    def listen(self, receiver: RtpReceiver) -> int:
        """
        Bind C{receiver} to a free port; its number.

        @raise SIPError: 503 when every port of the range is taken.
        """
        for _ in range(len(self.ports)):
            number = self.ports[self._next]
            self._next = (self._next + 1) % len(self.ports)
            try:
                port = self.reactor.listenUDP(number, receiver, interface=self.interface)
            except CannotListenError:
                continue
            enlarge_receive_buffer(port, self.receive_buffer)
            receiver.port = port
            receiver.poller = self.poller
            self.poller.add(receiver)
            RTP_METRICS.add(receiver)
            self._receivers.add(receiver)
            if self.quiet_after and not self._checking.running:
                self._checking.start(QUIET_CHECK_SECONDS, now=False).addErrback(
                    lambda failure: log.failure("the quiet-sender check stopped", failure))
            return number
        raise SIPError(503, "Service Unavailable", "no free RTP port in the configured range")


def enlarge_receive_buffer(port, size: int) -> None:
    """Raise the SO_RCVBUF of a listening UDP port (the kernel caps it at twice net.core.rmem_max)."""
    try:
        port.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    except OSError as e:
        log.warn("cannot raise SO_RCVBUF of UDP port {port}: {error}", port=port.getHost().port, error=e)
