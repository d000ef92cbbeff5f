"""The HTTP Message Signature on AudioHook upgrade requests (RFC 9421, hmac-sha256)."""

import pytest
from hypothesis import given, strategies as st

from mgateway.ingress.audiohook.signature import (
    NonceCache,
    SignatureError,
    VerifiedClient,
    sign_upgrade,
    upgrade_signature_base,
    verify_upgrade,
)
from mgateway.ingress.audiohook.upgrade import AUTH_FAILURE_SECONDS, Refusal, UpgradeGate
from tests.support.audiohook_client import (
    API_KEY,
    AUTHORITY,
    CLIENT_SECRET,
    CORRELATION_ID,
    ORGANIZATION_ID,
    PATH,
    SESSION_ID,
    AudioHookClient,
)

# The documented upgrade request and its test vector, verbatim.
DOCUMENTED_HEADERS = {
    "Host": "audiohook.example.com",
    "Connection": "Upgrade",
    "Upgrade": "websocket",
    "Sec-WebSocket-Key": "SSdtIGEgV2ViU29ja2V0IQ==",
    "Sec-WebSocket-Version": "13",
    "User-Agent": "GenesysCloud-AudioHook-Client",
    "Audiohook-Organization-Id": "d7934305-0972-4844-938e-9060eef73d05",
    "Audiohook-Correlation-Id": "e160e428-53e2-487c-977d-96989bf5c99d",
    "Audiohook-Session-Id": "30b0e395-84d3-4570-ac13-9a62d8f514c0",
    "X-API-KEY": "SGVsbG8sIEkgYW0gdGhlIEFQSSBrZXkh",
    "Signature": "sig1=:NZBwyBHRRyRoeLqy1IzOa9VYBuI8TgMFt2GRDkDuJh4=:",
    "Signature-Input": 'sig1=("@request-target" "@authority" "audiohook-organization-id" "audiohook-session-id" '
                       '"audiohook-correlation-id" "x-api-key");keyid="SGVsbG8sIEkgYW0gdGhlIEFQSSBrZXkh";'
                       'nonce="VGhpc0lzQVVuaXF1ZU5vbmNl";alg="hmac-sha256";created=1641013200;expires=3282026430',
}
DOCUMENTED_BASE = (
    '"@request-target": /api/v1/voicebiometrics/ws\n'
    '"@authority": audiohook.example.com\n'
    '"audiohook-organization-id": d7934305-0972-4844-938e-9060eef73d05\n'
    '"audiohook-session-id": 30b0e395-84d3-4570-ac13-9a62d8f514c0\n'
    '"audiohook-correlation-id": e160e428-53e2-487c-977d-96989bf5c99d\n'
    '"x-api-key": SGVsbG8sIEkgYW0gdGhlIEFQSSBrZXkh\n'
    '"@signature-params": ("@request-target" "@authority" "audiohook-organization-id" "audiohook-session-id" '
    '"audiohook-correlation-id" "x-api-key");keyid="SGVsbG8sIEkgYW0gdGhlIEFQSSBrZXkh";'
    'nonce="VGhpc0lzQVVuaXF1ZU5vbmNl";alg="hmac-sha256";created=1641013200;expires=3282026430'
)
CREATED = 1641013200
KEYS = {API_KEY: CLIENT_SECRET}
NONCE = "VGhpc0lzQVVuaXF1ZU5vbmNl"
OTHER_SECRET = "QW5vdGhlclNlY3JldEtleUZvclRoZVNhbWVBUElLZXk="


def verify(headers, now=CREATED + 1, keys=KEYS, cache=None, path=PATH, authority=AUTHORITY, **kwargs):
    return verify_upgrade("GET", path, authority, headers, keys, now, cache if cache is not None else NonceCache(),
                          **kwargs)


def signed(created=CREATED, nonce=NONCE, expires=None, **client_kwargs):
    return AudioHookClient(**client_kwargs).upgrade_headers(created=created, nonce=nonce, expires=expires)


def rejection(headers, **kwargs) -> SignatureError:
    with pytest.raises(SignatureError) as caught:
        verify(headers, **kwargs)
    return caught.value


def test_documented_signature_base_is_reproduced_byte_for_byte():
    lowered = {name.lower(): value for name, value in DOCUMENTED_HEADERS.items()}
    assert upgrade_signature_base("GET", PATH, "audiohook.example.com", lowered,
                                  DOCUMENTED_HEADERS["Signature-Input"]) == DOCUMENTED_BASE


def test_signing_the_documented_request_gives_the_documented_headers():
    headers = sign_upgrade(PATH, AUTHORITY, DOCUMENTED_HEADERS, API_KEY, CLIENT_SECRET, created=CREATED, nonce=NONCE,
                           expires=3282026430)
    assert headers == {"Signature-Input": DOCUMENTED_HEADERS["Signature-Input"],
                       "Signature": DOCUMENTED_HEADERS["Signature"]}


def test_documented_request_verifies_and_names_the_client():
    assert verify(DOCUMENTED_HEADERS) == VerifiedClient(
        api_key=API_KEY, organization_id=ORGANIZATION_ID, session_id=SESSION_ID, correlation_id=CORRELATION_ID,
        signed=True)


def test_header_names_and_authority_are_case_insensitive():
    headers = {name.lower(): value for name, value in DOCUMENTED_HEADERS.items()}
    assert verify(headers, authority="AudioHook.Example.COM").signed


def test_test_client_signs_with_a_30_second_lifetime():
    headers = signed()
    assert headers["Signature-Input"].endswith(f";created={CREATED};expires={CREATED + 30}")
    assert verify(headers, now=CREATED + 5).session_id == SESSION_ID


def test_expired_signature_is_rejected():
    error = rejection(signed(created=CREATED - 40, expires=CREATED - 10), now=CREATED)
    assert error.reason == "expired"


def test_a_signature_must_stay_valid_for_the_allowed_clock_skew():
    """As the reference verifier: C{expires} at least 3 s ahead of our clock."""
    assert rejection(signed(created=CREATED - 5, expires=CREATED + 2), now=CREATED, max_skew=3).reason == "expired"
    assert verify(signed(created=CREATED - 5, expires=CREATED + 3), now=CREATED, max_skew=3)


def test_signature_older_than_max_age_is_rejected_even_if_not_expired():
    error = rejection(signed(created=CREATED - 11, expires=CREATED + 60), now=CREATED, max_age=10, max_skew=3)
    assert error.reason == "too-old"
    assert verify(signed(created=CREATED - 10, expires=CREATED + 60), now=CREATED, max_age=10, max_skew=3)


def test_created_in_the_future_beyond_the_skew_is_rejected():
    assert rejection(signed(created=CREATED + 4), now=CREATED, max_skew=3).reason == "created-in-future"


def test_created_in_the_future_within_the_skew_is_accepted():
    assert verify(signed(created=CREATED + 3), now=CREATED, max_skew=3)


def test_replayed_nonce_is_rejected():
    cache = NonceCache()
    headers = signed()
    verify(headers, cache=cache)
    error = rejection(headers, cache=cache, now=CREATED + 2)
    assert (error.reason, error.detail) == ("replayed-nonce", NONCE)


def test_a_new_nonce_is_accepted_after_another_was_used():
    cache = NonceCache()
    verify(signed(), cache=cache)
    assert verify(signed(nonce="QW5vdGhlck5vbmNlT2ZUd2VudHlGb3Vy"), cache=cache)
    assert len(cache) == 2


def test_nonce_cache_forgets_nonces_once_their_signatures_are_stale():
    cache = NonceCache()
    verify(signed(), cache=cache, max_age=10, max_skew=3)
    cache.purge(CREATED + 10)
    assert NONCE in cache
    cache.purge(CREATED + 11)
    assert len(cache) == 0


def test_nonce_cache_is_bounded_and_drops_the_soonest_to_expire():
    cache = NonceCache(max_entries=2)
    cache.add("late", 300)
    cache.add("early", 100)
    cache.add("middle", 200)
    assert (len(cache), "early" in cache, "late" in cache, "middle" in cache) == (2, False, True, True)


def test_wrong_client_secret_fails_the_signature():
    assert rejection(signed(), keys={API_KEY: OTHER_SECRET}).reason == "bad-signature"


def test_unknown_api_key_is_rejected():
    error = rejection(signed(api_key="bm90IGEgY29uZmlndXJlZCBrZXk="))
    assert (error.reason, error.detail) == ("unknown-api-key", "bm90IGEgY29uZmlndXJlZCBrZXk=")


@pytest.mark.parametrize("name", ["Audiohook-Organization-Id", "Audiohook-Session-Id", "Audiohook-Correlation-Id",
                                  "X-API-KEY"])
def test_missing_audiohook_header_is_rejected_by_name(name):
    headers = dict(signed())
    del headers[name]
    error = rejection(headers)
    assert (error.reason, error.detail) == ("missing-header", name.lower())


def test_session_id_that_is_not_a_uuid_is_rejected():
    headers = {**signed(), "Audiohook-Session-Id": "not-a-uuid"}
    assert rejection(headers).reason == "malformed-header"


@pytest.mark.parametrize("tamper", [
    {"Audiohook-Correlation-Id": "0b4c8a3e-7f1d-4d36-9a52-1c2e3f405162"},
    {"Audiohook-Organization-Id": "b55bf4ee-20af-434f-ac59-4078e0723d73"},
    {"Audiohook-Session-Id": "9ed63d0d-1a2a-4711-a4df-b4a8c182a742"},
], ids=["correlation-id", "organization-id", "session-id"])
def test_tampered_covered_header_fails_the_signature(tamper):
    assert rejection({**signed(), **tamper}).reason == "bad-signature"


def test_other_path_or_authority_fails_the_signature():
    assert rejection(signed(), path=PATH + "?x=1").reason == "bad-signature"
    assert rejection(signed(), authority="audiohook.example.com:8443").reason == "bad-signature"


def test_keyid_must_be_the_api_key():
    headers = signed()
    headers["Signature-Input"] = headers["Signature-Input"].replace(f'keyid="{API_KEY}"', 'keyid="someone-else"')
    assert rejection(headers).reason == "keyid-mismatch"


def test_signature_must_cover_every_audiohook_header():
    client = AudioHookClient()
    base_headers = client.upgrade_headers(CREATED, NONCE, signed=False)
    headers = {**base_headers, **sign_upgrade(PATH, AUTHORITY, base_headers, API_KEY, CLIENT_SECRET, CREATED, NONCE,
                                              components=("@request-target", "@authority", "x-api-key"))}
    error = rejection(headers)
    assert (error.reason, error.detail) == (
        "uncovered-component", "audiohook-organization-id, audiohook-session-id, audiohook-correlation-id")


def test_short_nonce_is_rejected():
    assert rejection(signed(nonce="c2hvcnQ=")).reason == "short-nonce"


def test_missing_nonce_is_rejected():
    headers = signed()
    headers["Signature-Input"] = headers["Signature-Input"].replace(f';nonce="{NONCE}"', "")
    assert rejection(headers).reason == "missing-nonce"


def test_other_algorithm_is_rejected():
    headers = signed()
    headers["Signature-Input"] = headers["Signature-Input"].replace('alg="hmac-sha256"', 'alg="rsa-pss-sha512"')
    assert rejection(headers).reason == "unsupported-algorithm"


def test_unsigned_request_is_accepted_only_for_a_key_without_secret():
    headers = AudioHookClient().upgrade_headers(CREATED, NONCE, signed=False)
    assert verify(headers, keys={API_KEY: ""}).signed is False
    assert rejection(headers).reason == "unsigned"


def test_signature_without_signature_input_is_malformed():
    headers = signed()
    del headers["Signature-Input"]
    assert rejection(headers).reason == "malformed-signature"


def test_misconfigured_secret_is_reported_not_raised_as_binascii_error():
    assert rejection(signed(), keys={API_KEY: "not base64!"}).reason == "invalid-client-secret"


@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=22, max_size=60))
def test_any_printable_nonce_survives_signing_and_verification(nonce):
    assert verify(signed(nonce=nonce)).signed


@given(signature_input=st.text(max_size=300), signature=st.text(max_size=120))
def test_garbage_signature_headers_only_ever_raise_signature_error(signature_input, signature):
    headers = {**signed(), "Signature-Input": signature_input, "Signature": signature}
    with pytest.raises(SignatureError):
        verify(headers)


def test_signature_without_base64_padding_verifies():
    # RFC 9651 4.2.7: a parser should not fail on a byte sequence missing its padding.
    headers = {**DOCUMENTED_HEADERS, "Signature": DOCUMENTED_HEADERS["Signature"].replace("Jh4=:", "Jh4:")}
    assert verify(headers).signed


def test_repeated_signature_parameter_is_malformed():
    # Parsing keeps one of the two, so the signed @signature-params could not be rebuilt.
    headers = signed()
    headers["Signature-Input"] += ';alg="hmac-sha256"'
    error = rejection(headers)
    assert (error.reason, error.detail) == ("malformed-signature", "parameter 'alg' repeated")


def test_the_gate_admits_a_verified_upgrade_and_says_when_and_how_to_refuse_the_rest():
    headers = {name.lower(): value for name, value in DOCUMENTED_HEADERS.items()}
    gate = UpgradeGate(KEYS, "disconnect")
    assert isinstance(gate.decide(headers, PATH, CREATED + 1), VerifiedClient)
    replayed = gate.decide(headers, PATH, CREATED + 2)
    assert replayed == Refusal(CREATED + 2 + AUTH_FAILURE_SECONDS, headers["audiohook-session-id"], True,
                               "replayed-nonce: " + NONCE)
    no_session = gate.decide({**headers, "audiohook-session-id": "nope"}, PATH, CREATED + 3)
    assert (no_session.session_id, no_session.disconnect) == ("nope", False), "it cannot be spoken to"
    rejecting = UpgradeGate(KEYS, "reject").decide(headers, PATH + "x", CREATED + 1)
    assert isinstance(rejecting, Refusal) and not rejecting.disconnect
    with pytest.raises(ValueError):
        UpgradeGate(KEYS, "ignore")
