"""SDP parsing, the recording server's answer, and re-offer comparison."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mgateway.sip.errors import NotAcceptableHere, ParseError, SIPError
from mgateway.sip.multipart import recording_parts
from mgateway.sip.sdp import AcceptedStream, build_answer, compare_offers, parse_sdp
from tests.support.siprec_samples import body_content_type, sample


def sample_offer(name):
    body = sample(name)
    sdp, _ = recording_parts(body_content_type(body), body)
    return parse_sdp(sdp)


def sdp(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n").encode()


TWO_LABELLED = sdp(
    "v=0",
    "o=SRC 100 200 IN IP4 198.51.100.7",
    "s=-",
    "c=IN IP4 198.51.100.7",
    "t=0 0",
    "m=audio 30000 RTP/AVP 18 8 0 101",
    "a=rtpmap:18 G729/8000",
    "a=fmtp:18 annexb=no",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-15",
    "a=ptime:20",
    "a=label:caller",
    "a=sendonly",
    "m=audio 30002 RTP/AVP 18 8 97",
    "a=rtpmap:18 G729/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:97 telephone-event/8000",
    "a=label:callee",
    "a=sendonly",
)


def answer(offer_bytes, ports=(40000, 40002, 40004), **kwargs):
    text, accepted = build_answer(parse_sdp(offer_bytes), local_ip="192.0.2.10", ports=list(ports),
                                  session_id=4242, version=7, **kwargs)
    return text, parse_sdp(text.encode()), accepted


def test_connection_at_session_level_applies_to_every_stream():
    offer = sample_offer("drachtio_oracle_acme_body.txt")
    assert [m.connection.address for m in offer.media] == ["192.168.50.140", "192.168.50.140"]
    assert [(m.port, m.label, m.direction) for m in offer.media] == [
        (20106, "16777227", "sendonly"), (20110, "16777228", "sendonly")]


def test_connection_only_at_media_level_is_found():
    offer = sample_offer("drachtio_ribbon_sonus_body.txt")
    assert offer.connection is None
    assert [m.connection.address for m in offer.media] == ["172.16.169.132", "172.16.169.132"]


def test_offer_without_any_connection_line_parses():
    offer = sample_offer("drachtio_connectel_opensips_body.txt")
    assert [m.connection for m in offer.media] == [None, None]
    assert offer.origin.address == "0.0.0.0"
    assert offer.media[0].rtpmaps[3].encoding == "GSM"


def test_nonstandard_direction_attribute_does_not_hide_sendonly():
    offer = sample_offer("drachtio_sems_procomm_body.txt")
    assert [(m.label, m.direction) for m in offer.media] == [("a_leg", "sendonly"), ("b_leg", "sendonly")]
    assert offer.media[0].attribute("direction") == "both"


def test_inactive_offer_is_on_hold():
    offer = sample_offer("drachtio_cisco_cube_inactive_body.txt")
    assert [(m.direction, m.on_hold) for m in offer.media] == [("inactive", True), ("inactive", True)]


def test_missing_direction_defaults_to_sendrecv_and_session_level_direction_applies():
    offer = parse_sdp(sdp("v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "t=0 0", "a=inactive",
                          "c=IN IP4 192.0.2.1", "m=audio 1000 RTP/AVP 0", "m=audio 1002 RTP/AVP 0", "a=sendonly"))
    assert [m.direction for m in offer.media] == ["inactive", "sendonly"]
    plain = parse_sdp(sdp("v=0", "m=audio 1000 RTP/AVP 0"))
    assert plain.media[0].direction == "sendrecv"


def test_lines_out_of_order_are_tolerated():
    offer = parse_sdp(sdp("v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "t=0 0", "c=IN IP4 192.0.2.9",
                          "m=audio 1000 RTP/AVP 0"))
    assert offer.media[0].connection.address == "192.0.2.9"


@pytest.mark.parametrize("bad", [
    sdp("v=0", "m=audio"), sdp("v=0", "m=audio 70000 RTP/AVP 0"), sdp("v=0", "c=IN IP4"), sdp("v=1"),
    sdp("v=0", "this is not sdp"), sdp("v=0", "o=too few"), sdp("v=0", "m=audio x RTP/AVP 0"),
])
def test_malformed_sdp_is_bad_request(bad):
    with pytest.raises(ParseError):
        parse_sdp(bad)


def test_answer_keeps_two_labelled_streams_in_order_with_the_offerers_payload_types():
    text, parsed, accepted = answer(TWO_LABELLED)
    assert accepted == [
        AcceptedStream(index=0, label="caller", port=40000, payload_type=18, codec="G729", telephone_event_pt=101,
                       remote_address="198.51.100.7", remote_port=30000, on_hold=False,
                       formats=((18, "G729"), (8, "PCMA"), (0, "PCMU"))),
        AcceptedStream(index=1, label="callee", port=40002, payload_type=18, codec="G729", telephone_event_pt=97,
                       remote_address="198.51.100.7", remote_port=30002, on_hold=False,
                       formats=((18, "G729"), (8, "PCMA"))),
    ]
    assert [(m.port, m.formats, m.label, m.direction) for m in parsed.media] == [
        (40000, ("18", "8", "0", "101"), "caller", "recvonly"),
        (40002, ("18", "8", "97"), "callee", "recvonly"),
    ]
    assert parsed.media[0].rtpmaps[101].encoding == "telephone-event"
    assert parsed.media[1].rtpmaps[97].encoding == "telephone-event"
    assert parsed.media[0].fmtp(101) == "0-15"
    assert parsed.media[0].attribute("ptime") == "20"
    assert text.endswith("\r\n") and "\n" not in text.replace("\r\n", "")


def test_answer_has_our_own_origin_and_connection():
    text, parsed, _ = answer(TWO_LABELLED)
    assert (parsed.origin.username, parsed.origin.session_id, parsed.origin.version) == ("-", "4242", "7")
    assert parsed.origin.address == parsed.connection.address == "192.0.2.10"
    assert "198.51.100.7" not in text


def test_answer_over_ipv6_says_ip6():
    text, _ = build_answer(parse_sdp(TWO_LABELLED), local_ip="2001:db8::10", ports=[1, 2], session_id=1, version=1)
    assert "c=IN IP6 2001:db8::10\r\n" in text


def test_the_offerers_preference_orders_the_codecs_we_decode_and_their_parameters_are_mirrored():
    """A Metaswitch offer with G.729 first, sending G.729, must not be answered PCMU."""
    _, parsed, accepted = answer(TWO_LABELLED)
    assert [(s.codec, s.payload_type) for s in accepted] == [("G729", 18), ("G729", 18)]
    assert parsed.media[0].fmtp(18) == "annexb=no"
    assert parsed.media[1].fmtp(18) is None


def test_codecs_we_do_not_decode_are_left_out_of_the_answer():
    _, parsed, accepted = answer(TWO_LABELLED, supported={"PCMU": 0, "PCMA": 8})
    assert [m.formats for m in parsed.media] == [("8", "0", "101"), ("8", "97")]
    assert [s.codec for s in accepted] == ["PCMA", "PCMA"]


def test_static_payload_type_without_rtpmap_is_recognised():
    offer = sample_offer("drachtio_acme_fronting_avaya_ucid_body.txt")
    assert 8 not in offer.media[1].rtpmaps
    _, accepted = build_answer(offer, local_ip="192.0.2.10", ports=[1, 2], session_id=1, version=1,
                               supported={"PCMA": 8})
    assert [(s.label, s.codec, s.payload_type, s.telephone_event_pt) for s in accepted] == [
        ("201835599", "PCMA", 8, 101), ("201835600", "PCMA", 8, 101)]


def test_streams_we_cannot_take_get_port_zero_and_keep_their_place():
    offer = sdp(
        "v=0", "o=- 1 1 IN IP4 198.51.100.7", "s=-", "c=IN IP4 198.51.100.7", "t=0 0",
        "m=audio 30000 RTP/AVP 3 96", "a=rtpmap:96 opus/48000/2", "a=label:1",
        "m=video 30002 RTP/AVP 99", "a=rtpmap:99 H264/90000",
        "m=audio 30004 RTP/SAVP 0", "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:x",
        "m=audio 0 RTP/AVP 0",
        "m=audio 30008 RTP/AVP 0", "a=label:5",
    )
    _, parsed, accepted = answer(offer, ports=[41000])
    assert [(m.kind, m.port, m.proto, m.formats) for m in parsed.media] == [
        ("audio", 0, "RTP/AVP", ("3",)),
        ("video", 0, "RTP/AVP", ("99",)),
        ("audio", 0, "RTP/SAVP", ("0",)),
        ("audio", 0, "RTP/AVP", ("0",)),
        ("audio", 41000, "RTP/AVP", ("0",)),
    ]
    assert [(s.index, s.label, s.port) for s in accepted] == [(4, "5", 41000)]


def test_pcmu_at_another_clock_rate_is_not_accepted():
    _, _, accepted = answer(sdp("v=0", "c=IN IP4 192.0.2.1", "m=audio 1000 RTP/AVP 96", "a=rtpmap:96 PCMU/16000"))
    assert accepted == []


def test_inactive_offer_is_answered_inactive():
    offer = sample_offer("drachtio_cisco_cube_inactive_body.txt")
    text, accepted = build_answer(offer, local_ip="192.0.2.10", ports=[1, 2], session_id=1, version=1)
    assert [m.direction for m in parse_sdp(text).media] == ["inactive", "inactive"]
    assert [s.on_hold for s in accepted] == [True, True]
    assert "a=rtpmap:19" not in text, "comfort noise is not taken"


def test_sendrecv_offer_is_answered_recvonly():
    _, parsed, _ = answer(sdp("v=0", "c=IN IP4 192.0.2.1", "m=audio 1000 RTP/AVP 0"))
    assert parsed.media[0].direction == "recvonly"
    assert parsed.media[0].label is None


def test_ports_can_come_from_a_function_of_the_mline_index():
    text, accepted = build_answer(parse_sdp(TWO_LABELLED), local_ip="192.0.2.10",
                                  ports=lambda index: 50000 + 10 * index, session_id=1, version=1)
    assert [s.port for s in accepted] == [50000, 50010]


def test_running_out_of_ports_is_503():
    with pytest.raises(SIPError) as caught:
        build_answer(parse_sdp(TWO_LABELLED), local_ip="192.0.2.10", ports=[1], session_id=1, version=1)
    assert caught.value.status == 503


def test_every_sample_offer_gets_an_answer_with_as_many_mlines():
    for name in ("drachtio_acme_fronting_avaya_ucid_body.txt", "drachtio_avaya_sbce_body.txt",
                 "drachtio_broadworks_body_mangled.txt", "drachtio_cisco_cube_body.txt",
                 "drachtio_connectel_opensips_body.txt", "drachtio_oracle_acme_body.txt",
                 "drachtio_ribbon_sonus_body.txt", "drachtio_sems_procomm_body.txt"):
        offer = sample_offer(name)
        text, accepted = build_answer(offer, local_ip="192.0.2.10", ports=lambda index: 40000 + 2 * index,
                                      session_id=1, version=1)
        assert len(parse_sdp(text).media) == len(offer.media) == len(accepted), name
        assert [s.label for s in accepted] == [m.label for m in offer.media], name


HOLD_BASE = ["v=0", "o=- 1 1 IN IP4 198.51.100.7", "s=-", "t=0 0"]


def test_compare_offers_sees_hold_by_inactive_and_by_null_address():
    before = parse_sdp(sdp(*HOLD_BASE, "c=IN IP4 198.51.100.7", "m=audio 30000 RTP/AVP 0", "a=label:1",
                           "a=sendonly", "m=audio 30002 RTP/AVP 0", "a=label:2", "a=sendonly"))
    after = parse_sdp(sdp(*HOLD_BASE, "c=IN IP4 198.51.100.7", "m=audio 30000 RTP/AVP 0", "a=label:1",
                          "a=inactive", "m=audio 30002 RTP/AVP 0", "c=IN IP4 0.0.0.0", "a=label:2", "a=sendonly"))
    updates = compare_offers(before, after)
    assert [(u.label, u.on_hold, u.hold_changed) for u in updates] == [("1", True, True), ("2", True, True)]
    resumed = compare_offers(after, before)
    assert [(u.on_hold, u.hold_changed) for u in resumed] == [(False, True), (False, True)]
    assert not any(u.changed for u in compare_offers(before, before))


def test_compare_offers_sees_new_remote_port_and_address():
    before = parse_sdp(sdp(*HOLD_BASE, "c=IN IP4 198.51.100.7", "m=audio 30000 RTP/AVP 0"))
    moved = parse_sdp(sdp(*HOLD_BASE, "c=IN IP4 198.51.100.7", "m=audio 31000 RTP/AVP 0"))
    elsewhere = parse_sdp(sdp(*HOLD_BASE, "c=IN IP4 198.51.100.8", "m=audio 30000 RTP/AVP 0 8"))
    (update,) = compare_offers(before, moved)
    assert (update.remote_changed, update.remote_port, update.hold_changed) == (True, 31000, False)
    (update,) = compare_offers(before, elsewhere)
    assert (update.remote_changed, update.remote_address, update.formats_changed) == (True, "198.51.100.8", True)


def test_compare_offers_sees_added_and_removed_streams():
    before = parse_sdp(sdp(*HOLD_BASE, "c=IN IP4 198.51.100.7", "m=audio 30000 RTP/AVP 0", "a=label:1",
                           "m=audio 30002 RTP/AVP 0", "a=label:2"))
    after = parse_sdp(sdp(*HOLD_BASE, "c=IN IP4 198.51.100.7", "m=audio 30000 RTP/AVP 0", "a=label:1",
                          "m=audio 0 RTP/AVP 0", "a=label:2", "m=audio 30004 RTP/AVP 0", "a=label:3"))
    updates = compare_offers(before, after)
    assert [(u.label, u.added, u.removed) for u in updates] == [("1", False, False), ("2", False, True),
                                                                 ("3", True, False)]


def test_new_offer_with_fewer_mlines_is_488():
    two = parse_sdp(sdp(*HOLD_BASE, "m=audio 30000 RTP/AVP 0", "m=audio 30002 RTP/AVP 0"))
    one = parse_sdp(sdp(*HOLD_BASE, "m=audio 30000 RTP/AVP 0"))
    with pytest.raises(NotAcceptableHere) as caught:
        compare_offers(two, one)
    assert caught.value.status == 488


@settings(max_examples=300)
@given(st.binary(max_size=600))
def test_random_sdp_parses_or_raises_only_sip_errors(data):
    try:
        offer = parse_sdp(data)
        build_answer(offer, local_ip="192.0.2.10", ports=lambda index: 40000, session_id=1, version=1)
    except SIPError:
        pass


@settings(max_examples=300)
@given(st.lists(st.sampled_from(TWO_LABELLED.split(b"\r\n")) | st.binary(max_size=30), max_size=25))
def test_shuffled_sdp_lines_parse_or_raise_only_sip_errors(lines):
    try:
        offer = parse_sdp(b"\r\n".join(lines))
        build_answer(offer, local_ip="192.0.2.10", ports=lambda index: 40000, session_id=1, version=1)
    except SIPError:
        pass
