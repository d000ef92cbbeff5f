"""
The Session Recording Server with real RTP sockets on loopback: every real
SIPREC body gets a correct answer, refusals are clean SIP errors, hold pauses
a stream, BYE closes it. SIP messages go straight into the server through a
fake channel; the transports are exercised by tests/test_siprec_api.py.
"""

import socket
from pathlib import Path

import pytest
import pytest_twisted
from prometheus_client import REGISTRY
from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.internet.protocol import DatagramProtocol

from mgateway.calls.registry import CallRegistry
from mgateway.calls.roles import media_line_roles
from mgateway.ingress.siprec.rtp_listener import RtpPorts, decodable_codecs
from mgateway.ingress.siprec.srs import RecordingServer, is_recording_session
from mgateway.media.g711 import ulaw_encode
from mgateway.media.g729 import G729Encoder
from mgateway.media.rtp import build_rtp
from mgateway.sip.message import parse_message
from mgateway.sip.sdp import parse_sdp
from mgateway.testing import RecordingCallRegistry
from tests.support.audio import read_pcm, until
from tests.support.scripted_engine import ScriptedEngine
from tests.support.siprec_samples import BODIES, FULL_INVITE, body_content_type, invite_around, sample
from tests.test_sip_uas import FakeChannel, request


@pytest.fixture
def server():
    ports = RtpPorts(reactor, "127.0.0.1", 44000, 44999, 1 << 20)
    srs = RecordingServer(reactor, RecordingCallRegistry(), ports, media_address="127.0.0.1", codecs=decodable_codecs())
    yield srs
    srs.close()


def sample_invite(name: str):
    if name == FULL_INVITE:
        return parse_message(sample(name))
    body = sample(name)
    return parse_message(invite_around(body, body_content_type(body)).replace(b"sample-1", name.encode()))


#: The guid each sample's call gets with the default source order, and where it was found.
GUIDS = {
    "drachtio_acme_fronting_avaya_ucid_body.txt": ("04099475671585313765", "Oracle's apkt:ucid"),
    "drachtio_avaya_sbce_body.txt": ("00112238841573563457", "the UCID as session id"),
    "drachtio_cisco_cube_body.txt": ("2432917800-1464078823-2314850559-1455670872", "CUBE's GCI"),
    "drachtio_ribbon_sonus_body.txt": ("241205267", "Ribbon's gcid"),
    "drachtio_broadworks_body_mangled.txt": ("rs-call-1@192.0.2.20", "the Call-ID: no usable metadata"),
    # No vendor call id in these: the metadata's session id.
    "drachtio_cisco_cube_inactive_body.txt": ("GZBIusaXEeuxxK1dFIaIyA==", "the session id"),
    "drachtio_connectel_opensips_body.txt": ("2+hKdGY+QvCKu8HYTdBouQ==", "the session id"),
    "drachtio_oracle_acme_body.txt": ("AavRXwIIQj1Q39eJulTipQ==", "the session id"),
    "drachtio_sems_procomm_body.txt": ("ho9aUhEQTRS+31th7sHStA==", "the session id"),
}


@pytest.mark.parametrize("name", BODIES + (FULL_INVITE,))
def test_every_sample_offer_is_answered_stream_for_stream_on_listening_ports(server, name):
    invite = sample_invite(name)
    channel = FakeChannel()
    server.uas.receive(invite, channel)
    trying, answer = channel.take()
    assert (trying.status, answer.status) == (100, 200), answer.headers.get("Warning")
    (session,) = server.sessions()
    offered = session.offer.media
    answered = parse_sdp(answer.body).media
    assert len(answered) == len(offered)
    for index, (ours, theirs) in enumerate(zip(answered, offered)):
        assert ours.label == theirs.label
        assert ours.port == session.ports[index] > 0
        assert ours.direction == ("inactive" if theirs.direction == "inactive" else "recvonly")
        assert set(ours.formats) <= set(theirs.formats)
    if name in GUIDS:
        assert session.guid == GUIDS[name][0], GUIDS[name][1]
    assert list(server.registry.feed("siprec", session.guid).legs) == [str(i) for i in range(len(offered))]


def plain_invite(offer: bytes, branch: str = "z9hG4bK-sample-1"):
    """An INVITE without SIPREC indicators (as Cisco network-based recording sends)."""
    return parse_message(invite_around(offer, "application/sdp").replace(b";+sip.src", b"")
                         .replace(b"Require: siprec\r\n", b"").replace(b"z9hG4bK-sample-1", branch.encode()))


OFFER = (b"v=0\r\no=SRC 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
         b"m=audio 30000 RTP/AVP 0\r\na=label:1\r\na=sendonly\r\n"
         b"m=audio 30002 RTP/AVP 0\r\na=label:2\r\na=sendonly\r\n")


def test_recording_sessions_are_recognised_by_require_or_the_src_feature_tag():
    assert is_recording_session(request("INVITE", extra="Require: siprec\r\n"))
    contact = request("INVITE")
    assert is_recording_session(contact), "+sip.src in Contact"
    assert not is_recording_session(plain_invite(OFFER))
    broadworks = parse_message(invite_around(b"v=0\r\n", "application/sdp").replace(b";+sip.src", b";src")
                               .replace(b"Require: siprec\r\n", b""))
    assert is_recording_session(broadworks)


def test_plain_invite_is_refused_unless_configured_to_record_it(server):
    channel = FakeChannel()
    server.uas.receive(plain_invite(OFFER), channel)
    assert channel.statuses() == [100, 488]
    server.accept_plain = True
    server.uas.receive(plain_invite(OFFER, branch="z9hG4bK-plain-2"), channel)
    assert channel.statuses() == [100, 200]


@pytest.mark.parametrize("content_type, body, status", [
    ("application/sdp", OFFER.replace(b"RTP/AVP 0", b"RTP/AVP 3"), 488),
    ("application/sdp", OFFER.replace(b"m=audio 30000", b"m=audio port"), 400),
    ("text/plain", b"hello", 415),
    ("multipart/mixed;boundary=x", b"--x\r\nContent-Type: text/plain\r\n\r\nhi\r\n--x--\r\n", 415),
])
def test_offers_we_cannot_take_get_a_clean_error(server, content_type, body, status):
    channel = FakeChannel()
    server.uas.receive(parse_message(invite_around(body, content_type)), channel)
    assert channel.statuses() == [100, status]
    assert server.sessions() == [] and server.registry.calls == {}


#: How tests.support.siprec_samples.invite_around identifies its dialog.
IN_SAMPLE_DIALOG = {"call_id": "rs-call-1@192.0.2.20", "from_tag": "src-tag"}


class Sender(DatagramProtocol):
    sequence = 0

    def send(self, port, count=3, payload_type=0):
        for _ in range(count):
            packet = build_rtp(payload_type, self.sequence, 160 * self.sequence, 1234, ulaw_encode(b"\x10\x00" * 160))
            self.transport.write(packet, ("127.0.0.1", port))
            self.sequence += 1


def answer_of(channel):
    return parse_sdp(channel.take()[-1].body)


@pytest_twisted.ensureDeferred
async def test_hold_pauses_a_stream_and_resuming_keeps_its_port(server):
    channel = FakeChannel()
    server.uas.receive(parse_message(invite_around(OFFER, "application/sdp")), channel)
    tag = channel.take()[-1].to_address.tag
    server.uas.receive(request("ACK", branch="z9hG4bK-ack", to_tag=tag, **IN_SAMPLE_DIALOG), channel)
    (session,) = server.sessions()
    ports = dict(session.ports)
    attachment = server.registry.feed("siprec", session.guid)
    sender = Sender()
    listening = reactor.listenUDP(0, sender, interface="127.0.0.1")
    try:
        sender.send(ports[0], count=10)
        await until(reactor, lambda: len(attachment.pcm["0"]) > 0)

        held = OFFER.replace(b"a=sendonly", b"a=inactive").replace(b"30000", b"31000")
        server.uas.receive(request("INVITE", cseq=2, branch="z9hG4bK-hold", to_tag=tag,
                                   **IN_SAMPLE_DIALOG, body=held), channel)
        answer = answer_of(channel)
        assert [m.direction for m in answer.media] == ["inactive", "inactive"]
        assert [m.port for m in answer.media] == [ports[0], ports[1]], "our ports stay put"
        before = len(attachment.pcm["0"])
        read = [session.receivers[i].datagrams for i in (0, 1)]
        sender.send(ports[0], count=10)
        # RTCP (a receiver report) on the RTP port is ignored too.
        listening.write(b"\x81\xc9\x00\x07" + bytes(28), ("127.0.0.1", ports[1]))
        await until(reactor, lambda: [session.receivers[i].datagrams for i in (0, 1)] == [read[0] + 10, read[1] + 1])
        server.uas.receive(request("ACK", cseq=2, branch="z9hG4bK-ack2", to_tag=tag,
                                   **IN_SAMPLE_DIALOG), channel)

        server.uas.receive(request("INVITE", cseq=3, branch="z9hG4bK-resume", to_tag=tag,
                                   **IN_SAMPLE_DIALOG, body=OFFER), channel)
        assert [m.direction for m in answer_of(channel).media] == ["recvonly", "recvonly"]
        assert len(attachment.pcm["0"]) == before, "nothing recorded while on hold"
        assert attachment.pcm["1"] == b""
        sender.send(ports[0], count=10)
        await until(reactor, lambda: len(attachment.pcm["0"]) > before)
    finally:
        listening.stopListening()


@pytest_twisted.ensureDeferred
async def test_bye_flushes_hangs_up_and_frees_the_ports(server):
    channel = FakeChannel()
    server.uas.receive(parse_message(invite_around(OFFER, "application/sdp")), channel)
    tag = channel.take()[-1].to_address.tag
    (session,) = server.sessions()
    attachment = server.registry.feed("siprec", session.guid)
    ports = list(session.ports.values())
    receiver = session.receivers[0]
    sender = Sender()
    listening = reactor.listenUDP(0, sender, interface="127.0.0.1")
    try:
        # Two packets: the jitter buffer holds them, waiting for the stream to settle.
        sender.send(ports[0], count=2)
        await until(reactor, lambda: receiver.jitter.received == 2)
    finally:
        listening.stopListening()
    assert attachment.pcm["0"] == b""
    server.uas.receive(request("BYE", cseq=2, branch="z9hG4bK-bye", to_tag=tag, **IN_SAMPLE_DIALOG),
                       channel)
    assert channel.statuses() == [200]
    assert len(attachment.pcm["0"]) == 2 * 320, "flushed before the hang-up"
    assert attachment.hung_up and server.sessions() == []
    await until(reactor, lambda: all(can_bind(port) for port in ports))


def can_bind(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_a_second_recording_of_the_same_call_is_refused_busy(server):
    channel = FakeChannel()
    server.uas.receive(sample_invite("drachtio_cisco_cube_body.txt"), channel)
    again = sample_invite("drachtio_cisco_cube_body.txt")
    headers = again.headers.replaced("Call-ID", "other@192.0.2.20").replaced(
        "Via", "SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bK-again")
    again = again.__class__("INVITE", again.uri, headers, again.body)
    server.uas.receive(again, channel)
    assert channel.statuses() == [100, 200, 100, 486]


@pytest_twisted.ensureDeferred
async def test_exhausted_port_range_gets_503_and_frees_what_it_took(server):
    server.ports.ports = server.ports.ports[:1]
    (only,) = server.ports.ports
    channel = FakeChannel()
    server.uas.receive(parse_message(invite_around(OFFER, "application/sdp")), channel)
    assert channel.statuses() == [100, 503]
    assert server.registry.calls == {} and server.sessions() == []
    await until(reactor, lambda: can_bind(only))


def test_rtp_sockets_get_the_configured_receive_buffer():
    requested = 1 << 20
    ports = RtpPorts(reactor, "127.0.0.1", 45000, 45999, requested)
    receiver = ports.receiver()
    ports.listen(receiver)
    try:
        size = receiver.port.socket.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        # Linux doubles what it is asked for, up to twice net.core.rmem_max.
        allowed = int(Path("/proc/sys/net/core/rmem_max").read_text())
        assert size == 2 * min(requested, allowed)
    finally:
        receiver.close()
        ports.stop()


@pytest_twisted.ensureDeferred
async def test_g729_only_offer_is_answered_with_g729_and_decoded(server):
    offer = (b"v=0\r\no=SRC 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
             b"m=audio 30000 RTP/AVP 18 101\r\na=rtpmap:18 G729/8000\r\na=fmtp:18 annexb=no\r\n"
             b"a=rtpmap:101 telephone-event/8000\r\na=label:1\r\na=sendonly\r\n")
    channel = FakeChannel()
    server.uas.receive(parse_message(invite_around(offer, "application/sdp")), channel)
    (media,) = answer_of(channel).media
    assert (media.formats, media.fmtp(18)) == (("18", "101"), "annexb=no")
    (session,) = server.sessions()
    attachment = server.registry.feed("siprec", session.guid)
    frames = G729Encoder().encode(read_pcm("single.wav")[: 320 * 20])
    sender = reactor.listenUDP(0, DatagramProtocol(), interface="127.0.0.1")
    try:
        for i in range(0, len(frames), 2):
            sender.write(build_rtp(18, i // 2, 80 * i, 99, frames[i] + frames[i + 1]), ("127.0.0.1", session.ports[0]))
        await until(reactor, lambda: len(attachment.pcm["0"]) >= 320 * 20)
    finally:
        sender.stopListening()
    assert len(attachment.pcm["0"]) == 320 * 20, "80 samples per 10 ms frame"


@pytest_twisted.ensureDeferred
async def test_an_m_line_removed_and_offered_again_is_recorded_again():
    registry = CallRegistry(ScriptedEngine(), {"siprec": []}, reactor, {"siprec": media_line_roles()})
    ports = RtpPorts(reactor, "127.0.0.1", 44000, 44999, 1 << 20)
    server = RecordingServer(reactor, registry, ports, media_address="127.0.0.1", codecs=decodable_codecs())
    channel = FakeChannel()
    sender = Sender()
    listening = reactor.listenUDP(0, sender, interface="127.0.0.1")
    try:
        server.uas.receive(parse_message(invite_around(OFFER, "application/sdp")), channel)
        tag = channel.take()[-1].to_address.tag
        server.uas.receive(request("ACK", branch="z9hG4bK-ack", to_tag=tag, **IN_SAMPLE_DIALOG), channel)
        (session,) = server.sessions()
        removed = OFFER.replace(b"m=audio 30002", b"m=audio 0")
        server.uas.receive(request("INVITE", cseq=2, branch="z9hG4bK-remove", to_tag=tag,
                                   **IN_SAMPLE_DIALOG, body=removed), channel)
        assert [m.port for m in answer_of(channel).media][1] == 0
        server.uas.receive(request("ACK", cseq=2, branch="z9hG4bK-ack2", to_tag=tag, **IN_SAMPLE_DIALOG), channel)
        server.uas.receive(request("INVITE", cseq=3, branch="z9hG4bK-again", to_tag=tag,
                                   **IN_SAMPLE_DIALOG, body=OFFER), channel)
        reply = channel.take()[-1]
        assert reply.status == 200, reply.headers.get("Warning")
        port = parse_sdp(reply.body).media[1].port
        assert port == session.ports[1] > 0
        leg = registry.find("siprec", session.guid).legs["1"]
        before = leg.position_bytes
        sender.send(port, count=10)
        await until(reactor, lambda: leg.position_bytes > before)
    finally:
        listening.stopListening()
        await server.close()


@pytest.mark.parametrize("offered, answered", [(b"0 8", ("0", "8")), (b"8 0", ("8", "0"))])
def test_the_answer_keeps_the_offerers_codec_order(server, offered, answered):
    channel = FakeChannel()
    both = OFFER.replace(b"RTP/AVP 0", b"RTP/AVP " + offered)
    server.uas.receive(parse_message(invite_around(both, "application/sdp")), channel)
    assert [m.formats for m in answer_of(channel).media] == [answered, answered]


@pytest_twisted.ensureDeferred
async def test_every_codec_the_answer_allowed_is_decoded_and_others_are_counted(server):
    """The sender may send any codec of the answer; a payload type nobody agreed to is counted, not lost silently."""
    channel = FakeChannel()
    server.uas.receive(parse_message(invite_around(OFFER.replace(b"RTP/AVP 0", b"RTP/AVP 0 8"),
                                                   "application/sdp")), channel)
    (session,) = server.sessions()
    attachment = server.registry.feed("siprec", session.guid)
    receiver = session.receivers[0]
    sender = Sender()
    listening = reactor.listenUDP(0, sender, interface="127.0.0.1")
    try:
        sender.send(session.ports[0], count=10, payload_type=8)  # PCMA, second in the answer
        await until(reactor, lambda: len(attachment.pcm["0"]) >= 320 * 8)
        assert receiver.codec == "PCMA"
        before = REGISTRY.get_sample_value("asapp_mg_rtp_unexpected_payload_packets_total")
        sender.send(session.ports[0], count=5, payload_type=18)  # G.729: not in this answer
        await until(reactor, lambda: receiver.unexpected.get(18) == 5)
        assert REGISTRY.get_sample_value("asapp_mg_rtp_unexpected_payload_packets_total") == before + 5
    finally:
        listening.stopListening()


def test_a_sender_that_goes_quiet_has_its_silence_filled_as_it_passes():
    """Silence suppression: noise reaches the call while the sender is silent, and the timeline stays right."""
    clock = Clock()
    ports = RtpPorts(reactor, "127.0.0.1", 45000, 45999, 1 << 20, clock=clock, quiet_after=0.2)
    receiver = ports.receiver()
    ports.listen(receiver)
    delivered = []
    receiver.deliver = delivered.append
    receiver.use([(0, "PCMU")])
    speech = ulaw_encode(b"\x00\x20" * 160)

    def send(index):
        receiver.datagramReceived(build_rtp(0, index, 160 * index, 1234, speech), ("127.0.0.1", 30000))

    try:
        for index in range(10):
            send(index)
            clock.advance(0.02)
        heard = sum(map(len, delivered))
        clock.advance(0.1)
        assert sum(map(len, delivered)) == heard, "a pause shorter than QUIET_AFTER_SECONDS is left alone"
        for _ in range(8):  # one second of silence in all
            clock.advance(0.1)
        filled = sum(map(len, delivered)) - heard
        assert 2 * 8000 * 0.8 <= filled <= 2 * 8000 * 1.0
        # The sender speaks again 1.5 s after its last packet: its timestamps say where.
        send(10 + 75)
        delivered.append(receiver.jitter.flush())
        assert sum(map(len, delivered)) == 2 * 160 * (10 + 75 + 1)
    finally:
        receiver.close()
        ports.stop()
