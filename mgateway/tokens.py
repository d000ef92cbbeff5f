# -*- test-case-name: tests.test_tokens -*-
"""
Short-lived access tokens for WebSocket URLs (direct API, Twilio streams).

They are JWTs (HS256) signed with the gateway's key, checked only when a
socket opens: a session may outlive its token.
"""

from __future__ import annotations

import os
import secrets
import uuid
from pathlib import Path

import jwt
from twisted.internet.interfaces import IReactorTime


#: The audience of a direct API streaming URL's token.
DIRECT_AUDIENCE = "direct"
#: The audience of a Twilio Media Streams URL's token.
TWILIO_AUDIENCE = "twilio"


class InvalidToken(Exception):
    """The token is malformed, forged, expired or for another purpose."""


class TokenSigner:
    """
    A token is for one audience (L{DIRECT_AUDIENCE}, L{TWILIO_AUDIENCE}): a
    token issued for one is refused by the other.

    @param key: the signing key, or None until L{use_key} gives it (the
        gateway reads or creates its key file when it starts, not when it
        is built); no token is issued or accepted without one.
    """

    def __init__(self, key: bytes | None, ttl_seconds: float, clock: IReactorTime):
        self._key = key
        self._ttl = ttl_seconds
        self._clock = clock

    def use_key(self, key: bytes) -> None:
        self._key = key

    def issue(self, audience: str, subject: str, **claims) -> str:
        if self._key is None:
            raise RuntimeError("no token is issued before the signing key is loaded")
        now = int(self._clock.seconds())
        payload = {
            "aud": audience,
            "sub": subject,
            "iat": now,
            "exp": now + int(self._ttl),
            "jti": uuid.uuid4().hex,
            **claims,
        }
        return jwt.encode(payload, self._key, algorithm="HS256")

    def verify(self, token: str, audience: str) -> dict:
        """The token's claims, or L{InvalidToken} saying why."""
        if self._key is None:
            raise InvalidToken("the signing key is not loaded yet")
        try:
            # Expiry is checked against the injected clock, not time.time().
            claims = jwt.decode(
                token,
                self._key,
                algorithms=["HS256"],
                audience=audience,
                options={"verify_exp": False, "require": ["exp", "aud", "sub"]},
            )
        except jwt.PyJWTError as e:
            raise InvalidToken(str(e)) from None
        if not isinstance(claims["exp"], int) or claims["exp"] <= self._clock.seconds():
            raise InvalidToken("token has expired")
        return claims


def signing_key(configured: str, data_dir: Path) -> bytes:
    """
    The configured key, or one generated once and kept (mode 0600) in
    C{data_dir} so that URLs handed out survive a restart.
    """
    if configured:
        return configured.encode("utf-8")
    path = data_dir / "token-signing.key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path.read_text().strip().encode("utf-8")
