"""Streaming-URL tokens: signed, short-lived, for one purpose."""

import jwt
import pytest
from twisted.internet.task import Clock

from mgateway.tokens import InvalidToken, TokenSigner, signing_key


def signer(clock, key=b"k" * 32, ttl=300):
    return TokenSigner(key, ttl, clock)


def test_token_is_valid_until_its_ttl_runs_out():
    clock = Clock()
    clock.advance(1_700_000_000)
    tokens = signer(clock)
    token = tokens.issue("direct", "app", ext="conv-1")
    clock.advance(299)
    assert tokens.verify(token, "direct")["ext"] == "conv-1"
    clock.advance(1)
    with pytest.raises(InvalidToken, match="expired"):
        tokens.verify(token, "direct")


def test_token_for_another_purpose_or_key_is_refused():
    clock = Clock()
    token = signer(clock).issue("twilio", "app")
    with pytest.raises(InvalidToken):
        signer(clock).verify(token, "direct")
    with pytest.raises(InvalidToken):
        signer(clock, key=b"x" * 32).verify(token, "twilio")


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c"])
def test_malformed_tokens_are_refused(token):
    with pytest.raises(InvalidToken):
        signer(Clock()).verify(token, "direct")


def test_unsigned_token_is_refused():
    forged = jwt.encode({"aud": "direct", "sub": "x", "exp": 10**10}, key=None, algorithm="none")
    with pytest.raises(InvalidToken):
        signer(Clock()).verify(forged, "direct")


def test_a_signer_without_its_key_yet_issues_and_accepts_nothing():
    clock = Clock()
    waiting = TokenSigner(None, 300, clock)
    token = signer(clock).issue("direct", "app")
    with pytest.raises(InvalidToken, match="not loaded"):
        waiting.verify(token, "direct")
    with pytest.raises(RuntimeError):
        waiting.issue("direct", "app")
    waiting.use_key(b"k" * 32)
    assert waiting.verify(token, "direct")["sub"] == "app"


def test_generated_key_is_kept_private_and_reused(tmp_path):
    key = signing_key("", tmp_path)
    assert signing_key("", tmp_path) == key
    assert (tmp_path / "token-signing.key").stat().st_mode & 0o777 == 0o600
    assert signing_key("configured", tmp_path) == b"configured"
