"""
RFC 4475 torture messages (tests/fixtures/rfc4475, the RFC's own bytes) and
the endpoint rules they check, through the server core as the transports
feed it, and over a real TCP connection.
"""

from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor

import attrs

from mgateway.sip.errors import SIPError
from mgateway.sip.framing import Malformed
from mgateway.sip.message import Headers, parse_message, serialize, split_head
from tests.support.audio import until
from tests.test_sip_transports import connect_tcp
from tests.test_sip_uas import FakeChannel, make, request


@attrs.frozen
class Sent:
    """A response as sent: a 400 copies the malformed headers it answers, so it is only split, not parsed."""

    status: int
    headers: Headers

    @classmethod
    def of(cls, data: bytes) -> "Sent":
        line, headers, _ = split_head(data)
        return cls(int(line.split()[1]), headers)


class RawChannel(FakeChannel):
    def send(self, data: bytes) -> None:
        self.sent.append(Sent.of(data))

TORTURE = Path(__file__).resolve().parent / "fixtures" / "rfc4475"


def torture(name: str) -> bytes:
    return (TORTURE / name).read_bytes()


def deliver(server, channel, data: bytes) -> None:
    """What a transport does with one whole message."""
    try:
        message = parse_message(data)
    except SIPError as error:
        server.malformed(data, error, channel)
        return
    server.receive(message, channel)


def answers(data: bytes) -> list[Sent]:
    _, handler, server, _ = make()
    channel = RawChannel()
    deliver(server, channel, data)
    return channel.take()


def test_escaped_nul_and_unusual_characters_are_legal_and_the_unknown_method_gets_501():
    (response,) = answers(torture("intmeth.dat"))
    assert response.status == 501
    assert response.headers.get("Call-ID") == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert "NUL:\\\x00" in response.headers.get("To"), "the To header comes back as it was sent"


@pytest.mark.parametrize("name, why", [
    ("multi01.dat", "appear more than once"),
    ("badaspec.dat", "whitespace inside <uri>"),
    ("baddn.dat", "unquoted display name"),
])
def test_malformed_torture_requests_get_400_saying_why(name, why):
    (response,) = answers(torture(name))
    assert response.status == 400
    assert response.headers.get("Warning").startswith("399 asapp-mg ") and why in response.headers.get("Warning")


@pytest.mark.parametrize("name", ["unkscm.dat", "novelsc.dat"])
def test_request_uri_with_a_scheme_we_do_not_serve_gets_416(name):
    (response,) = answers(torture(name))
    assert response.status == 416
    assert "scheme" in response.headers.get("Warning").lower()


def test_invite_with_max_forwards_0_to_us_is_processed():
    _, handler, server, channel = make()
    invite = request("INVITE", body=b"v=0\r\n")
    data = invite.headers.replaced("Max-Forwards", "0")
    server.receive(parse_message(_with_headers(invite, data)), channel)
    assert [m.status for m in channel.take()] == [100, 200]
    assert len(handler.pending) == 1


def test_invite_without_contact_is_refused_400_and_offered_to_nobody():
    _, handler, server, channel = make()
    invite = request("INVITE", body=b"v=0\r\n")
    server.receive(parse_message(_with_headers(invite, invite.headers.without("Contact"))), channel)
    (refused,) = channel.take()
    assert refused.status == 400 and "Contact" in refused.headers.get("Warning")
    assert handler.pending == []


def _with_headers(message, headers) -> bytes:
    return serialize(attrs.evolve(message, headers=headers))


@pytest_twisted.ensureDeferred
async def test_intmeth_over_tcp_is_answered_and_the_connection_stays_up():
    port, client = await connect_tcp()
    try:
        client.transport.write(torture("intmeth.dat"))
        await until(reactor, lambda: client.received)
        assert client.received[0].status == 501
        assert not client.closed.called
    finally:
        client.transport.loseConnection()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_tcp_requests_complete_before_unframeable_bytes_get_their_responses():
    port, client = await connect_tcp()
    try:
        unframeable = torture("novelsc.dat").replace(b"Content-Length: 0\r\n", b"")
        client.transport.write(torture("unkscm.dat") + torture("baddn.dat") + unframeable)
        await client.closed
        statuses = [Sent.of(m.data if isinstance(m, Malformed) else serialize(m)).status for m in client.received]
        assert statuses == [416, 400]
    finally:
        await port.stopListening()
