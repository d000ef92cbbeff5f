"""
G.729 Annex B pauses end utterances, end to end through SIPREC with real
Vosk: a sender with silence suppression sends a SID frame (a 2-octet payload,
RFC 3551 section 4.5.6) or an RFC 3389 comfort-noise packet (payload type 13)
as a pause begins, then nothing until speech resumes. The SID frame decodes
to bcg729's comfort noise, the time without packets is filled with the
gateway's own once the sender has been quiet for ``sip.fill_silence_after_ms``
(``mgateway.ingress.siprec.rtp_listener``), and the endpointer takes both for
non-speech: two sentences 3 s apart give two webhook posts, the first before
the second sentence is sent.
"""

from __future__ import annotations

import random
import uuid

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.protocol import DatagramProtocol

from mgateway.media.g729 import SID_BYTES, G729Encoder
from mgateway.media.rtp import build_rtp
from tests.conftest import wait
from tests.support.audio import pace, until
from tests.support.gateway import start_gateway
from tests.support.pauses import two_sentences
from tests.support.siprec_peer import free_sip_port, go_on, run_sipp
from tests.support.speech import BYTES_PER_MS

G729_PT, COMFORT_NOISE_PT = 18, 13
#: RFC 3389 section 3: the noise level, -64 dBov, as a comfort-noise payload.
CN_PAYLOAD = bytes([64])


@pytest.fixture(scope="module")
def quiet_filling_gateway(tmp_path_factory, webhook_target, tls_files):
    """A gateway that fills a SIPREC sender's silence after 200 ms of it, as the shipped configuration does."""
    _, url = webhook_target
    running = wait(start_gateway(reactor, tmp_path_factory.mktemp("sid-gateway"), f"""
[webhook]
url = "{url}/hook"
ca_file = "{tls_files.ca_cert}"
timeout_seconds = 5
""", fill_silence_after_ms=200))
    yield running
    wait(running.service.stopService())


def annexb_packets(pcm: bytes, start_ms: int, comfort_noise_packets: bool) -> list[tuple[int, int, bytes]]:
    """
    C{pcm} as a silence-suppressing G.729 sender puts it on the wire, two
    frames a packet: (payload type, timestamp offset, payload) of each packet
    sent, the first C{start_ms} into the stream. Frames the encoder's VAD
    drops are not sent; its SID frames go out as they are, or as RFC 3389
    comfort-noise packets.
    """
    frames = G729Encoder(vad=True).encode(pcm[: len(pcm) // 320 * 320])
    packets = []
    for i in range(0, len(frames) - 1, 2):
        timestamp = 8 * start_ms + 80 * i
        speech = b"".join(f for f in frames[i : i + 2] if len(f) != SID_BYTES)
        sid = [f for f in frames[i : i + 2] if len(f) == SID_BYTES]
        if speech:
            packets.append((G729_PT, timestamp, speech + (b"" if comfort_noise_packets else b"".join(sid[:1]))))
        elif sid:
            packets.append((COMFORT_NOISE_PT, timestamp, CN_PAYLOAD) if comfort_noise_packets
                           else (G729_PT, timestamp, sid[0]))
    return packets


class AnnexBSender(DatagramProtocol):
    def __init__(self, port: int):
        self.port = port
        self.ssrc = random.getrandbits(32)
        self.sequence = random.getrandbits(16)
        self.base = random.getrandbits(32)

    def send(self, packet: tuple[int, int, bytes]) -> None:
        payload_type, timestamp, payload = packet
        self.transport.write(build_rtp(payload_type, self.sequence, (self.base + timestamp) & 0xFFFFFFFF, self.ssrc,
                                       payload), ("127.0.0.1", self.port))
        self.sequence = (self.sequence + 1) & 0xFFFF


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("comfort_noise_packets", [False, True], ids=["SID frames", "RFC 3389 CN packets"])
async def test_two_sentences_with_a_3s_annexb_pause_are_two_webhook_posts_on_time(
        quiet_filling_gateway, webhook, tmp_path, comfort_noise_packets):
    gateway = quiet_filling_gateway
    first, pause, second = two_sentences("line noise")
    first_packets = annexb_packets(first + pause, 0, comfort_noise_packets)
    second_packets = annexb_packets(second, (len(first) + len(pause)) // BYTES_PER_MS, comfort_noise_packets)
    in_pause = [p for p in first_packets if p[1] >= 8 * (len(first) // BYTES_PER_MS)]
    assert any(p[0] == COMFORT_NOISE_PT or len(p[2]) == SID_BYTES for p in in_pause), "SID frames in the pause"
    assert len(in_pause) < len(pause) // 320 // 3, "the sender sends nothing for most of the pause"

    guid = f"sid-{uuid.uuid4().hex}"
    sipp_port = free_sip_port()
    target = f"127.0.0.1:{gateway.service.siprec.udp.getHost().port}"
    sipp = run_sipp(reactor, "siprec_g729_annexb.xml", target, port=sipp_port, call_id=guid, workdir=tmp_path)
    sessions = lambda: [s for s in gateway.service.siprec.server.sessions() if s.guid == guid]
    await until(reactor, lambda: sessions() or sipp.ended.called)
    assert sessions(), sipp.output
    (session,) = sessions()
    code, started = await gateway.post_json("/mg-autotranscribe/v1/start-streaming", {
        "namespace": "siprec", "guid": guid, "customerId": "C1", "agentId": "A1",
        "siprecParams": {"mediaLineOrder": "CUSTOMER_FIRST"}})
    assert code == 200, started
    sender = AnnexBSender(session.ports[0])
    listening = reactor.listenUDP(0, sender, interface="127.0.0.1")
    posts = lambda received: [r for r in received if r.body["externalConversationId"] == guid]
    try:
        await pace(reactor, first_packets, sender.send)
        await webhook.wait_until(lambda received: len(posts(received)) == 1)
        await pace(reactor, second_packets, sender.send)
        await webhook.wait_until(lambda received: len(posts(received)) == 2)
    finally:
        listening.stopListening()
    go_on(reactor, sipp_port, guid)
    assert await sipp.ended == 0, sipp.output

    earlier, later = (post.body["autotranscribeResponse"] for post in posts(webhook.received))
    assert [earlier["message"], later["message"]] == ["transcript", "transcript"]
    assert earlier["end"] < len(first) // BYTES_PER_MS
    assert later["start"] >= (len(first) + len(pause)) // BYTES_PER_MS - 300
    assert len(posts(webhook.received)) == 2
