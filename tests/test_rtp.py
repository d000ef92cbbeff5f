"""RTP datagrams parsed (RFC 3550) and told apart from RTCP on a shared port (RFC 5761)."""

import pytest
from hypothesis import given, strategies as st

from mgateway.media import MediaError
from mgateway.media.rtp import RtpError, RtpExtension, RtpPacket, build_rtp, is_rtcp, parse_rtp

# Written out by hand from the RFC 3550 header layout: V=2, P=1, X=1, CC=2,
# M=1, PT=18, seq 0xBEEF, timestamp 0x01020304, SSRC 0xCAFEBABE, CSRCs 1 and 2,
# a one-word extension of profile 0xBEDE, 3 payload octets, 4 padding octets.
HAND_MADE = bytes.fromhex(
    "b2 92 beef 01020304 cafebabe 00000001 00000002"
    "bede 0001 11223344"
    "aabbcc"
    "00000004"
)


def test_every_header_field_is_read_from_a_hand_made_datagram():
    assert parse_rtp(HAND_MADE) == RtpPacket(
        payload_type=18,
        sequence=0xBEEF,
        timestamp=0x01020304,
        ssrc=0xCAFEBABE,
        payload=b"\xaa\xbb\xcc",
        marker=True,
        csrcs=(1, 2),
        extension=RtpExtension(0xBEDE, bytes.fromhex("11223344")),
        padding=4,
        version=2,
    )


def test_building_the_hand_made_fields_gives_the_same_bytes():
    assert build_rtp(
        18, 0xBEEF, 0x01020304, 0xCAFEBABE, b"\xaa\xbb\xcc",
        marker=True, csrcs=(1, 2), extension=RtpExtension(0xBEDE, bytes.fromhex("11223344")), padding=4,
    ) == HAND_MADE


def test_a_plain_g711_packet_has_its_160_octets_as_payload():
    datagram = bytes.fromhex("80 00 0001 000000a0 12345678") + b"\xff" * 160
    packet = parse_rtp(datagram)
    assert (packet.payload_type, packet.sequence, packet.timestamp, packet.ssrc) == (0, 1, 160, 0x12345678)
    assert packet.payload == b"\xff" * 160
    assert (packet.marker, packet.csrcs, packet.extension, packet.padding) == (False, (), None, 0)


@pytest.mark.parametrize(
    "datagram, complaint",
    [
        (b"", "shorter than an RTP header"),
        (bytes.fromhex("8000 0001 000000a0 123456"), "shorter than an RTP header"),
        (bytes.fromhex("4000 0001 000000a0 12345678") + b"\xff", "version 1"),
        (bytes.fromhex("0000 0001 000000a0 12345678"), "version 0"),
        (bytes.fromhex("8300 0001 000000a0 12345678 00000001 00000002"), "3 CSRCs do not fit"),
        (bytes.fromhex("9000 0001 000000a0 12345678 bede"), "extension flagged but missing"),
        (bytes.fromhex("9000 0001 000000a0 12345678 bede 0002 00000000"), "extension of 2 words"),
        (bytes.fromhex("a000 0001 000000a0 12345678 ff ff 00"), "padding count 0"),
        (bytes.fromhex("a000 0001 000000a0 12345678 ff ff 04"), "padding count 4 with 3 bytes"),
        (bytes.fromhex("a000 0001 000000a0 12345678"), "padding count 0 with 0 bytes"),
    ],
)
def test_malformed_datagrams_are_rejected_with_the_reason(datagram, complaint):
    with pytest.raises(RtpError, match=complaint):
        parse_rtp(datagram)


def test_padding_may_take_up_everything_after_the_header():
    packet = parse_rtp(bytes.fromhex("a000 0001 000000a0 12345678 000003"))
    assert (packet.payload, packet.padding) == (b"", 3)


def test_rtp_errors_belong_to_the_media_error_family():
    assert issubclass(RtpError, MediaError)


@pytest.mark.parametrize(
    "packet_type, name", [(200, "SR"), (201, "RR"), (202, "SDES"), (203, "BYE"), (204, "APP"), (206, "PSFB")]
)
def test_rtcp_packets_are_recognised_on_the_rtp_port(packet_type, name):
    # An RTCP header: V=2, count 0, the packet type, the length in words minus one.
    rtcp = bytes([0x80, packet_type]) + (1).to_bytes(2, "big") + (0x12345678).to_bytes(4, "big")
    assert is_rtcp(rtcp), name


@pytest.mark.parametrize("payload_type", [0, 8, 13, 18, 96, 101, 127])
@pytest.mark.parametrize("marker", [False, True])
def test_rtp_of_every_usable_payload_type_is_not_taken_for_rtcp(payload_type, marker):
    assert not is_rtcp(build_rtp(payload_type, 1, 160, 7, b"\xff" * 160, marker=marker))


def test_rtcp_detection_needs_version_2_and_two_octets():
    assert not is_rtcp(b"\x80")
    assert not is_rtcp(bytes([0x40, 200, 0, 1]))


@given(st.binary(max_size=200))
def test_arbitrary_bytes_either_parse_or_raise_rtp_error(datagram):
    try:
        packet = parse_rtp(datagram)
    except RtpError:
        return
    assert packet.version == 2
    assert len(packet.payload) + packet.padding <= len(datagram) - 12 - 4 * len(packet.csrcs)


@given(st.binary(min_size=12, max_size=200))
def test_a_datagram_with_version_2_forced_either_parses_or_raises_rtp_error(datagram):
    # Random bytes are mostly the wrong version; force it to reach the deeper checks.
    datagram = bytes([0x80 | datagram[0] & 0x3F]) + datagram[1:]
    try:
        parse_rtp(datagram)
    except RtpError:
        pass


packets = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127),
    sequence=st.integers(0, 0xFFFF),
    timestamp=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    payload=st.binary(max_size=300),
    marker=st.booleans(),
    csrcs=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15).map(tuple),
    extension=st.none() | st.builds(
        RtpExtension, st.integers(0, 0xFFFF), st.binary(max_size=40).map(lambda b: b[: len(b) // 4 * 4])
    ),
    padding=st.integers(0, 255),
)


@given(packets)
def test_a_built_packet_parses_back_to_the_same_fields(packet):
    datagram = build_rtp(
        packet.payload_type, packet.sequence, packet.timestamp, packet.ssrc, packet.payload,
        marker=packet.marker, csrcs=packet.csrcs, extension=packet.extension, padding=packet.padding,
    )
    assert parse_rtp(datagram) == packet


@pytest.mark.parametrize(
    "arguments, complaint",
    [
        (dict(payload_type=128), "payload type 128"),
        (dict(sequence=0x10000), "out of range"),
        (dict(timestamp=-1), "out of range"),
        (dict(csrcs=tuple(range(16))), "16 CSRCs"),
        (dict(extension=RtpExtension(1, b"abc")), "whole 32-bit words"),
        (dict(extension=RtpExtension(0x10000, b"")), "out of range"),
        (dict(padding=256), "padding of 256"),
    ],
)
def test_fields_that_do_not_fit_the_header_are_refused_when_building(arguments, complaint):
    fields = dict(payload_type=0, sequence=1, timestamp=160, ssrc=7, payload=b"")
    fields.update(arguments)
    with pytest.raises(RtpError, match=complaint):
        build_rtp(**fields)
