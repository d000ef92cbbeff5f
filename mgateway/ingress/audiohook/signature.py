# -*- test-case-name: tests.test_audiohook_signature -*-
"""
The HTTP Message Signature (RFC 9421) on an AudioHook WebSocket upgrade.

Genesys signs the upgrade request with HMAC-SHA256 when the integration has
a client secret; the key is the base64-decoded secret, C{keyid} is the API
key also sent as C{X-API-KEY}::

    Signature-Input: sig1=("@request-target" "@authority" "audiohook-organization-id"
        "audiohook-session-id" "audiohook-correlation-id" "x-api-key");keyid="...";
        nonce="...";alg="hmac-sha256";created=1641013200;expires=1641013230
    Signature: sig1=:<base64 of the HMAC>:

The signed text (the signature base) has one line C{"<component>": <value>}
per covered component, then C{"@signature-params": <the inner list above,
re-serialised>}, joined with LF. Signing and verifying build it with the same
function, L{upgrade_signature_base}.

Both headers are RFC 8941 structured-field dictionaries, parsed and
serialised with C{http_sf}. The C{@signature-params} line re-serialises the
parsed inner list, which gives back the client's bytes for any input that
serialisation is canonical for (as Genesys's is); a byte sequence without its
C{=} padding is accepted, as RFC 9651 4.2.7 asks.

Pure code: the caller supplies the request, the keys, the time and the nonce
cache. Failures raise L{SignatureError}; the caller answers 401, or accepts
the socket and sends C{disconnect} C{unauthorized}, and should make every
failure take the same (long) time so that its timing reveals nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import hmac
import re
from typing import Mapping, Sequence

import attrs
import http_sf

from mgateway.ingress.audiohook.messages import is_uuid

ALGORITHM = "hmac-sha256"
#: The components Genesys covers, which a signature must cover to be accepted.
REQUIRED_COMPONENTS = (
    "@request-target",
    "@authority",
    "audiohook-organization-id",
    "audiohook-session-id",
    "audiohook-correlation-id",
    "x-api-key",
)
_SIGNATURE_PARAMETERS = ("keyid", "nonce", "alg", "created", "expires", "tag")


class SignatureError(Exception):
    """
    The upgrade request is not authentic. C{reason} is one of:

      - C{missing-header}: a required header (or a covered one) is absent
      - C{malformed-header}: an AudioHook id header is not a UUID
      - C{unknown-api-key}: C{X-API-KEY} is not configured
      - C{invalid-client-secret}: the configured secret is not base64
      - C{unsigned}: no signature, but the key has a client secret
      - C{malformed-signature}: C{Signature}/C{Signature-Input} unparsable,
        labels that do not match, unknown signature parameters
      - C{unsupported-algorithm}, C{unsupported-component}
      - C{keyid-mismatch}: C{keyid} is not the C{X-API-KEY}
      - C{uncovered-component}: a required component is not signed
      - C{missing-nonce}, C{short-nonce}, C{missing-created}
      - C{created-in-future}, C{expired}, C{too-old}: outside the time window
      - C{bad-signature}: the HMAC does not match
      - C{replayed-nonce}: a valid signature whose nonce was already used

    C{detail} says which header, component or value, for the log.
    """

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@attrs.frozen
class VerifiedClient:
    """Who opened the socket, once the upgrade request checked out."""

    api_key: str
    organization_id: str
    session_id: str
    correlation_id: str
    #: False when the key has an empty client secret and no signature came.
    signed: bool


class NonceCache:
    """
    Nonces of accepted signatures, each kept until its signature could no
    longer be accepted anyway. Bounded: past C{max_entries} the entry that
    expires soonest is dropped first.
    """

    def __init__(self, max_entries: int = 100_000):
        self._max_entries = max_entries
        self._until: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._until)

    def __contains__(self, nonce: str) -> bool:
        return nonce in self._until

    def purge(self, now: float) -> None:
        while self._heap and self._heap[0][0] < now:
            self._drop_first()

    def add(self, nonce: str, keep_until: float) -> None:
        self._until[nonce] = keep_until
        heapq.heappush(self._heap, (keep_until, nonce))
        while len(self._until) > self._max_entries:
            self._drop_first()

    def _drop_first(self) -> None:
        until, nonce = heapq.heappop(self._heap)
        if self._until.get(nonce) == until:
            del self._until[nonce]


def verify_upgrade(
    method: str,
    path_with_query: str,
    authority: str,
    headers: Mapping[str, str],
    keys: Mapping[str, str],
    now: float,
    nonce_cache: NonceCache,
    max_skew: float = 3.0,
    max_age: float = 10.0,
    min_nonce_length: int = 22,
) -> VerifiedClient:
    """
    Check an AudioHook upgrade request.

    @param authority: the C{Host} header (lower-cased here).
    @param headers: header names in any case; a header sent more than once
        must be joined with C{", "} by the caller.
    @param keys: API key -> base64 client secret. An empty secret means the
        key may connect unsigned (as the reference server allows).
    @param now: POSIX seconds.
    @param max_skew: seconds the client's clock may be off: C{created} may
        be this far in the future, and C{expires} must be at least this far
        ahead (the reference verifier's rule).
    @param max_age: seconds after C{created} a signature is good for, even
        if its C{expires} is later (the reference server's 10 s).
    @raise SignatureError: see its reasons.
    """
    fields = _lower_keys(headers)
    api_key = _required(fields, "x-api-key")
    client = VerifiedClient(
        api_key=api_key,
        organization_id=_required_uuid(fields, "audiohook-organization-id"),
        session_id=_required_uuid(fields, "audiohook-session-id"),
        correlation_id=_required(fields, "audiohook-correlation-id"),
        signed="signature-input" in fields or "signature" in fields,
    )
    if api_key not in keys:
        raise SignatureError("unknown-api-key", api_key)
    key = _decode_secret(keys[api_key])
    if not client.signed:
        if key:
            raise SignatureError("unsigned", "no Signature/Signature-Input for a key with a client secret")
        return client

    label, components, parameters = _signature_input(fields)
    signature = _signature_value(fields, label)
    if parameters.get("alg", ALGORITHM) != ALGORITHM:
        raise SignatureError("unsupported-algorithm", str(parameters["alg"]))
    if parameters.get("keyid") != api_key:
        raise SignatureError("keyid-mismatch", f"keyid {parameters.get('keyid')!r}, X-API-KEY {api_key!r}")
    uncovered = [name for name in REQUIRED_COMPONENTS if name not in components]
    if uncovered:
        raise SignatureError("uncovered-component", ", ".join(uncovered))
    nonce = parameters.get("nonce")
    if nonce is None:
        raise SignatureError("missing-nonce")
    if len(nonce) < min_nonce_length:
        raise SignatureError("short-nonce", f"{len(nonce)} characters, at least {min_nonce_length} needed")
    created, expires = parameters.get("created"), parameters.get("expires")
    if created is None:
        raise SignatureError("missing-created")
    if created > now + max_skew:
        raise SignatureError("created-in-future", f"created {created}, now {now:.0f}")
    # As Genesys's reference verifier: a signature must stay valid for at
    # least max_skew more seconds and be at most max_age old.
    if expires is not None and expires < now + max_skew:
        raise SignatureError("expired", f"expires {expires}, now {now:.0f}, {max_skew:g} s of validity needed")
    if created + max_age < now:
        raise SignatureError("too-old", f"created {created}, now {now:.0f}, max age {max_age:g} s")

    base = upgrade_signature_base(method, path_with_query, authority, fields, fields["signature-input"])
    if not hmac.compare_digest(signature, _hmac(key, base)):
        raise SignatureError("bad-signature", f"label {label!r}, keyid {api_key!r}")

    nonce_cache.purge(now)
    if nonce in nonce_cache:
        raise SignatureError("replayed-nonce", nonce)
    keep_until = created + max_age
    if expires is not None:
        keep_until = min(keep_until, expires)
    nonce_cache.add(nonce, keep_until)
    return client


def sign_upgrade(
    path_with_query: str,
    authority: str,
    headers: Mapping[str, str],
    api_key: str,
    client_secret_b64: str,
    created: int,
    nonce: str,
    expires: int | None = None,
    method: str = "GET",
    components: Sequence[str] = REQUIRED_COMPONENTS,
    label: str = "sig1",
) -> dict[str, str]:
    """
    The C{Signature-Input} and C{Signature} headers Genesys would add, with
    its parameter order and its default lifetime of 30 s.
    """
    parameters = [("keyid", api_key), ("nonce", nonce), ("alg", ALGORITHM), ("created", created),
                  ("expires", created + 30 if expires is None else expires)]
    signature_input = _serialize({label: (list(components), dict(parameters))})
    base = upgrade_signature_base(method, path_with_query, authority, _lower_keys(headers), signature_input)
    signature = _hmac(_decode_secret(client_secret_b64), base)
    return {"Signature-Input": signature_input, "Signature": _serialize({label: signature})}


def upgrade_signature_base(
    method: str, path_with_query: str, authority: str, headers: Mapping[str, str], signature_input: str
) -> str:
    """
    The text signed for the first signature that C{signature_input} (the
    C{Signature-Input} header) declares.

    @param headers: names lower-cased.
    @raise SignatureError: a component that cannot be resolved.
    """
    _, components, parameters = _first_signature_input(signature_input)
    derived = {
        "@method": method.upper(),
        "@authority": authority.lower(),
        "@request-target": path_with_query,
        "@path": path_with_query.partition("?")[0] or "/",
        "@query": "?" + path_with_query.partition("?")[2],
    }
    lines = []
    for name in components:
        if name.startswith("@"):
            if name not in derived:
                raise SignatureError("unsupported-component", name)
            value = derived[name]
        else:
            value = headers.get(name)
            if value is None:
                raise SignatureError("missing-header", f"{name} (covered by the signature)")
            value = _canonical_value(value)
        lines.append(f"{_serialize(name)}: {value}")
    lines.append(f'"@signature-params": {_serialize_inner_list(components, parameters)}')
    return "\n".join(lines)


def _hmac(key: bytes, base: str) -> bytes:
    return hmac.new(key, base.encode("utf-8"), hashlib.sha256).digest()


def _decode_secret(client_secret_b64: str) -> bytes:
    try:
        return base64.b64decode(client_secret_b64, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("invalid-client-secret", "the configured client secret is not base64") from None


def _lower_keys(headers: Mapping[str, str]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for name, value in headers.items():
        name = name.lower()
        fields[name] = f"{fields[name]}, {value}" if name in fields else value
    return fields


def _canonical_value(value: str) -> str:
    """Trimmed, obsolete line folding replaced by a space (RFC 9421 2.1)."""
    return re.sub(r"[ \t]*\r\n[ \t]+", " ", value.strip())


def _required(fields: Mapping[str, str], name: str) -> str:
    value = _canonical_value(fields.get(name, ""))
    if not value:
        raise SignatureError("missing-header", name)
    return value


def _required_uuid(fields: Mapping[str, str], name: str) -> str:
    value = _required(fields, name)
    if not is_uuid(value):
        raise SignatureError("malformed-header", f"{name} is not a UUID: {value!r}")
    return value


def _signature_input(fields: Mapping[str, str]) -> tuple[str, list[str], dict]:
    """The label, covered components and parameters of the first signature."""
    if "signature-input" not in fields:
        raise SignatureError("malformed-signature", "Signature without Signature-Input")
    label, components, raw = _first_signature_input(fields["signature-input"])
    parameters = {}
    for name, value in raw.items():
        if name not in _SIGNATURE_PARAMETERS:
            raise SignatureError("malformed-signature", f"unknown signature parameter {name!r}")
        integer = name in ("created", "expires")
        if (type(value) is not int or value < 0) if integer else not isinstance(value, (str, http_sf.Token)):
            raise SignatureError("malformed-signature", f"bad value for {name!r}: {value!r}")
        # A token (alg=hmac-sha256 unquoted) is taken as its text.
        parameters[name] = str(value) if isinstance(value, http_sf.Token) else value
    return label, components, parameters


def _first_signature_input(signature_input: str) -> tuple[str, list[str], dict]:
    members = _parse_dictionary(signature_input, "Signature-Input")
    if not members:
        raise SignatureError("malformed-signature", "empty Signature-Input")
    label, (value, parameters) = next(iter(members.items()))
    if not isinstance(value, list):
        raise SignatureError("malformed-signature", f"Signature-Input {label!r} is not an inner list")
    components = []
    for name, component_parameters in value:
        if not isinstance(name, str):
            raise SignatureError("malformed-signature", f"component {name!r} is not a string")
        if component_parameters:
            raise SignatureError("unsupported-component", f"{name!r} with parameters")
        if name == "@signature-params" or name in components:
            raise SignatureError("malformed-signature", f"component {name!r} not allowed or repeated")
        components.append(name)
    return label, components, parameters


def _signature_value(fields: Mapping[str, str], label: str) -> bytes:
    if "signature" not in fields:
        raise SignatureError("malformed-signature", "Signature-Input without Signature")
    member = _parse_dictionary(fields["signature"], "Signature").get(label)
    if member is None or not isinstance(member[0], bytes):
        raise SignatureError("malformed-signature", f"no byte sequence for label {label!r} in Signature")
    return member[0]


def _parse_dictionary(text: str, field: str) -> dict:
    """
    An RFC 8941 dictionary, parsed by C{http_sf}. A parameter given twice is
    refused: only one of the two would survive parsing, so the signature base
    could not be rebuilt as the client signed it.
    """
    try:
        return http_sf.parse(text.encode("utf-8"), tltype="dictionary", on_duplicate_key=_refuse_duplicate_parameter)
    except ValueError as why:  # http_sf.StructuredFieldError is a ValueError
        raise SignatureError("malformed-signature", f"{field}: {why}") from None


def _refuse_duplicate_parameter(key: str, where: str) -> None:
    if where != "dictionary":
        raise SignatureError("malformed-signature", f"parameter {key!r} repeated")


def _serialize(structure) -> str:
    try:
        return http_sf.ser(structure)
    except (TypeError, ValueError) as why:
        raise SignatureError("malformed-signature", f"cannot serialise {structure!r}: {why}") from None


def _serialize_inner_list(items: list, parameters: dict) -> str:
    """An inner list with its parameters: the only member of a one-member list."""
    return _serialize([(list(items), dict(parameters))])
