"""SIP over UDP, TCP and TLS on real loopback sockets, and response routing per Via."""

import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, serverFromString, wrapClientTLS
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.task import Clock

from mgateway.ingress.siprec.transport_tcp import SipStreamFactory
from mgateway.ingress.siprec.transport_udp import SipDatagramProtocol, stamp_via
from mgateway.sip.framing import StreamFramer
from mgateway.sip.message import parse_message
from mgateway.sip.uas import UserAgentServer
from tests.support.audio import until
from tests.test_sip_uas import Handler

def options(via: str) -> bytes:
    return (
        "OPTIONS sip:srs@127.0.0.1 SIP/2.0\r\n"
        f"Via: {via}\r\n"
        "From: <sip:sbc@127.0.0.1>;tag=1\r\nTo: <sip:srs@127.0.0.1>\r\nCall-ID: ka-1\r\n"
        "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def test_rport_request_is_answered_at_its_source_address_and_port_and_stamped():
    stamped, destination = stamp_via(parse_message(options("SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK1;rport")),
                                     "192.0.2.7", 40123)
    assert destination == ("192.0.2.7", 40123)
    top = stamped.vias[0]
    assert (top.param("received"), top.param("rport"), top.branch) == ("192.0.2.7", "40123", "z9hG4bK1")


def test_request_without_rport_is_answered_at_the_via_port_of_the_source_address():
    stamped, destination = stamp_via(parse_message(options("SIP/2.0/UDP 10.0.0.9:5062;branch=z9hG4bK1")),
                                     "192.0.2.7", 40123)
    assert destination == ("192.0.2.7", 5062)
    assert stamped.vias[0].param("received") == "192.0.2.7" and not stamped.vias[0].has_param("rport")


def test_via_without_port_means_5060_and_a_matching_host_is_not_stamped():
    stamped, destination = stamp_via(parse_message(options("SIP/2.0/UDP 192.0.2.7;branch=z9hG4bK1")),
                                     "192.0.2.7", 40123)
    assert destination == ("192.0.2.7", 5060)
    assert stamped.vias[0].params == (("branch", "z9hG4bK1"),)


def server():
    handler = Handler()
    uas = UserAgentServer(Clock(), handler)
    handler.server = uas
    return uas


class Collector(DatagramProtocol):
    def __init__(self):
        self.received = []

    def datagramReceived(self, data, addr):
        self.received.append(parse_message(data))


@pytest_twisted.ensureDeferred
async def test_udp_options_is_answered_to_the_port_it_came_from():
    sip = reactor.listenUDP(0, SipDatagramProtocol(server(), "127.0.0.1"), interface="127.0.0.1")
    client = Collector()
    peer = reactor.listenUDP(0, client, interface="127.0.0.1")
    try:
        peer.write(b"\r\n\r\n", ("127.0.0.1", sip.getHost().port))  # a keep-alive: ignored
        peer.write(options("SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-udp;rport"), ("127.0.0.1", sip.getHost().port))
        await until(reactor, lambda: client.received)
        (ok,) = client.received
        assert ok.status == 200
        assert ok.vias[0].param("rport") == str(peer.getHost().port)
    finally:
        sip.stopListening()
        peer.stopListening()


class StreamClient(Protocol):
    def __init__(self):
        self.framer = StreamFramer()
        self.received = []
        self.raw = b""
        self.closed = Deferred()

    def dataReceived(self, data):
        self.raw += data
        self.received.extend(self.framer.feed(data))

    def connectionLost(self, reason):
        self.closed.callback(None)


async def connect_tcp():
    port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(SipStreamFactory(server()))
    client = StreamClient()
    await TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(Factory.forProtocol(lambda: client))
    return port, client


@pytest_twisted.ensureDeferred
async def test_tcp_messages_split_anywhere_are_answered_on_the_same_connection():
    port, client = await connect_tcp()
    try:
        data = options("SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bK-tcp")
        client.transport.write(data[:30])
        client.transport.write(data[30:] + b"\r\n\r\n")
        await until(reactor, lambda: client.received and client.raw.endswith(b"\r\n"))
        assert client.received[0].status == 200
        contact = client.received[0].headers.get("Contact")
        assert contact is None, "OPTIONS sets up no dialog"
    finally:
        client.transport.loseConnection()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_tcp_malformed_message_gets_400_and_the_connection_goes_on():
    port, client = await connect_tcp()
    try:
        bad = options("SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bK-bad").replace(b"sip:srs@127.0.0.1 SIP", b"srs SIP")
        client.transport.write(bad + options("SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bK-good"))
        await until(reactor, lambda: len(client.received) == 2)
        assert [m.status for m in client.received] == [400, 200]
        assert "request line" in client.received[0].headers.get("Warning")
    finally:
        client.transport.loseConnection()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_tcp_message_without_content_length_closes_the_connection():
    port, client = await connect_tcp()
    try:
        client.transport.write(options("SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bK-x").replace(b"Content-Length: 0\r\n", b""))
        await client.closed
        assert client.received == []
    finally:
        await port.stopListening()


@settings(max_examples=200, deadline=None)
@given(
    params=st.lists(st.tuples(st.sampled_from(["branch", "rport", "received", "maddr", "ttl", "x"]),
                              st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9.]{1,12}", fullmatch=True))),
                    max_size=5),
    host=st.from_regex(r"192\.0\.2\.[0-9]{1,2}", fullmatch=True),
    port=st.integers(1, 65535),
)
def test_stamped_via_keeps_every_other_parameter_and_routes_per_rfc_3581(params, host, port):
    text = "SIP/2.0/UDP 10.1.1.1:5080;branch=z9hG4bK-h" + "".join(
        f";{name}" if value is None else f";{name}={value}" for name, value in params)
    stamped, destination = stamp_via(parse_message(options(text)), host, port)
    top = stamped.vias[0]
    kept = [(n, v) for n, v in top.params if n not in ("received", "rport")]
    original = parse_message(options(text)).vias[0]
    assert kept == [(n, v) for n, v in original.params if n not in ("received", "rport")]
    assert top.param("received") == host
    wants_rport = original.has_param("rport")
    assert destination == (host, port if wants_rport else 5080)
    assert (top.param("rport") == str(port)) == wants_rport


@pytest_twisted.ensureDeferred
async def test_tls_listener_from_an_endpoint_string_answers_a_verifying_client(tls_files):
    """SIP over TLS (sips, RFC 3261 §26.2) is only configuration: an ssl: endpoint string."""
    description = (f"ssl:0:interface=127.0.0.1:privateKey={tls_files.server_key}"
                   f":certKey={tls_files.server_cert}")
    port = await serverFromString(reactor, description).listen(SipStreamFactory(server()))
    authority = Certificate.loadPEM(tls_files.ca_cert.read_bytes())
    endpoint = wrapClientTLS(optionsForClientTLS("127.0.0.1", trustRoot=authority),
                             TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port))
    client = StreamClient()
    await endpoint.connect(Factory.forProtocol(lambda: client))
    try:
        client.transport.write(options("SIP/2.0/TLS 127.0.0.1:9;branch=z9hG4bK-tls"))
        await until(reactor, lambda: client.received)
        assert client.received[0].status == 200
    finally:
        client.transport.loseConnection()
        await port.stopListening()
