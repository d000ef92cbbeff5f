# -*- test-case-name: tests.test_webhook_oauth2 -*-
"""
OAuth 2.0 client credentials (RFC 6749 §4.4) for the webhook: the guides'
"OAuth2 (client_credentials)" mode.

The request body and the reading of the token response (errors, token type,
missing token) are C{oauthlib}'s; the exchange runs on treq. The token is
kept until shortly before it expires (C{expires_in}), fetched once for every
POST waiting on it, and dropped when the receiver answers 401 so that the
next POST fetches a new one. A token endpoint that fails, answers garbage or
does not answer within the timeout fails the POSTs waiting on it with
L{TokenUnavailable}, logged and counted; it never holds them longer than the
timeout.
"""

from __future__ import annotations

import base64
from urllib.parse import quote_plus

import attrs
from oauthlib.oauth2 import BackendApplicationClient, OAuth2Error
from prometheus_client import Counter
from treq.client import HTTPClient
from twisted.internet.defer import Deferred, TimeoutError, ensureDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

log = Logger()

TOKEN_FAILURES = Counter(
    "asapp_mg_webhook_token_failures_total",
    "OAuth2 token requests of a webhook target that gave no token (error, bad answer, timeout).",
    ["target"],
)

#: Client authentication methods of RFC 6749 §2.3.1.
CLIENT_AUTH_METHODS = ("client_secret_basic", "client_secret_post")
#: How long a token without C{expires_in} is kept (RFC 6749 leaves it to the server).
DEFAULT_LIFETIME_SECONDS = 300.0
#: A token is replaced this long before it expires (at most a tenth of its life).
REFRESH_MARGIN_SECONDS = 30.0


class TokenUnavailable(Exception):
    """The token endpoint gave no usable token; the message says why."""


@attrs.frozen
class ClientCredentials:
    """What the operator configures for one target's token endpoint."""

    token_url: str
    client_id: str
    client_secret: str = attrs.field(repr=False)
    client_auth: str = "client_secret_basic"
    scope: str = ""
    audience: str = ""


class TokenSource:
    """
    Access tokens for one webhook target.

    @param http_client: reaches the token endpoint (with the trust the
        operator configured for it).
    @param timeout_seconds: the longest a token request may take.
    """

    def __init__(self, credentials: ClientCredentials, *, http_client: HTTPClient,
                 clock: IReactorTime, timeout_seconds: float, target: str):
        self._credentials = credentials
        self._client = http_client
        self._clock = clock
        self._timeout = timeout_seconds
        self._target = target
        self._token: str | None = None
        self._refresh_at = 0.0
        self._fetching: list[Deferred] | None = None
        TOKEN_FAILURES.labels(target=target)

    def token(self) -> Deferred:
        """A L{Deferred} firing with a valid access token, or failing with L{TokenUnavailable}."""
        if self._token is not None and self._clock.seconds() < self._refresh_at:
            return succeed(self._token)
        waiter = Deferred()
        if self._fetching is None:
            self._fetching = [waiter]
            d = ensureDeferred(self._fetch())
            d.addTimeout(self._timeout, self._clock, onTimeoutCancel=_no_answer)
            d.addBoth(self._fetched)
        else:
            self._fetching.append(waiter)
        return waiter

    def invalidate(self, token: str) -> None:
        """The receiver refused C{token} (401): the next POST fetches a new one."""
        if self._token == token:
            self._token = None

    async def _fetch(self) -> tuple[str, float]:
        credentials = self._credentials
        oauth = BackendApplicationClient(credentials.client_id)
        extra = {"audience": credentials.audience} if credentials.audience else {}
        headers = {"Content-Type": "application/x-www-form-urlencoded",
                   "Accept": "application/json"}
        if credentials.client_auth == "client_secret_post":
            body = oauth.prepare_request_body(scope=credentials.scope or None,
                                              include_client_id=True,
                                              client_secret=credentials.client_secret, **extra)
        else:
            body = oauth.prepare_request_body(scope=credentials.scope or None, **extra)
            headers["Authorization"] = _basic(credentials.client_id, credentials.client_secret)
        response = await self._client.post(credentials.token_url, data=body.encode("ascii"),
                                           headers=headers, allow_redirects=False)
        text = (await response.content()).decode("utf-8", "replace")
        try:
            # Scope left out: a server may grant less than asked (RFC 6749 §3.3).
            token = oauth.parse_request_body_response(text)
        except OAuth2Error as e:
            raise TokenUnavailable(f"HTTP {response.code}: {e.error}"
                                   f"{': ' + e.description if e.description else ''}") from None
        except ValueError as e:
            raise TokenUnavailable(f"HTTP {response.code}: unreadable answer: {e}") from None
        if token.get("token_type", "").lower() != "bearer":
            raise TokenUnavailable(f"token type {token.get('token_type')!r} is not Bearer")
        lifetime = float(token.get("expires_in") or DEFAULT_LIFETIME_SECONDS)
        return token["access_token"], lifetime

    def _fetched(self, result) -> None:
        waiters, self._fetching = self._fetching, None
        if isinstance(result, tuple):
            self._token, lifetime = result
            self._refresh_at = self._clock.seconds() + lifetime - min(REFRESH_MARGIN_SECONDS,
                                                                      lifetime / 10)
            log.debug("webhook target {target}: new OAuth2 token for {lifetime}s",
                      target=self._target, lifetime=lifetime)
            for waiter in waiters:
                waiter.callback(self._token)
            return
        failure = result
        if failure.check(TimeoutError):
            reason = f"no answer within {self._timeout}s"
        elif failure.check(TokenUnavailable):
            reason = str(failure.value)
        else:
            reason = failure.getErrorMessage() or failure.type.__name__
        TOKEN_FAILURES.labels(target=self._target).inc()
        log.error("webhook target {target}: OAuth2 token request to {url} failed: {reason}",
                  target=self._target, url=self._credentials.token_url, reason=reason)
        for waiter in waiters:
            waiter.errback(TokenUnavailable(reason))


def _basic(client_id: str, client_secret: str) -> str:
    """RFC 6749 §2.3.1: both form-encoded, then HTTP Basic."""
    pair = f"{quote_plus(client_id)}:{quote_plus(client_secret)}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


def _no_answer(result, timeout: float):
    """Whatever cancelling the token request left behind, it took too long."""
    raise TimeoutError(timeout, "OAuth2 token request")
