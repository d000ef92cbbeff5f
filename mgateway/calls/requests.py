# -*- test-case-name: tests.test_start_request,tests.test_call_registry -*-
"""
Parsing and validation of Start/Stop API request bodies into values.

Which code a problem gets follows the spec: the media gateway's own fields
(namespace, guid, participant ids, per-ingress params) are 400-201; the
transcription settings in C{autotranscribeParams} are 400-202.
"""

from __future__ import annotations

import unicodedata
from typing import Any, Callable

import attrs

from mgateway.calls.errors import bad_parameter, bad_transcribe_parameter
from mgateway.calls.namespaces import API_NAMESPACES

REDACTION_OUTPUTS = ("redacted", "unredacted", "redacted_and_unredacted")
MEDIA_LINE_ORDERS = ("CUSTOMER_FIRST", "AGENT_FIRST")
START_SELECTORS = ("NOW", "FRAGMENT_NUMBER")
#: The most characters an id may have (guid, customerId, agentId, externalId).
#: The platforms' own ids are a few dozen characters (a Twilio CallSid 34, a
#: UUID 36, a UCID 20); the bound keeps a client from filling the store's
#: keys and the logs.
MAX_ID_LENGTH = 256


class TranscribeRuleBroken(ValueError):
    """
    Transcription settings the spec forbids. C{field} names the setting at
    fault (C{redactionOutput}, C{smartFormatting}, C{detailedToken}) so each
    API answers in its own terms: the REST API with 400-202, the direct API
    with 4040, 4092 or 4093.
    """

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@attrs.frozen
class TranscribeParams:
    """
    What to transcribe and how, with the spec's defaults applied: the REST
    API's C{autotranscribeParams} and the direct API's C{startStream} alike.
    Constructing one checks the spec's rules (L{TranscribeRuleBroken}):
    redaction works only on smart-formatted text without word tokens.
    """

    language: str
    detailed_token: bool = False
    audio_recording_allowed: bool = False
    redaction_output: str = "redacted"
    smart_formatting: bool = True

    def __attrs_post_init__(self) -> None:
        if self.redaction_output not in REDACTION_OUTPUTS:
            raise TranscribeRuleBroken(
                "redactionOutput",
                f"redactionOutput must be one of {', '.join(REDACTION_OUTPUTS)}; "
                f"got {self.redaction_output!r}",
            )
        if self.redaction_output != "unredacted" and not self.smart_formatting:
            raise TranscribeRuleBroken(
                "smartFormatting", "redaction needs smartFormatting=true (or redactionOutput \"unredacted\")"
            )
        if self.redaction_output != "unredacted" and self.detailed_token:
            raise TranscribeRuleBroken(
                "detailedToken", "detailedToken=true requires redactionOutput \"unredacted\""
            )


@attrs.frozen
class StartRequest:
    namespace: str
    guid: str
    customer_id: str
    agent_id: str
    transcribe: TranscribeParams
    #: C{twilioParams.trackMap}: track name -> role.
    track_map: dict = attrs.field(factory=lambda: {"inbound": "customer", "outbound": "agent"})
    #: C{siprecParams.mediaLineOrder}, or None when the request gave none.
    media_line_order: str | None = None
    #: C{amazonConnectParams}, as given (validated for types and enums).
    amazon_connect: dict = attrs.field(factory=dict)
    #: The C{asapp-api-id} of the app that sent the request.
    app: str | None = None

    def sender_id(self, role: str) -> str:
        return self.customer_id if role == "customer" else self.agent_id


@attrs.frozen
class StopRequest:
    namespace: str
    guid: str


def _object(body: Any, name: str, error: Callable) -> dict:
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise error(f"{name} must be a JSON object")
    return body


def _string(body: dict, key: str, *, required: bool, error=bad_parameter, name=None) -> str | None:
    name = name or key
    value = body.get(key)
    if value is None:
        if required:
            raise error(f"{name} is required")
        return None
    if not isinstance(value, str) or not value.strip():
        raise error(f"{name} must be a non-empty string")
    return value


def check_id(value: Any, name: str, error: Callable[[str], Exception]) -> str:
    """
    C{value} if it is an id the gateway can store, post and log: a non-empty
    string of at most L{MAX_ID_LENGTH} characters, well-formed Unicode (no
    lone UTF-16 surrogate, which JSON's C{\\udc00} escapes can carry and
    UTF-8 cannot) and free of control characters (PostgreSQL text refuses
    NUL). Shared by every edge that takes an id from a client.

    @raise Exception: C{error(message)} otherwise.
    """
    if not isinstance(value, str) or not value:
        raise error(f"{name} must be a non-empty string")
    if len(value) > MAX_ID_LENGTH:
        raise error(f"{name} is longer than {MAX_ID_LENGTH} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise error(f"{name} is not well-formed Unicode (a lone surrogate)") from None
    if any(unicodedata.category(c) == "Cc" for c in value):
        raise error(f"{name} must not contain control characters")
    return value


def _id(body: dict, key: str) -> str:
    """A required id field of the request body."""
    return check_id(_string(body, key, required=True), key, bad_parameter)


def _choice(body: dict, key: str, choices, default, error, name: str):
    value = body.get(key, default)
    if value is None:
        return default
    if value not in choices:
        raise error(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def _bool(body: dict, key: str, name: str, default: bool = False) -> bool:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise bad_transcribe_parameter(f"{name} must be true or false")
    return value


def _call_key(body: Any) -> tuple[str, str]:
    body = _object(body, "request body", bad_parameter)
    namespace = _string(body, "namespace", required=True)
    if namespace not in API_NAMESPACES:
        raise bad_parameter(f"namespace must be one of {', '.join(API_NAMESPACES)}; got {namespace!r}")
    return namespace, _id(body, "guid")


def parse_start(body: Any, default_language: str, app: str | None = None) -> StartRequest:
    namespace, guid = _call_key(body)
    customer_id = _id(body, "customerId")
    agent_id = _id(body, "agentId")

    params = _object(body.get("autotranscribeParams"), "autotranscribeParams", bad_transcribe_parameter)
    language = _string(
        params, "language", required=False, error=bad_transcribe_parameter,
        name="autotranscribeParams.language",
    ) or default_language
    detailed = _bool(params, "detailedToken", "autotranscribeParams.detailedToken")
    recording = _bool(params, "audioRecordingAllowed", "autotranscribeParams.audioRecordingAllowed")
    redaction = params.get("redactionOutput")
    smart = _bool(params, "smartFormatting", "autotranscribeParams.smartFormatting", default=True)
    try:
        transcribe = TranscribeParams(
            language, detailed, recording, "redacted" if redaction is None else redaction, smart
        )
    except TranscribeRuleBroken as e:
        raise bad_transcribe_parameter(f"autotranscribeParams.{e}") from None

    twilio = _object(body.get("twilioParams"), "twilioParams", bad_parameter)
    track_map_in = _object(twilio.get("trackMap"), "twilioParams.trackMap", bad_parameter)
    given = {
        track: _choice(track_map_in, track, ("customer", "agent"), None, bad_parameter,
                       f"twilioParams.trackMap.{track}")
        for track in ("inbound", "outbound")
    }
    # A track left out carries the other participant (none given: inbound is the customer).
    other = {"customer": "agent", "agent": "customer"}
    inbound = given["inbound"] or (other[given["outbound"]] if given["outbound"] else "customer")
    track_map = {"inbound": inbound, "outbound": given["outbound"] or other[inbound]}
    if track_map["inbound"] == track_map["outbound"]:
        raise bad_parameter(
            f"twilioParams.trackMap maps both tracks to {track_map['inbound']}: "
            "one track must be the customer and the other the agent"
        )

    siprec = _object(body.get("siprecParams"), "siprecParams", bad_parameter)
    order = _choice(siprec, "mediaLineOrder", MEDIA_LINE_ORDERS, None, bad_parameter,
                    "siprecParams.mediaLineOrder")

    connect = _object(body.get("amazonConnectParams"), "amazonConnectParams", bad_parameter)
    for key in ("streamArn", "afterFragmentNumber"):
        _string(connect, key, required=False, name=f"amazonConnectParams.{key}")
    _choice(connect, "startSelectorType", START_SELECTORS, "NOW", bad_parameter,
            "amazonConnectParams.startSelectorType")

    return StartRequest(
        namespace=namespace,
        guid=guid,
        customer_id=customer_id,
        agent_id=agent_id,
        transcribe=transcribe,
        track_map=track_map,
        media_line_order=order,
        amazon_connect=dict(connect),
        app=app,
    )


def parse_stop(body: Any) -> StopRequest:
    return StopRequest(*_call_key(body))
