"""SIPREC bodies: multipart splitting and RFC 7865 metadata in the vendors' dialects."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mgateway.sip.errors import ParseError, SIPError, UnsupportedMediaType
from mgateway.sip.metadata import merge, parse_metadata, participants_for_labels
from mgateway.sip.multipart import parse_content_type, parse_multipart, recording_parts
from mgateway.sip.sdp import parse_sdp
from tests.support.siprec_samples import BODIES, FULL_INVITE, body_content_type, sample


def sample_parts(name):
    body = sample(name)
    if name == FULL_INVITE:
        head, _, body = body.partition(b"\r\n\r\n")
        return recording_parts("multipart/mixed;boundary=Itro-wXyZ-bdry", body)
    return recording_parts(body_content_type(body), body)


def speakers(name):
    """(label, aor, name) of each m-line's speaker."""
    sdp, metadata_bytes = sample_parts(name)
    labels = [m.label for m in parse_sdp(sdp).media]
    metadata = parse_metadata(metadata_bytes)
    return [(label, p.aor if p else None, p.name if p else None)
            for label, p in zip(labels, participants_for_labels(metadata, labels))]


# --- every real body ------------------------------------------------------

EXPECTED_SPEAKERS = {
    "drachtio_acme_fronting_avaya_ucid_body.txt": [
        ("201835599", "sip:31624895902@10.10.128.62", "31624895902"),
        ("201835600", "sip:33187164021@sip.webhelpgroupe.lan", "33187164021"),
    ],
    "drachtio_avaya_sbce_body.txt": [
        ("10", "sip:9878942259@212.188.68.145", None),
        ("20", "sip:ASBCE@asbce.com", None),
    ],
    "drachtio_cisco_cube_body.txt": [
        ("1", "sip:7301@35.162.237.204", None),
        ("2", "sip:7300@35.162.237.204", "7300"),
    ],
    "drachtio_cisco_cube_inactive_body.txt": [
        ("1", "sip:0733165805@192.168.40.34", None),
        ("2", "sip:+972546136443@192.168.10.140", None),
    ],
    "drachtio_connectel_opensips_body.txt": [
        ("1", "sip:0771121212@52.57.92.239", "test_user;lang=en-US;id=22"),
        ("2", "sip:0760516936@sip-cust1.connectel.io", None),
    ],
    "drachtio_oracle_acme_body.txt": [
        ("16777227", "sip:9000@192.168.50.102", "9000"),
        ("16777228", "sip:1002@192.168.50.10", "1002"),
    ],
    # Ribbon lists the participants in the other order than the streams.
    "drachtio_ribbon_sonus_body.txt": [
        ("1", "2249888012@172.16.195.72", None),
        ("2", "2249888500@172.16.198.55", "Extension 8500"),
    ],
    "drachtio_sems_procomm_body.txt": [
        ("a_leg", "sip:016190200@87.252.209.116", "016190200"),
        ("b_leg", "Extension-016190619@speechpath.ie", "Speechpath-Main-Line 016190619"),
    ],
    FULL_INVITE: [("1", "4058327108@10.105.190.136:5060", None)],
}


@pytest.mark.parametrize("name", sorted(EXPECTED_SPEAKERS))
def test_each_sample_maps_its_labels_to_the_right_speakers(name):
    assert speakers(name) == EXPECTED_SPEAKERS[name]


def test_every_sample_body_is_covered():
    assert set(BODIES) - set(EXPECTED_SPEAKERS) == {"drachtio_broadworks_body_mangled.txt"}


@pytest.mark.parametrize("name, session_id, data_mode", [
    ("drachtio_acme_fronting_avaya_ucid_body.txt", "0rBXFi0CTBB0j8HyGBBrlg==", "complete"),
    ("drachtio_avaya_sbce_body.txt", "00FA0800705D4C5DCAAC41", "complete"),
    ("drachtio_cisco_cube_body.txt", "kQNhKFdEEeeJ9tD/VsPGWA==", "complete"),
    ("drachtio_oracle_acme_body.txt", "AavRXwIIQj1Q39eJulTipQ==", "complete"),
    ("drachtio_ribbon_sonus_body.txt", "MTQ3YzA3YzEtNjdkNy0xMA==", "complete"),
    (FULL_INVITE, "ZGI2NDQ1MzItODBmOC00ZDBhLTlhMDMtNjg2", "complete"),
])
def test_session_ids_and_data_mode_in_both_spellings(name, session_id, data_mode):
    metadata = parse_metadata(sample_parts(name)[1])
    assert (metadata.session_id, metadata.data_mode) == (session_id, data_mode)


def test_cisco_session_carries_the_sip_session_id():
    metadata = parse_metadata(sample_parts("drachtio_cisco_cube_body.txt")[1])
    assert metadata.sessions[0].sip_session_id == (
        "e9fffff2020a598b86962867715db0cf;remote=cd0f7093d62c5f0697098fd69a4aa57b")
    assert metadata.sessions[0].start_time == "2017-06-23T12:16:06.040Z"


def test_rfc_stream_associations_give_send_and_recv():
    metadata = parse_metadata(sample_parts("drachtio_cisco_cube_body.txt")[1])
    caller = metadata.participant_for_label("1")
    assert caller.send == ("kQOH5VdEEeeJ/ND/VsPGWA==",)
    assert caller.recv == ("kQOH5VdEEeeJ/dD/VsPGWA==",)


def test_associations_without_streams_fall_back_to_participant_order():
    metadata = parse_metadata(sample_parts("drachtio_cisco_cube_inactive_body.txt")[1])
    assert metadata.participant_for_label("1") is None
    assert [p.send for p in metadata.participants] == [(), ()]


def test_draft_dialect_reads_send_inside_participant_and_the_calling_flag():
    metadata = parse_metadata(sample_parts("drachtio_oracle_acme_body.txt")[1])
    assert [(p.aor, p.send, p.calling) for p in metadata.participants] == [
        ("sip:9000@192.168.50.102", ("Q4O8SGLQSilXHUGQX2zd8Q==",), True),
        ("sip:1002@192.168.50.10", ("l1NyQy8ORSlouUj2G3UE/A==",), False),
    ]
    assert [(s.stream_id, s.label) for s in metadata.streams] == [
        ("Q4O8SGLQSilXHUGQX2zd8Q==", "16777227"), ("l1NyQy8ORSlouUj2G3UE/A==", "16777228")]


def test_oracle_extension_data_is_kept_by_local_name_and_header_label():
    metadata = parse_metadata(sample_parts("drachtio_acme_fronting_avaya_ucid_body.txt")[1])
    assert metadata.sessions[0].extensions == {"ucid": "00FA081003B9CF5E7DF7E5;encoding=hex", "callerorig": "true"}
    caller = metadata.participants[0]
    assert caller.extensions["header:call-id"] == "134485702_44821128@10.10.128.62"
    assert caller.extensions["realm"] == "Avaya-GR-REC"
    assert metadata.extension("header:call-id") == "134485702_44821128@10.10.128.62"


def test_ribbon_call_data_is_group_extension_data():
    metadata = parse_metadata(sample_parts("drachtio_ribbon_sonus_body.txt")[1])
    assert metadata.groups[0].extensions["gcid"] == "241205267"
    assert metadata.groups[0].extensions["callid"] == "2da553f7-a48b-1235-d6a2-5254003a4988"
    assert metadata.groups[0].extensions["fromhdr"] == (
        '"Extension 8500" <sip:2249888500@172.16.198.55>;tag=SerryvK5ej0jc')


def test_intrado_role_marks_the_calling_participant():
    metadata = parse_metadata(sample_parts(FULL_INVITE)[1])
    (participant,) = metadata.participants
    assert participant.calling is True
    assert participant.extensions["channel"] == "SIP/911202-073e"
    assert participant.send == participant.recv == ("ZDY2YTc1YTMtYTAzZi00ZDQwLTkzNmYtYTFm",)


def test_mangled_broadworks_body_still_yields_its_sdp_and_an_empty_model():
    """
    Documented fallback: the part is found by its recording-session disposition
    although its Content-Type is mangled; its XML is well formed but has lost
    every element, so the model is empty and speakers fall back to m-line order.
    """
    sdp, metadata_bytes = sample_parts("drachtio_broadworks_body_mangled.txt")
    assert parse_sdp(sdp).media[0].label == "1"
    metadata = parse_metadata(metadata_bytes)
    assert (metadata.sessions, metadata.participants, metadata.streams) == ((), (), ())
    assert participants_for_labels(metadata, ["1"]) == [None]


BROADWORKS_STYLE = b"""<?xml version="1.0" encoding="UTF-8"?>
<recording_metadata xmlns="urn:ietf:params:xml:ns:siprec"><dataMode>complete</dataMode>
<recording id="urn:uuid:r1"><requestor>SRC</requestor><type>selective</type></recording>
<group id="urn:uuid:g1" parent="urn:uuid:r1"><initiator>sip:2001</initiator></group>
<session id="urn:uuid:s1" group="urn:uuid:g1"><start-time>2024-05-01T10:00:00Z</start-time></session>
<participant id="urn:uuid:p1" session="urn:uuid:s1"><aor>sip:+15550001@example.net</aor>
  <send><id>urn:uuid:m1</id></send></participant>
<participant id="urn:uuid:p2" session="urn:uuid:s1"><aor>sip:2001@example.net</aor>
  <send><id>urn:uuid:m1</id></send></participant>
<stream id="urn:uuid:m1" session="urn:uuid:s1"><label>1</label><mode>mixed</mode></stream>
<extensiondata id="urn:uuid:e1" parent="urn:uuid:s1">
 <broadWorksRecordingMetadata xmlns="http://schema.broadsoft.com/broadworksCallRecording" version="3.0">
  <extTrackingID>4711:1</extTrackingID><callID>callhalf-123:0</callID>
  <callType><origCall><callingPartyNumber>sip:+15550001@example.net</callingPartyNumber></origCall></callType>
 </broadWorksRecordingMetadata></extensiondata>
</recording_metadata>"""


def test_broadworks_dialect_with_nested_send_ids_and_parented_extension_data():
    metadata = parse_metadata(BROADWORKS_STYLE)
    assert metadata.session_id == "urn:uuid:s1"
    assert [(p.aor, p.send) for p in metadata.participants] == [
        ("sip:+15550001@example.net", ("urn:uuid:m1",)), ("sip:2001@example.net", ("urn:uuid:m1",))]
    assert metadata.participant_for_label("1").aor == "sip:+15550001@example.net", "mixed stream: first sender"
    assert metadata.sessions[0].extensions["exttrackingid"] == "4711:1"
    assert metadata.sessions[0].extensions["callid"] == "callhalf-123:0"
    assert metadata.extensions["requestor"] == "SRC"


def test_metaswitch_style_root_with_id_attribute_and_mixed_stream():
    metadata = parse_metadata(b"""<recording id="rec1" xmlns="urn:ietf:params:xml:ns:recording">
      <datamode>complete</datamode><session id="s1"/>
      <participant id="p1" session="s1"><nameID aor="sip:100@pbx"/><send>st1</send><recv>st1</recv></participant>
      <stream id="st1" session="s1"><label>1</label></stream>
      <extensiondata><metaswitchRecordingMetadata><callType>originating</callType></metaswitchRecordingMetadata>
      </extensiondata></recording>""")
    assert metadata.participant_for_label("1").aor == "sip:100@pbx"
    assert metadata.extensions["calltype"] == "originating"


# --- partial updates --------------------------------------------------------

CUBE_TRANSFER = b"""<?xml version="1.0" encoding="UTF-8"?>
<recording xmlns="urn:ietf:params:xml:ns:recording:1">
<datamode>partial</datamode>
<participant participant_id="NEW-AGENT"><nameID aor="sip:7400@35.162.237.204"><name>7400</name></nameID></participant>
<participantsessionassoc participant_id="kQNhKFdEEeeJ+ND/VsPGWA==" session_id="kQNhKFdEEeeJ9tD/VsPGWA==">
<disassociate-time>2017-06-23T12:20:00Z</disassociate-time>
</participantsessionassoc>
<participantstreamassoc participant_id="NEW-AGENT">
<send>kQOH5VdEEeeJ/dD/VsPGWA==</send><recv>kQOH5VdEEeeJ/ND/VsPGWA==</recv>
</participantstreamassoc>
</recording>"""


def test_partial_update_merges_by_id_and_the_new_sender_takes_the_stream():
    base = parse_metadata(sample_parts("drachtio_cisco_cube_body.txt")[1])
    update = parse_metadata(CUBE_TRANSFER)
    assert update.data_mode == "partial"
    merged = merge(base, update)
    assert merged.data_mode == "complete"
    assert [p.aor for p in merged.participants] == [
        "sip:7301@35.162.237.204", "sip:7300@35.162.237.204", "sip:7400@35.162.237.204"]
    departed = merged.participants[1]
    assert departed.disassociate_time == "2017-06-23T12:20:00Z"
    assert departed.send == ("kQOH5VdEEeeJ/dD/VsPGWA==",), "unstated fields are kept"
    assert departed.name == "7300"
    assert merged.participant_for_label("2").aor == "sip:7400@35.162.237.204"
    assert merged.participant_for_label("1").aor == "sip:7301@35.162.237.204"
    assert [s.label for s in merged.streams] == ["1", "2"]
    assert participants_for_labels(merged, ["1", "2"])[1].name == "7400"


def test_complete_update_replaces_the_model():
    dummy = parse_metadata(sample_parts("drachtio_avaya_sbce_body.txt")[1])
    real = parse_metadata(sample_parts("drachtio_oracle_acme_body.txt")[1])
    assert merge(dummy, real) == real
    assert merge(None, dummy) == dummy


# --- hostile and broken XML ------------------------------------------------

@pytest.mark.parametrize("document", [
    b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]><recording>&b;</recording>',
    b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><recording>&x;</recording>',
    b'<recording><participant participant_id="p">',
    b"v=0\r\n",
    b"",
    b'<other xmlns="urn:ietf:params:xml:ns:recording:1"/>',
    b"<recording>" + b"<a>" * 200 + b"</a>" * 200 + b"</recording>",
    b'<?xml version="1.0" encoding="no-such-codec"?><recording/>',
])
def test_hostile_or_broken_metadata_is_bad_request(document):
    with pytest.raises(ParseError) as caught:
        parse_metadata(document)
    assert caught.value.status == 400


def test_entities_are_never_expanded():
    with pytest.raises(ParseError, match="DTD|Entit"):
        parse_metadata(b'<!DOCTYPE recording [<!ENTITY who "sip:evil@x">]>'
                       b'<recording><participant id="p"><aor>&who;</aor></participant></recording>')


@settings(max_examples=300)
@given(st.binary(max_size=800))
def test_random_bytes_as_metadata_raise_only_sip_errors(data):
    try:
        parse_metadata(data)
    except SIPError:
        pass


@settings(max_examples=300)
@given(st.data())
def test_damaged_real_metadata_parses_or_raises_only_sip_errors(data):
    document = bytearray(sample_parts(data.draw(st.sampled_from(sorted(EXPECTED_SPEAKERS))))[1])
    for _ in range(data.draw(st.integers(1, 6))):
        position = data.draw(st.integers(0, len(document) - 1))
        document[position:position + data.draw(st.integers(0, 4))] = data.draw(
            st.sampled_from([b"<", b">", b"/", b'"', b"", b"&", b"<send>", b"</participant>", b"id=", b"x"]))
    try:
        metadata = parse_metadata(bytes(document))
        participants_for_labels(metadata, ["1", "2", None])
        metadata.extension("ucid")
    except SIPError:
        pass


# --- multipart bodies -------------------------------------------------------

SDP_PART = b"Content-Type: application/sdp\r\n\r\nv=0\r\nm=audio 1 RTP/AVP 0\r\n"
XML_PART = b"Content-Type: application/rs-metadata+xml\r\nContent-Disposition: recording-session\r\n\r\n<recording/>"


def test_quoted_boundary_with_space_and_any_part_order():
    body = b"--b 1\r\n" + XML_PART + b"\r\n--b 1\r\n" + SDP_PART + b"\r\n--b 1--\r\n"
    sdp, metadata = recording_parts('multipart/mixed; boundary="b 1"', body)
    assert sdp == b"v=0\r\nm=audio 1 RTP/AVP 0\r\n"
    assert metadata == b"<recording/>"


def test_preamble_epilogue_and_extra_parts_are_ignored():
    body = (b"This is a preamble\r\n--xyz\r\n" + SDP_PART + b"\r\n--xyz\r\n"
            b"Content-Type: application/gtd\r\n\r\nIAM,\r\nGCI,00\r\n--xyz\r\n" + XML_PART
            + b"\r\n--xyz--\r\nepilogue --xyz\r\n")
    parts = parse_multipart(parse_content_type("multipart/mixed;boundary=xyz"), body)
    assert [p.content_type.media_type for p in parts] == ["application/sdp", "application/gtd",
                                                          "application/rs-metadata+xml"]
    assert parts[2].disposition == "recording-session"
    assert recording_parts("multipart/mixed;boundary=xyz", body) == (
        b"v=0\r\nm=audio 1 RTP/AVP 0\r\n", b"<recording/>")


def test_parts_without_content_type_are_sniffed_and_a_missing_close_is_tolerated():
    body = b"--q\r\n\r\nv=0\r\n--q\r\nContent-Disposition: recording-session\r\n\r\n<recording/>\r\n"
    assert recording_parts("multipart/mixed;boundary=q", body) == (b"v=0", b"<recording/>\r\n")


def test_rs_metadata_without_xml_suffix_is_metadata():
    body = sample("drachtio_sems_procomm_body.txt")
    _, metadata = recording_parts(body_content_type(body), body)
    assert metadata.startswith(b'<?xml version="1.0"')


def test_single_part_bodies():
    assert recording_parts("application/sdp", b"v=0\r\n") == (b"v=0\r\n", None)
    assert recording_parts("Application/RS-Metadata+XML", b"<recording/>") == (None, b"<recording/>")
    assert recording_parts(None, b"") == (None, None)


@pytest.mark.parametrize("content_type, body", [
    ("text/plain", b"hello"),
    (None, b"v=0\r\n"),
    ("multipart/mixed;boundary=z", b"--z\r\nContent-Type: text/plain\r\n\r\nhi\r\n--z--"),
])
def test_bodies_without_sdp_or_metadata_are_415(content_type, body):
    with pytest.raises(UnsupportedMediaType) as caught:
        recording_parts(content_type, body)
    assert caught.value.status == 415


@pytest.mark.parametrize("content_type, body", [
    ("multipart/mixed", b"--z\r\n" + SDP_PART),
    ("multipart/mixed;boundary=other", b"--z\r\n" + SDP_PART),
    ("not a type", b"x"),
])
def test_broken_multipart_is_bad_request(content_type, body):
    with pytest.raises(ParseError):
        recording_parts(content_type, body)


@settings(max_examples=300)
@given(st.binary(max_size=400), st.sampled_from(["multipart/mixed;boundary=z", 'multipart/mixed; boundary="a b"']))
def test_random_multipart_bodies_raise_only_sip_errors(body, content_type):
    try:
        recording_parts(content_type, b"--z\r\n" + body)
    except SIPError:
        pass


@pytest.mark.parametrize("prefix", ["ac", "apkt"])
def test_undeclared_vendor_prefixes_are_tolerated_and_the_metadata_kept(prefix):
    """AudioCodes' manuals print C{ac:} tags without declaring the prefix; so do some Oracle templates with C{apkt:}."""
    document = f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- as the SBC sends it -->
<recording xmlns="urn:ietf:params:xml:ns:recording">
  <datamode>complete</datamode>
  <session id="s1"><extensiondata>
    <{prefix}:AvayaUCID>FA080019001038F725B3</{prefix}:AvayaUCID>
  </extensiondata></session>
  <participant id="p1"><nameID aor="sip:agent@example.com"/></participant>
</recording>""".encode()
    metadata = parse_metadata(document)
    assert metadata.session_id == "s1"
    assert metadata.extension("avayaucid") == "FA080019001038F725B3"
    assert [p.aor for p in metadata.participants] == ["sip:agent@example.com"]


def test_an_unknown_undeclared_prefix_is_still_bad_request():
    with pytest.raises(ParseError, match="unbound prefix"):
        parse_metadata(b'<recording xmlns="urn:ietf:params:xml:ns:recording"><xx:a>1</xx:a></recording>')
