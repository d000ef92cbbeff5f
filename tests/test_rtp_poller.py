"""
RTP sockets read by the poller, with real sockets on loopback: everything
queued on a socket is read and decoded in one wake-up; a round gives the
reactor back between slices; past the backlog the oldest packets are shed
and counted; the counters are on /metrics per stream while it lasts and in
the totals for good.
"""

import socket

import pytest
from prometheus_client import REGISTRY, generate_latest
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.logger import capturedLogs

from mgateway.ingress.siprec.rtp_listener import RtpPorts
from mgateway.ingress.siprec.rtp_poller import POLL_SECONDS, RtpPoller
from mgateway.media.g711 import ulaw_decode, ulaw_encode
from mgateway.media.rtp import build_rtp
from mgateway.media.noise import comfort_noise

FRAME = 160


def payload(i: int) -> bytes:
    # Speech-level noise of its own per packet (the texture at another offset).
    return ulaw_encode(comfort_noise(FRAME, -20, start=FRAME * i))


def packets(first: int, count: int, ssrc: int = 0x5EED) -> list[bytes]:
    return [build_rtp(0, i, i * FRAME, ssrc, payload(i)) for i in range(first, first + count)]


class Stream:
    """One receiver on a real socket, its poller on a deterministic clock."""

    def __init__(self, ports: RtpPorts):
        self.receiver = ports.receiver()
        self.port = ports.listen(self.receiver)
        self.batches: list[bytes] = []
        self.receiver.deliver = self.batches.append
        self.receiver.use([(0, "PCMU")])

    def send(self, datagrams: list[bytes]) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
            for datagram in datagrams:
                out.sendto(datagram, ("127.0.0.1", self.port))


@pytest.fixture
def polled():
    """RtpPorts whose poller runs on a Clock: nothing is read until the test advances it."""
    clock = Clock()
    ports = RtpPorts(reactor, "127.0.0.1", 47000, 47999, 1 << 20)
    ports.poller.stop()
    ports.poller = RtpPoller(clock)
    streams = []

    def stream() -> Stream:
        streams.append(Stream(ports))
        return streams[-1]

    yield clock, ports, stream
    for made in streams:
        made.receiver.close()
    ports.stop()


def test_a_burst_queued_on_a_socket_is_read_and_decoded_in_one_wake_up(polled):
    clock, ports, stream = polled
    one = stream()
    one.send(packets(0, 10))
    clock.advance(POLL_SECONDS)
    one.batches.clear()
    one.send(packets(10, 60))  # a fast sender: more than the backlog, but the gateway keeps up
    clock.advance(POLL_SECONDS)
    assert one.batches == [ulaw_decode(b"".join(payload(i) for i in range(10, 70)))]
    assert one.receiver.datagrams == 70 and one.receiver.shed_packets == 0
    assert ports.poller.rounds == 2


def test_nothing_is_read_between_polls_and_the_reactor_does_not_read_the_sockets(polled):
    clock, _, stream = polled
    one = stream()
    assert one.receiver.port not in reactor.getReaders()
    one.send(packets(0, 5))
    clock.advance(POLL_SECONDS / 2)
    assert one.receiver.datagrams == 0
    clock.advance(POLL_SECONDS / 2)
    assert one.receiver.datagrams == 5


def test_a_round_that_takes_too_long_marks_media_as_falling_behind(polled):
    clock, ports, stream = polled
    one = stream()
    seconds = iter([0.0, 0.0, 0.05])  # round start, slice deadline, round end
    ports.poller._timer = lambda: next(seconds)
    one.send(packets(0, 3))
    clock.advance(POLL_SECONDS)
    assert not ports.poller.overloaded
    seconds = iter([1.0, 1.0, 1.0 + 2 * ports.poller.overload_seconds])
    one.send(packets(3, 3))
    clock.advance(POLL_SECONDS)
    assert ports.poller.overloaded


def test_a_round_past_its_slice_lets_other_work_of_the_reactor_run_before_going_on(polled):
    clock, ports, stream = polled
    streams = [stream() for _ in range(4)]
    events = []

    def read(index, batch):
        if not events:  # signalling that arrives while the first socket is read (a SIP request, say)
            clock.callLater(0, events.append, "signalling")
        events.append((index, len(batch)))

    for index, one in enumerate(streams):
        one.receiver.receive = lambda batch, index=index: read(index, batch)
        one.send(packets(0, 6))
    # Each read takes a whole slice on this timer: one socket per reactor turn.
    ticks = iter(range(0, 10_000, 10))
    ports.poller._timer = lambda: next(ticks) * ports.poller.slice_seconds
    clock.advance(POLL_SECONDS)
    assert events[1] == "signalling", "it ran right after the first slice, before the other sockets were read"
    assert sorted(event for event in events if event != "signalling") == [(i, 6) for i in range(4)]
    assert ports.poller.slices == 4 and ports.poller.rounds == 1


def falling_behind(poller) -> None:
    """As after a round that took longer than overload_seconds: media is falling behind."""
    poller.overloaded = True


def test_falling_behind_the_oldest_packets_past_the_backlog_are_shed_and_counted(polled):
    clock, ports, stream = polled
    ports.poller.max_backlog = 25
    one = stream()
    one.receiver.stream = ("guid-shed", "0")
    falling_behind(ports.poller)
    one.send(packets(0, 40))
    with capturedLogs() as events:
        clock.advance(POLL_SECONDS)
    one.receiver.flush()
    assert one.receiver.shed_packets == 15 and one.receiver.datagrams == 40
    (logged,) = [e for e in events if e.get("count") == 15]
    assert (logged["guid"], logged["leg"], logged["total"]) == ("guid-shed", "0", 15)
    # What is kept is the newest: the stream's audio begins with packet 15.
    assert b"".join(one.batches) == ulaw_decode(b"".join(payload(i) for i in range(15, 40)))


def value(name: str, **labels) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_counters_are_on_metrics_per_stream_while_it_lasts_and_in_the_totals(polled):
    clock, ports, stream = polled
    ports.poller.max_backlog = 25
    before = {o: value("asapp_mg_rtp_packets_total", outcome=o) or 0 for o in ("received", "shed", "lost",
                                                                                "out_of_order", "late")}
    one = stream()
    one.receiver.stream = ("guid-metrics", "1")
    sent = packets(0, 40)
    one.send(sent[:30] + [sent[31], sent[30]] + sent[32:])  # 30 and 31 swapped; 0-14 shed
    falling_behind(ports.poller)
    clock.advance(POLL_SECONDS)
    one.send(packets(45, 10))  # 40-44 missing: given up on as these fill the depth
    clock.advance(POLL_SECONDS)
    one.send(packets(42, 1))  # too late
    clock.advance(POLL_SECONDS)
    one.receiver.flush()
    labels = {"guid": "guid-metrics", "leg": "1"}
    assert value("asapp_mg_rtp_stream_packets_total", **labels, outcome="received") == 51
    assert value("asapp_mg_rtp_stream_packets_total", **labels, outcome="shed") == 15
    assert value("asapp_mg_rtp_stream_packets_total", **labels, outcome="out_of_order") == 1
    assert value("asapp_mg_rtp_stream_packets_total", **labels, outcome="lost") == 5
    assert value("asapp_mg_rtp_stream_packets_total", **labels, outcome="late") == 1
    assert b'asapp_mg_rtp_stream_packets_total{guid="guid-metrics"' in generate_latest(REGISTRY)
    assert ports.active_streams() == 1
    one.receiver.close()
    assert value("asapp_mg_rtp_stream_packets_total", **labels, outcome="received") is None
    assert ports.active_streams() == 0
    assert value("asapp_mg_rtp_packets_total", outcome="received") == before["received"] + 51
    assert value("asapp_mg_rtp_packets_total", outcome="shed") == before["shed"] + 15
    assert value("asapp_mg_rtp_packets_total", outcome="lost") == before["lost"] + 5
    assert value("asapp_mg_rtp_packets_total", outcome="out_of_order") == before["out_of_order"] + 1
    assert value("asapp_mg_rtp_packets_total", outcome="late") == before["late"] + 1


def test_while_media_is_behind_no_sender_is_taken_for_quiet():
    """Packets waiting unread are not silence: the quiet-sender fill waits until the poller has caught up."""
    poll_clock, quiet_clock = Clock(), Clock()
    ports = RtpPorts(reactor, "127.0.0.1", 47000, 47999, 1 << 20, clock=quiet_clock, quiet_after=0.2)
    ports.poller.stop()
    ports.poller = RtpPoller(poll_clock)
    one = Stream(ports)
    try:
        one.send(packets(0, 10))
        poll_clock.advance(POLL_SECONDS)
        heard = sum(map(len, one.batches))
        assert heard
        falling_behind(ports.poller)
        quiet_clock.advance(0.5)
        assert sum(map(len, one.batches)) == heard, "no comfort noise while behind"
        ports.poller.overloaded = False
        quiet_clock.advance(0.1)
        assert sum(map(len, one.batches)) > heard, "a quiet sender's silence is filled once caught up"
    finally:
        one.receiver.close()
        ports.stop()
