"""
How recordings of one call live and die: Cisco CUCM's delayed offers and its
two one-stream recordings per call, media inactivity, and a new recording
taking over the guid of one whose SBC disappeared. Real RTP sockets on
loopback, the real call registry, SIP straight into the server, time on a
deterministic clock.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock

from mgateway.calls.registry import CallRegistry
from mgateway.calls.roles import media_line_roles
from mgateway.ingress.siprec.rtp_listener import RtpPorts, decodable_codecs
from mgateway.ingress.siprec.srs import RecordingServer
from mgateway.media.g711 import alaw_encode, ulaw_encode
from mgateway.media.rtp import build_rtp
from mgateway.sip.message import parse_message
from mgateway.sip.sdp import parse_sdp
from tests.support.audio import until
from tests.support.scripted_engine import ScriptedEngine
from tests.test_sip_uas import FakeChannel

CISCO_GUID = "0648881792-0000065536-0000001647-0185272330"
UUI = "00FA080001000758A20EFA;encoding=hex"
UCID = "00001000071487015674"
TWO_STREAMS = (b"v=0\r\no=SRC 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
               b"m=audio 30000 RTP/AVP 0\r\na=label:1\r\na=sendonly\r\n"
               b"m=audio 30002 RTP/AVP 0\r\na=label:2\r\na=sendonly\r\n")


def invite(call_id: str, headers: str = "", body: bytes = b"", content_type: str = "application/sdp",
           siprec: bool = True) -> bytes:
    return (
        "INVITE sip:srs@127.0.0.1:5070 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-{call_id}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:src@127.0.0.1>;tag=src\r\n"
        "To: <sip:srs@127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 INVITE\r\n"
        f"Contact: <sip:src@127.0.0.1:5060>{';+sip.src' if siprec else ''}\r\n"
        + ("Require: siprec\r\n" if siprec else "")
        + headers
        + (f"Content-Type: {content_type}\r\n" if body else "")
        + f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def ack(call_id: str, to_tag: str, body: bytes = b"") -> bytes:
    return (
        "ACK sip:srs@127.0.0.1:5070 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-ack-{call_id}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:src@127.0.0.1>;tag=src\r\n"
        f"To: <sip:srs@127.0.0.1>;tag={to_tag}\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 ACK\r\n"
        + ("Content-Type: application/sdp\r\n" if body else "")
        + f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


class Recorder:
    """A recording server on a deterministic clock, with the real registry."""

    def __init__(self, **options):
        self.clock = Clock()
        self.registry = CallRegistry(ScriptedEngine(), {"siprec": []}, reactor, {"siprec": media_line_roles()})
        self.ports = RtpPorts(reactor, "127.0.0.1", 46000, 46999, 1 << 20, clock=self.clock)
        self.server = RecordingServer(self.clock, self.registry, self.ports, media_address="127.0.0.1",
                                      codecs=decodable_codecs(), **options)
        self.channel = FakeChannel()

    def call(self, data: bytes, ack_body: bytes = b""):
        """Send an INVITE and ACK its 200; the 200."""
        request = parse_message(data)
        self.server.uas.receive(request, self.channel)
        self.sent = self.channel.take()
        final = self.sent[-1]
        if final.status == 200:
            self.server.uas.receive(parse_message(ack(request.call_id, final.to_address.tag, ack_body)),
                                    self.channel)
        return final

    def session(self, call_id: str):
        return next(s for d, s in ((d, d.context) for d in self.server.uas.dialogs.values()) if d.call_id == call_id)


@pytest.fixture
def recorder():
    recorder = Recorder()
    yield recorder
    recorder.server.close()


class Sender(DatagramProtocol):
    def __init__(self):
        self.sequence = 0

    def send(self, port: int, payload_type: int = 0, count: int = 3, skip: int = 0):
        encode = alaw_encode if payload_type == 8 else ulaw_encode
        for _ in range(count):
            self.sequence += 1 + skip
            skip = 0
            packet = build_rtp(payload_type, self.sequence, 160 * self.sequence, 99, encode(b"\x10\x00" * 160))
            self.transport.write(packet, ("127.0.0.1", port))


async def leave_audio_buffered(session, sender: Sender) -> None:
    """Packets 1 and 3 on the first stream: the third waits in the jitter buffer for the second."""
    sender.send(session.ports[0], count=1)
    sender.send(session.ports[0], count=1, skip=1)
    await until(reactor, lambda: session.receivers[0].jitter is not None
                and session.receivers[0].jitter.received == 2)


@pytest.fixture
def sender():
    sender = Sender()
    port = reactor.listenUDP(0, sender, interface="127.0.0.1")
    yield sender
    port.stopListening()


@pytest_twisted.ensureDeferred
async def test_delayed_offer_is_offered_in_the_200_and_the_acks_answer_sets_the_codec(sender):
    """Cisco CUCM built-in-bridge recording: a plain INVITE without a body."""
    recorder = Recorder(accept_plain=True)
    try:
        ok = recorder.call(invite("cucm-1", f"Cisco-Guid: {CISCO_GUID}\r\n", siprec=False),
                           ack_body=b"v=0\r\no=CUCM 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
                                    b"t=0 0\r\nm=audio 31000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\na=sendonly\r\n")
        assert ok.status == 200
        (offered,) = parse_sdp(ok.body).media
        assert offered.formats[-1] == "101" and {"0", "8"} <= set(offered.formats)
        assert offered.direction == "recvonly"
        session = recorder.session("cucm-1")
        assert session.guid == CISCO_GUID and session.receivers[0].codec == "PCMA"
        call = recorder.registry.find("siprec", CISCO_GUID)
        sender.send(offered.port, payload_type=8, count=10)
        await until(reactor, lambda: call.legs["0"].position_bytes >= 8 * 320)
    finally:
        recorder.server.close()


def test_an_ack_without_an_answer_to_our_offer_ends_the_session_with_a_bye():
    recorder = Recorder(accept_plain=True)
    try:
        assert recorder.call(invite("cucm-1", siprec=False)).status == 200
        assert recorder.channel.statuses() == ["BYE"]
        assert recorder.server.sessions() == []
    finally:
        recorder.server.close()


def test_two_one_stream_recordings_of_one_guid_form_one_call_one_participant_each():
    recorder = Recorder(accept_plain=True)
    answer = b"v=0\r\no=CUCM 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 31000 RTP/AVP 0\r\n"
    try:
        for call_id in ("near-end", "far-end"):
            ok = recorder.call(invite(call_id, f"Cisco-Guid: {CISCO_GUID}\r\n", siprec=False), ack_body=answer)
            assert ok.status == 200, ok.headers.get("Warning")
        assert [recorder.session(c).legs for c in ("near-end", "far-end")] == [{0: "0"}, {0: "1"}]
        call = recorder.registry.find("siprec", CISCO_GUID)
        assert sorted(call.legs) == ["0", "1"] and len(call.feeds) == 2
        third = recorder.call(invite("third", f"Cisco-Guid: {CISCO_GUID}\r\n", siprec=False), ack_body=answer)
        assert third.status == 486 and "already being recorded" in third.headers.get("Warning")
    finally:
        recorder.server.close()


@pytest_twisted.ensureDeferred
async def test_a_recording_whose_media_stops_is_ended_with_a_bye_and_its_buffered_audio_flushed(sender):
    recorder = Recorder(media_timeout=60)
    try:
        recorder.call(invite("rec-1", f"User-to-User: {UUI}\r\n", TWO_STREAMS))
        session = recorder.session("rec-1")
        call = recorder.registry.find("siprec", UCID)
        await leave_audio_buffered(session, sender)
        recorder.clock.advance(59)
        assert recorder.channel.take() == [] and recorder.server.sessions() == [session]
        recorder.clock.advance(2)
        assert recorder.channel.statuses() == ["BYE"]
        assert recorder.server.sessions() == []
        assert call.legs["0"].position_bytes == 3 * 320, "both packets and the gap between, flushed"
        assert recorder.registry.find("siprec", UCID) is None
    finally:
        recorder.server.close()


def test_a_recording_on_hold_does_not_time_out(recorder):
    held = TWO_STREAMS.replace(b"a=sendonly", b"a=inactive")
    recorder.server.media_timeout = 60
    recorder.call(invite("rec-1", f"User-to-User: {UUI}\r\n", held))
    recorder.clock.advance(600)
    assert [m.method for m in recorder.channel.sent if not hasattr(m, "status")] == []
    assert len(recorder.server.sessions()) == 1


def test_a_new_recording_of_a_guid_whose_recording_went_silent_replaces_it_and_the_call_lives_on(recorder):
    recorder.call(invite("old", f"User-to-User: {UUI}\r\n", TWO_STREAMS))
    call = recorder.registry.find("siprec", UCID)
    recorder.clock.advance(2)
    busy = recorder.call(invite("early", f"User-to-User: {UUI}\r\n", TWO_STREAMS))
    assert busy.status == 486 and busy.headers.get("Warning")
    recorder.clock.advance(10)
    new = recorder.call(invite("new", f"User-to-User: {UUI}\r\n", TWO_STREAMS))
    assert new.status == 200
    (bye,) = [m for m in recorder.sent if not hasattr(m, "status")]
    assert (bye.method, bye.call_id) == ("BYE", "old")
    assert [s.guid for s in recorder.server.sessions()] == [UCID]
    assert recorder.session("new") is not None
    assert recorder.registry.find("siprec", UCID) is call, "the same call: its transcription state kept"
    assert all(leg.owner is not None for leg in call.legs.values())


def test_a_siprec_invite_with_metadata_but_no_sdp_gets_our_offer(recorder):
    metadata = b"<?xml version='1.0'?><recording xmlns='urn:ietf:params:xml:ns:recording:1'/>"
    ok = recorder.call(invite("meta-only", body=metadata, content_type="application/rs-metadata+xml"),
                       ack_body=b"v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 31000 RTP/AVP 0\r\na=sendonly\r\n")
    assert ok.status == 200 and parse_sdp(ok.body).media[0].direction == "recvonly"
    assert recorder.session("meta-only").receivers[0].codec == "PCMU"


@pytest_twisted.ensureDeferred
async def test_a_session_timer_that_expires_ends_the_recording_with_its_buffered_audio_flushed(recorder, sender):
    recorder.server.media_timeout = 0
    recorder.call(invite("timed", f"User-to-User: {UUI}\r\nSession-Expires: 90\r\nSupported: timer\r\n",
                         TWO_STREAMS))
    session = recorder.session("timed")
    call = recorder.registry.find("siprec", UCID)
    await leave_audio_buffered(session, sender)
    recorder.clock.advance(61)  # 90 s less a third: no refresh came
    assert [m.method for m in recorder.channel.take() if not hasattr(m, "status")] == ["BYE"]
    assert call.legs["0"].position_bytes == 3 * 320
    assert recorder.registry.find("siprec", UCID) is None
