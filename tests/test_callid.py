"""The call's guid from vendor headers and recording metadata."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mgateway.sip.callid import CallId, check_order, cisco_guid, decode_ucid, extract_call_id
from mgateway.sip.message import parse_message
from mgateway.sip.metadata import parse_metadata
from mgateway.sip.multipart import recording_parts
from tests.support.siprec_samples import FULL_INVITE, body_content_type, invite_around, sample

SPEC_AVAYA_GUID = "00002542391662063156"
SPEC_CISCO_GUID = "0867617078-0032318833-2221801472-0002236962"


def sample_invite(name, extra_headers=""):
    body = sample(name)
    request = parse_message(invite_around(body, body_content_type(body), extra_headers))
    _, metadata = recording_parts(request.content_type, request.body)
    return request, parse_metadata(metadata)


def test_ucid_decodes_to_node_sequence_and_time_digits():
    # 0x0002 = node 2, 0xD3DF = sequence 54239, 0x63111234 = 1662063156 (2022-09-01T20:12:36Z)
    assert decode_ucid("00FA080002D3DF63111234;encoding=hex") == SPEC_AVAYA_GUID


@pytest.mark.parametrize("uui, guid", [
    ("00FA080001000758A20EFA;encoding=hex", "00001000071487015674"),
    ("00fa081003b9cf5e7df7e5", "04099475671585313765"),
    ("FA080019001038F725B3", "00025000160955721139"),
    ("04C8020102FA080001000758A20EFA;encoding=hex", "00001000071487015674"),
])
def test_ucid_is_found_with_or_without_discriminator_and_after_other_elements(uui, guid):
    assert decode_ucid(uui) == guid


@pytest.mark.parametrize("uui", ["", "00", "00FA07000100075", "zz", "00C8020102", "00FA08000100"])
def test_text_without_a_ucid_element_decodes_to_none(uui):
    assert decode_ucid(uui) is None


@given(st.text(max_size=60))
def test_ucid_decoding_never_raises(text):
    result = decode_ucid(text)
    assert result is None or (len(result) == 20 and result.isdigit())


def test_cisco_guid_forms():
    assert cisco_guid("33B6C93601ED2571846E000000222222") == SPEC_CISCO_GUID
    assert cisco_guid("867617078-32318833-2221801472-2236962") == SPEC_CISCO_GUID
    assert cisco_guid("33b6c936-01ed-2571-846e-000000222222") == SPEC_CISCO_GUID
    assert cisco_guid("0648881792-0000065536-0000001647-0185272330") == "0648881792-0000065536-0000001647-0185272330"
    assert cisco_guid("4294967296-1-1-1") is None
    assert cisco_guid("not a guid") is None


def test_avaya_ucid_from_the_user_to_user_header():
    request, metadata = sample_invite("drachtio_avaya_sbce_body.txt",
                                      "User-to-User: 00FA080002D3DF63111234;encoding=hex\r\n")
    assert extract_call_id(request, metadata) == CallId(SPEC_AVAYA_GUID, "uui")


def test_oracle_ucid_in_session_extension_data():
    request, metadata = sample_invite("drachtio_acme_fronting_avaya_ucid_body.txt")
    assert extract_call_id(request, metadata) == CallId("04099475671585313765", "ucid")


def test_audiocodes_avaya_ucid_without_leading_zero_byte():
    request, _ = sample_invite("drachtio_oracle_acme_body.txt")
    metadata = parse_metadata(b"""<recording xmlns="urn:ietf:params:xml:ns:recording" xmlns:ac="http://AudioCodes">
        <session id="s"><extensiondata>
          <ac:AvayaUCID xmlns="urn:ietf:params:xml:ns:Avaya">FA080019001038F725B3</ac:AvayaUCID>
          <ac:GenesysUUID xmlns="urn:ietf:params:xml:ns:Genesys">4BOKLLA3VH66JF112M1CC9VHKS14F0KP</ac:GenesysUUID>
        </extensiondata></session></recording>""")
    assert extract_call_id(request, metadata) == CallId("00025000160955721139", "ucid")
    assert extract_call_id(request, metadata, order=["genesys"]) == CallId(
        "4BOKLLA3VH66JF112M1CC9VHKS14F0KP", "genesys")


def test_cisco_guid_from_the_gtd_part_of_a_cube_invite():
    request, metadata = sample_invite("drachtio_cisco_cube_body.txt")
    # GCI,91036128574411e789f9d0ff56c3c658 as four decimal words
    assert extract_call_id(request, metadata) == CallId("2432917800-1464078823-2314850559-1455670872", "cisco-guid")


def test_cisco_guid_header_wins_over_the_gtd_part():
    request, metadata = sample_invite("drachtio_cisco_cube_body.txt", f"Cisco-Guid: {SPEC_CISCO_GUID}\r\n")
    assert extract_call_id(request, metadata) == CallId(SPEC_CISCO_GUID, "cisco-guid")


def test_ribbon_gcid():
    request, metadata = sample_invite("drachtio_ribbon_sonus_body.txt")
    assert extract_call_id(request, metadata) == CallId("241205267", "gcid")


def test_genesys_conversation_header():
    request, metadata = sample_invite("drachtio_sems_procomm_body.txt",
                                      "X-GenesysConversationID: 9b6f2f0e-4d1c-4b7a-9a57-2b8a1f0c1d2e\r\n")
    assert extract_call_id(request, metadata) == CallId("9b6f2f0e-4d1c-4b7a-9a57-2b8a1f0c1d2e", "genesys")


def test_configured_header_directly_or_copied_into_metadata():
    request, metadata = sample_invite("drachtio_sems_procomm_body.txt", "X-Customer-Call: cc-1234\r\n")
    assert extract_call_id(request, metadata, custom_header="x-customer-call") == CallId("cc-1234", "header")
    oracle_request, oracle_metadata = sample_invite("drachtio_acme_fronting_avaya_ucid_body.txt")
    assert extract_call_id(oracle_request, oracle_metadata, order=["header"], custom_header="Call-ID") == CallId(
        "134485702_44821128@10.10.128.62", "header")


def test_metadata_session_id_and_avaya_sbce_ucid_session_id():
    request, metadata = sample_invite("drachtio_sems_procomm_body.txt")
    assert extract_call_id(request, metadata) == CallId("ho9aUhEQTRS+31th7sHStA==", "session-id")
    sbce_request, sbce_metadata = sample_invite("drachtio_avaya_sbce_body.txt")
    assert extract_call_id(sbce_request, sbce_metadata) == CallId("00112238841573563457", "session-id")


def test_source_order_is_configurable():
    request, metadata = sample_invite("drachtio_acme_fronting_avaya_ucid_body.txt",
                                      "User-to-User: 00FA080002D3DF63111234;encoding=hex\r\n")
    assert extract_call_id(request, metadata).source == "uui"
    assert extract_call_id(request, metadata, order=["session-id", "uui"]) == CallId(
        "0rBXFi0CTBB0j8HyGBBrlg==", "session-id")
    assert extract_call_id(request, metadata, order=["ucid", "uui"]) == CallId("04099475671585313765", "ucid")


def test_without_any_source_the_sip_call_id_is_the_guid():
    request = parse_message(sample(FULL_INVITE))
    assert extract_call_id(request, None, order=["uui", "ucid", "cisco-guid", "gcid"]) == CallId(
        "6c953981285cde0446619ca30087d35a@10.106.2.10:5060", "call-id")


def test_unknown_source_names_are_refused():
    with pytest.raises(ValueError, match="nonsense"):
        check_order(["uui", "nonsense"])
    check_order(["uui", "header", "session-id"])


@pytest.mark.parametrize("ucid", [
    "00391770615DEF95",  # Oracle/Acme: the bare UCID element, as a real capture carries it
    "00FA0800391770615DEF95;encoding=hex",
    "FA0800391770615DEF95",
    "00057060001633546133",  # already decimal
])
def test_every_form_of_an_oracle_ucid_files_the_call_under_its_decimal_form(ucid):
    request, _ = sample_invite("drachtio_oracle_acme_body.txt")
    metadata = parse_metadata(f"""<recording xmlns="urn:ietf:params:xml:ns:recording"
        xmlns:apkt="http://acmepacket.com/siprec/extensiondata"><session id="s"><extensiondata>
        <apkt:ucid>{ucid}</apkt:ucid></extensiondata></session></recording>""".encode())
    assert extract_call_id(request, metadata) == CallId("00057060001633546133", "ucid")
