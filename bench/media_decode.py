"""
Media decoding throughput on one core: how many RTP packets per second the
receive path (parse, jitter buffer, mu-law decode) handles, packet by packet
and as the SIPREC receiver takes them (two packets a batch, as the poller
reads a stream every 20 ms), and how many G.729 frames per second bcg729
decodes.

    python bench/media_decode.py
"""

from __future__ import annotations

import time

import numpy as np
from twisted.internet.task import Clock

from mgateway.ingress.siprec.rtp_listener import RtpReceiver
from mgateway.media.g711 import ulaw_decode, ulaw_encode
from mgateway.media.g729 import G729Decoder, G729Encoder, load_bcg729
from mgateway.media.jitter import JitterBuffer
from mgateway.media.rtp import build_rtp, parse_rtp

PACKETS = 40_000
SAMPLES_PER_PACKET = 160  # 20 ms at 8 kHz
G729_PACKETS = 10_000  # two 10 ms frames each
ROUNDS = 3  # the best of: other processes on the machine only ever slow a round down


def speechlike(samples: int) -> np.ndarray:
    """A tone sweep with a slow envelope: enough structure for the codecs to work on."""
    t = np.arange(samples) / 8000
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 3 * t)
    return (8000 * envelope * np.sin(2 * np.pi * (200 + 60 * np.sin(2 * np.pi * 0.5 * t)) * t)).astype("<i2")


def g711_datagrams() -> list[bytes]:
    """A stream of 20 ms PCMU packets in which every 50th pair arrives swapped."""
    mulaw = ulaw_encode(speechlike(SAMPLES_PER_PACKET * 500).tobytes())
    payloads = [mulaw[i : i + SAMPLES_PER_PACKET] for i in range(0, len(mulaw), SAMPLES_PER_PACKET)]
    datagrams = [
        build_rtp(0, i & 0xFFFF, (i * SAMPLES_PER_PACKET) & 0xFFFFFFFF, 0x5EED, payloads[i % len(payloads)])
        for i in range(PACKETS)
    ]
    for i in range(0, PACKETS - 1, 50):
        datagrams[i], datagrams[i + 1] = datagrams[i + 1], datagrams[i]
    return datagrams


def rate(label: str, count: int, unit: str, per_stream: int, work) -> None:
    """Time C{work} doing C{count} units; C{per_stream}: units a real-time stream needs per second."""
    elapsed = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        work()
        elapsed.append(time.perf_counter() - started)
    per_second = count / min(elapsed)
    print(f"{label:<44} {per_second:>10,.0f} {unit}/s = {per_second / per_stream:>6,.0f} real-time streams")


def main() -> None:
    datagrams = g711_datagrams()

    def parse_only():
        for datagram in datagrams:
            parse_rtp(datagram)

    def parse_and_decode():
        for datagram in datagrams:
            ulaw_decode(parse_rtp(datagram).payload)

    def full_path():
        jitter = JitterBuffer(0, ulaw_decode)
        released = sum(len(jitter.push(parse_rtp(datagram))) for datagram in datagrams)
        released += len(jitter.flush())
        assert released == 2 * SAMPLES_PER_PACKET * PACKETS and jitter.lost == 0

    def receiver_batches():
        receiver = RtpReceiver(Clock())
        released = []
        receiver.deliver = released.append
        receiver.use([(0, "PCMU")])
        for i in range(0, PACKETS, 2):
            receiver.receive(datagrams[i : i + 2])
        receiver.flush()
        assert sum(map(len, released)) == 2 * SAMPLES_PER_PACKET * PACKETS and receiver.jitter.lost == 0

    rate("RTP parse", PACKETS, "packets", 50, parse_only)
    rate("RTP parse + mu-law decode", PACKETS, "packets", 50, parse_and_decode)
    rate("RTP parse + jitter buffer + mu-law decode", PACKETS, "packets", 50, full_path)
    rate("SIPREC receiver, 2 packets a batch", PACKETS, "packets", 50, receiver_batches)

    if load_bcg729() is None:
        print("G.729: libbcg729 not found, skipped")
        return
    frames = G729Encoder().encode(speechlike(160 * 500).tobytes())
    payloads = [frames[i] + frames[i + 1] for i in range(0, len(frames), 2)]

    def g729_decode():
        decoder = G729Decoder()
        for i in range(G729_PACKETS):
            decoder.decode(payloads[i % len(payloads)])

    rate("G.729 decode (20-byte payloads)", 2 * G729_PACKETS, "frames", 100, g729_decode)


if __name__ == "__main__":
    main()
