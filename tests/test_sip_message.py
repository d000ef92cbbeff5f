"""SIP message parsing, serialisation, responses and stream framing."""

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mgateway.sip.errors import MessageTooLarge, ParseError, SIPError
from mgateway.sip.framing import Malformed, StreamFramer
from mgateway.sip.grammar import CSeq, parse_name_addr, parse_via
from mgateway.sip.message import (
    Headers,
    Request,
    Response,
    header_key,
    parse_message,
    response_for,
    serialize,
)
from tests.support.siprec_samples import FULL_INVITE, sample

OPTIONS = (
    b"OPTIONS sip:srs@192.0.2.10 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bK776asdhds\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:sbc@192.0.2.20>;tag=1928301774\r\n"
    b"To: <sip:srs@192.0.2.10>\r\n"
    b"Call-ID: a84b4c76e66710@192.0.2.20\r\n"
    b"CSeq: 63104 OPTIONS\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def options(**replace: bytes) -> bytes:
    """OPTIONS with some header lines swapped: options(Via=b"Via: ...") ."""
    lines = OPTIONS.split(b"\r\n")
    for name, line in replace.items():
        lines = [line if existing.startswith(name.encode() + b":") else existing for existing in lines]
    return b"\r\n".join(lines)


def test_compact_header_names_are_found_by_their_full_names():
    message = parse_message(
        b"INVITE sip:srs@192.0.2.10 SIP/2.0\r\n"
        b"v: SIP/2.0/UDP 192.0.2.20;branch=z9hG4bK1\r\n"
        b"f: <sip:a@192.0.2.20>;tag=a\r\n"
        b"t: <sip:srs@192.0.2.10>\r\n"
        b"i: compact@192.0.2.20\r\n"
        b"CSeq: 1 INVITE\r\n"
        b"m: <sip:a@192.0.2.20>;+sip.src\r\n"
        b"k: siprec, timer\r\n"
        b"s: recording\r\n"
        b"x: 1800;refresher=uac\r\n"
        b"c: application/sdp\r\n"
        b"l: 5\r\n"
        b"\r\n"
        b"v=0\r\n"
    )
    assert message.call_id == "compact@192.0.2.20"
    assert message.headers.get("Supported") == "siprec, timer"
    assert message.headers.get_list("supported") == ["siprec", "timer"]
    assert message.headers.get("Session-Expires") == "1800;refresher=uac"
    assert message.headers.get("Subject") == "recording"
    assert message.content_type == "application/sdp"
    assert message.body == b"v=0\r\n"
    assert parse_name_addr(message.headers.get("Contact")).has_param("+sip.src")
    assert message.vias[0].branch == "z9hG4bK1"
    assert [name for name, _ in message.headers][:3] == ["v", "f", "t"], "names are kept as written"


@pytest.mark.parametrize(
    "compact, full",
    [("i", "Call-ID"), ("m", "Contact"), ("f", "From"), ("t", "To"), ("v", "Via"), ("c", "Content-Type"),
     ("l", "Content-Length"), ("k", "Supported"), ("s", "Subject"), ("e", "Content-Encoding"),
     ("x", "Session-Expires"), ("o", "Event"), ("r", "Refer-To"), ("u", "Allow-Events"), ("y", "Identity")],
)
def test_every_compact_form_expands_to_its_header(compact, full):
    assert header_key(compact) == header_key(full) == full.lower()
    assert header_key(compact.upper()) == full.lower()


def test_folded_header_lines_are_unfolded_into_one_value():
    message = parse_message(
        OPTIONS.replace(
            b"Max-Forwards: 70\r\n",
            b"Subject: I know you're there,\r\n     pick up the phone\r\n\tand talk to me!\r\nMax-Forwards: 70\r\n",
        )
    )
    assert message.headers.get("Subject") == "I know you're there, pick up the phone and talk to me!"
    assert message.headers.get("Max-Forwards") == "70"


def test_folded_line_before_any_header_is_bad_request():
    with pytest.raises(ParseError):
        parse_message(OPTIONS.replace(b"\r\nVia:", b"\r\n continuation\r\nVia:", 1))


def test_several_via_lines_and_a_combined_via_line_keep_their_order():
    message = parse_message(options(Via=(
        b"Via: SIP/2.0/UDP proxy.example.com;branch=z9hG4bK-top;received=198.51.100.1\r\n"
        b"v: SIP/2.0/TCP [2001:db8::1]:5070;branch=z9hG4bK-mid, SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bK-src;rport"
    )))
    vias = message.vias
    assert [via.branch for via in vias] == ["z9hG4bK-top", "z9hG4bK-mid", "z9hG4bK-src"]
    assert (vias[0].host, vias[0].port, vias[0].param("received")) == ("proxy.example.com", None, "198.51.100.1")
    assert (vias[1].transport, vias[1].host, vias[1].port) == ("TCP", "[2001:db8::1]", 5070)
    assert vias[2].has_param("rport") and vias[2].param("rport") is None

    response = parse_message(serialize(response_for(message, 200, "OK")))
    assert [via.branch for via in response.vias] == ["z9hG4bK-top", "z9hG4bK-mid", "z9hG4bK-src"]


def test_header_lookup_ignores_case_and_keeps_every_value():
    headers = Headers([("Accept", "application/sdp"), ("ACCEPT", "application/rs-metadata"), ("cSeQ", "1 BYE")])
    assert headers.get("accept") == "application/sdp"
    assert headers.get_all("Accept") == ["application/sdp", "application/rs-metadata"]
    assert "CSeq" in headers and "Call-ID" not in headers
    assert headers.replaced("accept", "*/*").items == (("accept", "*/*"), ("cSeQ", "1 BYE"))
    assert headers.without("Accept").items == (("cSeQ", "1 BYE"),)


def test_headers_refuse_values_that_would_inject_lines():
    with pytest.raises(ValueError):
        Headers([("Subject", "x\r\nVia: evil")])
    with pytest.raises(ValueError):
        Headers([("Bad Name", "x")])


def test_real_siprec_invite_parses_with_its_indicators():
    message = parse_message(sample(FULL_INVITE))
    assert isinstance(message, Request)
    assert (message.method, message.uri) == ("INVITE", "sip:20.107.248.114:5060")
    assert message.cseq == CSeq(102, "INVITE")
    assert message.call_id == "6c953981285cde0446619ca30087d35a@10.106.2.10:5060"
    assert message.from_address.display_name == "NOCALLERID"
    assert message.from_address.tag == "as13e1f4e1"
    assert message.to_address.tag is None
    assert message.headers.get("Require") == "siprec"
    assert message.headers.get_all("Accept") == ["application/rs-metadata", "application/rs-metadata-request"]
    assert parse_name_addr(message.headers.get("Contact")).has_param("+sip.src")
    assert message.vias[0].transport == "TCP"
    assert len(message.body) == 1862
    assert message.body.startswith(b"\r\n--Itro-wXyZ-bdry\r\n")


def test_datagram_without_content_length_takes_the_rest_as_body():
    data = options().replace(b"Content-Length: 0\r\n", b"") + b"hello"
    assert parse_message(data).body == b"hello"


def test_datagram_bytes_past_content_length_are_dropped():
    data = options(**{"Content-Length": b"Content-Length: 3"}) + b"abcdef"
    assert parse_message(data).body == b"abc"


def test_content_length_beyond_the_datagram_is_bad_request():
    with pytest.raises(ParseError) as caught:
        parse_message(options(**{"Content-Length": b"Content-Length: 30"}) + b"short")
    assert caught.value.status == 400


def test_conflicting_content_lengths_are_bad_request():
    with pytest.raises(ParseError):
        parse_message(OPTIONS.replace(b"\r\n\r\n", b"\r\nl: 2\r\n\r\nab"))


def test_empty_lines_before_the_start_line_are_skipped():
    assert parse_message(b"\r\n\r\n" + OPTIONS).method == "OPTIONS"


def test_response_status_line_parses():
    response = parse_message(
        b"SIP/2.0 180 Ringing\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKx\r\n"
        b"From: <sip:srs@192.0.2.10>;tag=a\r\nTo: <sip:src@192.0.2.20>;tag=b\r\n"
        b"Call-ID: c1\r\nCSeq: 2 BYE\r\n\r\n"
    )
    assert isinstance(response, Response)
    assert (response.status, response.reason, response.cseq) == (180, "Ringing", CSeq(2, "BYE"))


@pytest.mark.parametrize("header", ["Via", "From", "To", "Call-ID", "CSeq"])
def test_request_missing_a_mandatory_header_is_bad_request(header):
    data = b"\r\n".join(line for line in OPTIONS.split(b"\r\n") if not line.startswith(header.encode() + b":"))
    with pytest.raises(ParseError) as caught:
        parse_message(data)
    assert caught.value.status == 400
    assert header.lower() in caught.value.detail.lower()


def test_cseq_method_must_match_the_request_method():
    with pytest.raises(ParseError, match="CSeq method"):
        parse_message(options(CSeq=b"CSeq: 1 INVITE"))


@pytest.mark.parametrize("cseq", [b"CSeq: x OPTIONS", b"CSeq: 1", b"CSeq: 99999999999 OPTIONS", b"CSeq: -1 OPTIONS"])
def test_malformed_cseq_is_bad_request(cseq):
    with pytest.raises(ParseError):
        parse_message(options(CSeq=cseq))


def test_other_sip_versions_are_505():
    with pytest.raises(SIPError) as caught:
        parse_message(OPTIONS.replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1))
    assert (caught.value.status, caught.value.reason) == (505, "Version Not Supported")


@pytest.mark.parametrize(
    "start_line",
    [b"OPTIONS sip:srs@192.0.2.10", b"OPT IONS sip:x SIP/2.0", b"OPTIONS nouri SIP/2.0", b"SIP/2.0 20 OK",
     b"HTTP/1.1 200 OK", b"OPTIONS sip:srs@192.0.2.10 SIP/2.0 extra"],
)
def test_malformed_start_lines_are_bad_request(start_line):
    with pytest.raises(ParseError):
        parse_message(OPTIONS.replace(OPTIONS.split(b"\r\n")[0], start_line, 1))


def test_name_addr_forms():
    quoted = parse_name_addr('"Agent \\"Smith\\"" <sip:7300@192.0.2.1;transport=tcp>;tag=9fxced76sl;x-y')
    assert quoted.display_name == 'Agent "Smith"'
    assert quoted.uri == "sip:7300@192.0.2.1;transport=tcp"
    assert quoted.params == (("tag", "9fxced76sl"), ("x-y", None))
    token = parse_name_addr("Extension 8500 <sip:2249888500@172.16.198.55>;tag=SerryvK5ej0jc")
    assert (token.display_name, token.tag) == ("Extension 8500", "SerryvK5ej0jc")
    bare = parse_name_addr("sip:bob@192.0.2.4;tag=abc")
    assert (bare.display_name, bare.uri, bare.tag) == (None, "sip:bob@192.0.2.4", "abc")
    assert parse_name_addr("*").uri == "*"


@pytest.mark.parametrize("value", ['"unterminated <sip:a@b>', "<sip:a@b", "<nouri>", "<sip:a@b> junk", '"x" sip:a@b'])
def test_malformed_name_addr_is_bad_request(value):
    with pytest.raises(ParseError):
        parse_name_addr(value)


@pytest.mark.parametrize("value", ["SIP/2.0/UDP", "SIP/2.0 host", "SIP/2.0/UDP host:99999", "SIP/2.0/UDP host:x"])
def test_malformed_via_is_bad_request(value):
    with pytest.raises(ParseError):
        parse_via(value)


def test_response_copies_dialog_headers_and_adds_the_to_tag():
    request = parse_message(sample(FULL_INVITE))
    response = response_for(request, 200, "OK", extra_headers=[("Contact", "<sip:srs@192.0.2.10>;+sip.srs")],
                            body=b"v=0\r\n", to_tag="srs-1")
    assert response.headers.get_all("Via") == request.headers.get_all("Via")
    assert response.headers.get("From") == request.headers.get("From")
    assert response.to_address.uri == request.to_address.uri
    assert response.to_address.tag == "srs-1"
    assert response.call_id == request.call_id
    assert response.cseq == request.cseq
    assert response.headers.get("Contact") == "<sip:srs@192.0.2.10>;+sip.srs"
    wire = serialize(response)
    assert wire.startswith(b"SIP/2.0 200 OK\r\n")
    assert parse_message(wire) == Response(200, "OK", response.headers.with_header("Content-Length", "5"), b"v=0\r\n")


def test_response_keeps_an_existing_to_tag():
    request = parse_message(options(To=b"To: <sip:srs@192.0.2.10>;tag=already"))
    assert response_for(request, 200, "OK", to_tag="other").to_address.tag == "already"


def test_provisional_response_without_tag_has_none():
    request = parse_message(options())
    assert response_for(request, 100, "Trying").to_address.tag is None


def test_record_route_is_copied_only_into_dialog_creating_invite_responses():
    routes = b"Record-Route: <sip:p1;lr>\r\nRecord-Route: <sip:p2;lr>\r\n"
    invite = parse_message(sample(FULL_INVITE).replace(b"Max-Forwards: 70\r\n", routes))
    assert response_for(invite, 200, "OK").headers.get_all("Record-Route") == ["<sip:p1;lr>", "<sip:p2;lr>"]
    assert response_for(invite, 100, "Trying").headers.get_all("Record-Route") == []
    assert response_for(invite, 488, "Not Acceptable Here").headers.get_all("Record-Route") == []


def test_serialize_writes_one_content_length_that_matches_the_body():
    request = Request("BYE", "sip:src@192.0.2.20", Headers([("l", "999"), ("Content-Length", "7"), ("Subject", "x")]),
                      b"abc")
    wire = serialize(request)
    assert wire == b"BYE sip:src@192.0.2.20 SIP/2.0\r\nSubject: x\r\nContent-Length: 3\r\n\r\nabc"


def test_header_bytes_that_are_not_utf8_survive_a_round_trip():
    data = options(From=b'From: "Jos\xe9" <sip:sbc@192.0.2.20>;tag=1')
    assert serialize(parse_message(data)) == data


tokens = st.text(alphabet=string.ascii_letters + string.digits + "-.!%*_+`'~", min_size=1, max_size=10)
values = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\r\n\0", exclude_categories=("Cs",)), max_size=30
).map(str.strip)
#: Headers a message may carry several times: not the ones it needs exactly
#: once (RFC 3261 §7.3.1: a second Call-ID or Content-Type is a 400).
extra_names = tokens.filter(lambda n: header_key(n) not in {
    "via", "from", "to", "call-id", "cseq", "content-length", "max-forwards", "content-type"})


@st.composite
def messages(draw):
    method = draw(tokens)
    headers = [
        ("Via", f"SIP/2.0/TCP 192.0.2.20:5060;branch=z9hG4bK{draw(tokens)}"),
        ("From", f"<sip:src@192.0.2.20>;tag={draw(tokens)}"),
        ("To", "<sip:srs@192.0.2.10>"),
        ("Call-ID", draw(tokens)),
        ("CSeq", f"{draw(st.integers(0, 2**31 - 1))} {method}"),
        *draw(st.lists(st.tuples(extra_names, values), max_size=4)),
    ]
    body = draw(st.binary(max_size=300))
    headers.append(("Content-Length", str(len(body))))
    if draw(st.booleans()):
        return Request(method, f"sip:{draw(tokens)}@192.0.2.10", Headers(headers), body)
    return Response(draw(st.integers(100, 699)), draw(values), Headers(headers), body)


@given(messages())
def test_serialized_messages_parse_back_to_themselves(message):
    assert parse_message(serialize(message)) == message


@settings(max_examples=300)
@given(st.binary(max_size=1500))
def test_random_bytes_parse_or_raise_only_sip_errors(data):
    try:
        parse_message(data)
    except SIPError:
        pass


@settings(max_examples=300)
@given(st.data())
def test_damaged_real_invites_parse_or_raise_only_sip_errors(data):
    wire = bytearray(sample(FULL_INVITE))
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, len(wire) - 1))
        wire[position:position + data.draw(st.integers(0, 3))] = data.draw(st.binary(max_size=3))
    try:
        parse_message(bytes(wire))
    except SIPError:
        pass


# --- stream framing -------------------------------------------------------


@given(st.lists(messages(), min_size=1, max_size=4), st.data())
def test_framer_yields_the_same_messages_for_any_split_of_the_stream(sent, data):
    stream = b"".join(
        data.draw(st.sampled_from([b"", b"\r\n", b"\r\n\r\n"])) + serialize(message) for message in sent
    )
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    framer = StreamFramer()
    received = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)]):
        received.extend(framer.feed(stream[start:end]))
    assert received == [parse_message(serialize(message)) for message in sent]


def test_framer_delivers_pipelined_messages_in_one_feed():
    framer = StreamFramer()
    got = framer.feed(OPTIONS + OPTIONS.replace(b"63104", b"63105"))
    assert [m.cseq.number for m in got] == [63104, 63105]


def test_double_crlf_ping_is_answered_with_one_crlf():
    framer = StreamFramer()
    assert framer.feed(b"\r\n") == []
    assert framer.feed(b"\r\n") == []
    assert framer.data_to_send() == b"\r\n"
    assert framer.data_to_send() == b""
    assert framer.feed(b"\r\n\r\n\r\n\r\n" + OPTIONS)[0].method == "OPTIONS"
    assert framer.data_to_send() == b"\r\n\r\n"


def test_single_crlf_pong_from_the_peer_is_ignored():
    framer = StreamFramer()
    assert framer.feed(OPTIONS + b"\r\n") != []
    assert framer.feed(OPTIONS)[0].method == "OPTIONS"
    assert framer.data_to_send() == b""


def test_stream_message_without_content_length_breaks_the_stream():
    framer = StreamFramer()
    data = OPTIONS.replace(b"Content-Length: 0\r\n", b"")
    assert framer.feed(data) == []
    assert isinstance(framer.failure, ParseError) and "Content-Length" in str(framer.failure)
    with pytest.raises(ParseError):
        framer.feed(OPTIONS)


def test_messages_complete_before_unframeable_bytes_are_still_delivered():
    framer = StreamFramer()
    second = OPTIONS.replace(b"63104", b"63105")
    got = framer.feed(OPTIONS + second + OPTIONS.replace(b"Content-Length: 0\r\n", b""))
    assert [m.cseq.number for m in got] == [63104, 63105]
    assert isinstance(framer.failure, ParseError)


def test_stream_message_over_the_limit_is_too_large():
    framer = StreamFramer(max_size=1000)
    assert framer.feed(options(**{"Content-Length": b"Content-Length: 2000"})) == []
    assert isinstance(framer.failure, MessageTooLarge) and framer.failure.status == 513


def test_stream_head_that_never_ends_is_too_large():
    framer = StreamFramer(max_size=1000)
    framer.feed(OPTIONS[:-4])
    for _ in range(100):
        framer.feed(b"X-Padding: " + b"p" * 20 + b"\r\n")
        if framer.failure is not None:
            break
    assert isinstance(framer.failure, MessageTooLarge)


def test_default_limit_takes_a_large_siprec_invite():
    invite = sample(FULL_INVITE)
    padded = invite.replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\nX-Pad: " + b"p" * 60000 + b"\r\n")
    assert StreamFramer().feed(padded)[0].method == "INVITE"


def test_malformed_message_with_a_clear_length_is_reported_and_the_stream_goes_on():
    framer = StreamFramer()
    bad = options(CSeq=b"CSeq: nonsense")
    got = framer.feed(bad + OPTIONS)
    assert isinstance(got[0], Malformed) and got[0].error.status == 400 and got[0].data == bad
    assert isinstance(got[1], Request)


@settings(max_examples=200)
@given(st.lists(st.binary(max_size=200), max_size=6))
def test_framer_on_random_bytes_raises_only_sip_errors(chunks):
    framer = StreamFramer(max_size=2000)
    try:
        for chunk in chunks:
            framer.feed(chunk)
    except SIPError:
        pass
