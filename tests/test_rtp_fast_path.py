"""
The receive path's fast lane: in-order G.711 packets taken without an
RtpPacket and decoded a run at a time give exactly what the full per-packet
path gives, whatever the arrival order, losses, duplicates, SSRC changes and
timestamp jumps; anything unusual still goes the full way.
"""

import numpy as np
from hypothesis import given, settings, strategies as st
from twisted.internet.task import Clock

from mgateway.ingress.siprec.rtp_listener import RtpReceiver
from mgateway.media.g711 import ulaw_decode, ulaw_encode
from mgateway.media.jitter import JitterBuffer
from mgateway.media.rtp import build_rtp, parse_rtp

FRAME = 160


def payload(i: int) -> bytes:
    """Packet i's mu-law: a level of its own, so the PCM says which packet it came from."""
    return ulaw_encode(np.full(FRAME, 100 * (i % 200) - 10_000, "<i2").tobytes())


def datagram(i: int, *, ssrc: int = 7, seq0: int = 65_500, ts0: int = 4_294_960_000, ts_jump: int = 0) -> bytes:
    """Numbering that wraps around within a few dozen packets, both sequence and timestamp."""
    return build_rtp(0, (seq0 + i) & 0xFFFF, (ts0 + i * FRAME + ts_jump) & 0xFFFFFFFF, ssrc, payload(i))


def through_push(datagrams: list[bytes]) -> tuple[bytes, JitterBuffer]:
    jitter = JitterBuffer(0, ulaw_decode)
    out = b"".join(jitter.push(parse_rtp(d)) for d in datagrams) + jitter.flush()
    return out, jitter


def through_receiver(batches: list[list[bytes]]) -> tuple[bytes, RtpReceiver]:
    receiver = RtpReceiver(Clock())
    delivered = []
    receiver.deliver = delivered.append
    receiver.use([(0, "PCMU")])
    for batch in batches:
        receiver.receive(batch)
    receiver.flush()
    return b"".join(delivered), receiver


def counts(jitter: JitterBuffer) -> tuple:
    return (jitter.received, jitter.lost, jitter.late, jitter.duplicates, jitter.reordered, jitter.resyncs,
            jitter.position)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.integers(0, 4), min_size=1, max_size=60),
    st.sets(st.integers(0, 59), max_size=10),
    st.sets(st.integers(0, 59), max_size=4),
    st.integers(0, 59),
    st.integers(0, 59),
    st.integers(1, 8),
)
def test_batches_through_the_fast_path_give_what_the_full_path_gives(delays, dropped, doubled, new_ssrc_at,
                                                                      jump_at, batch_size):
    count = len(delays)
    kept = [i for i in range(count) if i not in dropped]
    arrival = sorted(kept + [i for i in doubled if i in kept], key=lambda i: (i + delays[i], i))

    def made(i):
        # From new_ssrc_at on, another source; from jump_at on, a 1 s timestamp jump (silence suppression).
        return datagram(i, ssrc=8 if i >= new_ssrc_at else 7, ts_jump=8000 if i >= jump_at else 0)

    datagrams = [made(i) for i in arrival]
    expected, full = through_push(datagrams)
    batches = [datagrams[k : k + batch_size] for k in range(0, len(datagrams), batch_size)]
    got, receiver = through_receiver(batches)
    assert got == expected
    assert counts(receiver.jitter) == counts(full)


def test_a_burst_in_order_is_decoded_in_one_call_and_delivered_once():
    decoded = []

    def decode(run: bytes) -> bytes:
        decoded.append(len(run))
        return ulaw_decode(run)

    receiver = RtpReceiver(Clock())
    delivered = []
    receiver.deliver = delivered.append
    receiver.use([(0, "PCMU")])
    receiver.jitter = JitterBuffer(0, decode, octet_per_sample=True)
    # The start of a stream goes the full way: its first packets wait out the depth.
    receiver.receive([datagram(i) for i in range(10)])
    decoded.clear()
    delivered.clear()
    receiver.receive([datagram(i) for i in range(10, 60)])
    assert decoded == [50 * FRAME], "one decode for the whole run"
    assert len(delivered) == 1 and delivered[0] == ulaw_decode(b"".join(payload(i) for i in range(10, 60)))


def test_unusual_packets_in_a_batch_take_the_full_path_in_their_place():
    """A CSRC list, padding and an RTCP report amid plain packets: the audio stays in order."""
    receiver = RtpReceiver(Clock())
    delivered = []
    receiver.deliver = delivered.append
    receiver.use([(0, "PCMU")])
    rtcp = bytes([0x80, 200]) + bytes(26)
    batch = [datagram(0), datagram(1),
             build_rtp(0, 65_502, (4_294_960_000 + 2 * FRAME) & 0xFFFFFFFF, 7, payload(2), csrcs=(5,)),
             rtcp,
             build_rtp(0, 65_503, (4_294_960_000 + 3 * FRAME) & 0xFFFFFFFF, 7, payload(3), padding=4),
             datagram(4)]
    receiver.receive(batch)
    receiver.flush()
    assert b"".join(delivered) == ulaw_decode(b"".join(payload(i) for i in range(5)))
    assert receiver.datagrams == 6 and receiver.jitter.received == 5


def test_a_batch_of_rtcp_alone_is_not_heard_as_media():
    """The media timeout and the quiet-sender fill go by RTP, not by RTCP reports."""
    clock = Clock()
    receiver = RtpReceiver(clock)
    receiver.deliver = lambda pcm: None
    receiver.use([(0, "PCMU")])
    receiver.receive([datagram(0)])
    clock.advance(5)
    receiver.receive([bytes([0x80, 201]) + bytes(6)])
    assert receiver.heard == 0
    receiver.receive([datagram(1)])
    assert receiver.heard == 5
