"""Validation of Start/Stop request bodies: which problem gets which code."""

import pytest

from mgateway.calls.errors import ApiError
from mgateway.calls.requests import MAX_ID_LENGTH, parse_start, parse_stop

BASE = {"namespace": "siprec", "guid": "00002542391662063156",
        "customerId": "TT9833237", "agentId": "RE223444211993"}


def code(body):
    with pytest.raises(ApiError) as e:
        parse_start(body, "en-US")
    return e.value.code


def test_spec_example_parses_with_defaults():
    start = parse_start({**BASE, "autotranscribeParams": {"language": "en-US"},
                         "siprecParams": {"mediaLineOrder": "CUSTOMER_FIRST"}}, "en-US")
    assert start.transcribe.language == "en-US"
    assert start.transcribe.redaction_output == "redacted"
    assert start.transcribe.detailed_token is False
    assert start.media_line_order == "CUSTOMER_FIRST"
    assert start.track_map == {"inbound": "customer", "outbound": "agent"}


def test_default_language_comes_from_the_configuration():
    assert parse_start(BASE, "ko-KR").transcribe.language == "ko-KR"


@pytest.mark.parametrize("missing", ["namespace", "guid", "customerId", "agentId"])
def test_missing_required_field_is_400_201(missing):
    body = dict(BASE)
    del body[missing]
    assert code(body) == "400-201"


@pytest.mark.parametrize("body", [
    {**BASE, "namespace": "skype"},
    {**BASE, "namespace": "direct"},  # the direct API's own calls: no Start/Stop reaches them
    {**BASE, "guid": 42},
    {**BASE, "siprecParams": {"mediaLineOrder": "SIDEWAYS"}},
    {**BASE, "twilioParams": {"trackMap": {"inbound": "robot"}}},
    {**BASE, "twilioParams": {"trackMap": {"inbound": "customer", "outbound": "customer"}}},
    {**BASE, "amazonConnectParams": {"startSelectorType": "LATER"}},
    {**BASE, "siprecParams": []},
    ["not", "an", "object"],
    None,
])
def test_gateway_parameter_problems_are_400_201(body):
    assert code(body) == "400-201"


@pytest.mark.parametrize("params", [
    {"language": ""},
    {"detailedToken": "yes"},
    {"redactionOutput": "sometimes"},
    {"detailedToken": True},
    {"detailedToken": True, "redactionOutput": "redacted_and_unredacted"},
    "en-US",
])
def test_transcription_parameter_problems_are_400_202(params):
    assert code({**BASE, "autotranscribeParams": params}) == "400-202"


@pytest.mark.parametrize("given, track_map", [
    ({}, {"inbound": "customer", "outbound": "agent"}),
    ({"inbound": "agent"}, {"inbound": "agent", "outbound": "customer"}),
    ({"outbound": "customer"}, {"inbound": "agent", "outbound": "customer"}),
    ({"inbound": "customer", "outbound": "agent"}, {"inbound": "customer", "outbound": "agent"}),
])
def test_a_track_left_out_of_the_track_map_carries_the_other_participant(given, track_map):
    start = parse_start({**BASE, "twilioParams": {"trackMap": given}}, "en-US")
    assert start.track_map == track_map


def test_detailed_tokens_with_unredacted_output_is_accepted():
    start = parse_start({**BASE, "autotranscribeParams": {
        "detailedToken": True, "redactionOutput": "unredacted"}}, "en-US")
    assert start.transcribe.detailed_token


def test_stop_needs_namespace_and_guid():
    assert parse_stop({"namespace": "twilio", "guid": "CA1"}).guid == "CA1"
    with pytest.raises(ApiError) as e:
        parse_stop({"namespace": "twilio"})
    assert e.value.code == "400-201"


@pytest.mark.parametrize("key", ["guid", "customerId", "agentId"])
@pytest.mark.parametrize("value, problem", [
    ("cust-\udc00", "well-formed Unicode"),
    ("\ud83d", "well-formed Unicode"),
    ("x" * (MAX_ID_LENGTH + 1), "longer than 256"),
    ("cust\x00", "control characters"),
    ("line\nbreak", "control characters"),
])
def test_an_id_that_cannot_be_stored_is_400_201(key, value, problem):
    with pytest.raises(ApiError) as e:
        parse_start({**BASE, key: value}, "en-US")
    assert (e.value.code, key) == ("400-201", e.value.message.split()[0]), e.value.message
    assert problem in e.value.message


@pytest.mark.parametrize("value", ["x" * MAX_ID_LENGTH, "고객-🙂", "CA5b040e075515c424391012acc5a870cf"])
def test_ids_up_to_the_bound_in_any_script_are_accepted(value):
    start = parse_start({**BASE, "guid": value, "customerId": value, "agentId": value}, "en-US")
    assert (start.guid, start.customer_id, start.agent_id) == (value, value, value)
    assert parse_stop({"namespace": "siprec", "guid": value}).guid == value


def test_stop_with_a_lone_surrogate_guid_is_400_201():
    with pytest.raises(ApiError) as e:
        parse_stop({"namespace": "siprec", "guid": "\udfff"})
    assert e.value.code == "400-201"


def test_the_app_that_sent_the_request_is_kept():
    assert parse_start(BASE, "en-US", app="test-app").app == "test-app"
    assert parse_start(BASE, "en-US").app is None
