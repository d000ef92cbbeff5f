# -*- test-case-name: tests.test_twilio_session -*-
"""
Twilio's request signature (C{X-Twilio-Signature}) on the WebSocket upgrade:
base64 of HMAC-SHA1, keyed with the account's auth token, over the URL
Twilio requested (for a POST, followed by the sorted form parameters).
L{UpgradeSignature} decides whether an upgrade request passes; the adapter
only hands it the request's headers and URI.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Mapping
from urllib.parse import urlsplit, urlunsplit

import attrs

_DEFAULT_PORTS = {"https": 443, "wss": 443, "http": 80, "ws": 80}


def twilio_signature(auth_token: str, url: str, params: dict | None = None) -> str:
    data = url + "".join(k + v for k, v in sorted((params or {}).items()))
    digest = hmac.new(auth_token.encode("utf-8"), data.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def _port_variants(url: str) -> list[str]:
    """Twilio may sign the URL with or without the scheme's default port."""
    parts = urlsplit(url)
    default = _DEFAULT_PORTS.get(parts.scheme)
    host = parts.hostname or ""
    if parts.port is None and default:
        other = parts._replace(netloc=f"{host}:{default}")
    elif parts.port == default:
        other = parts._replace(netloc=host)
    else:
        return [url]
    return [url, urlunsplit(other)]


def valid_signature(auth_token: str, url: str, signature: str | None) -> bool:
    if not signature:
        return False
    return any(
        hmac.compare_digest(twilio_signature(auth_token, candidate), signature)
        for candidate in _port_variants(url)
    )


@attrs.frozen
class UpgradeSignature:
    """
    The check of a stream's upgrade request.

    @ivar auth_token: the Twilio account's auth token; empty: signatures are
        not checked.
    @ivar public_url: the gateway's public base URL (no trailing slash);
        Twilio signs the URL it was given, so behind a proxy this must be set.
        Empty: C{wss://} and the Host header (Twilio only opens C{wss} streams).
    """

    auth_token: str
    public_url: str = attrs.field(default="", converter=lambda url: url.rstrip("/"))

    def signed_url(self, host: str, request_uri: str) -> str:
        """The URL Twilio computed its signature over."""
        return (self.public_url or f"wss://{host}") + request_uri

    def refused_url(self, headers: Mapping[str, str], request_uri: str) -> str | None:
        """
        None when the request (headers with lower-case names) passes; else
        the URL whose signature it lacks, for the log.
        """
        if not self.auth_token:
            return None
        url = self.signed_url(headers.get("host", ""), request_uri)
        if valid_signature(self.auth_token, url, headers.get("x-twilio-signature")):
            return None
        return url
