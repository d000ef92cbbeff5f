"""
The webhook's TLS modes against real HTTPS receivers on loopback, each with
its own certificate authority: mTLS with a plain and an encrypted key, a
receiver that requires a client certificate, an expired or misnamed server
certificate (refused, never sent), and certificates rotated on disk.
"""

from __future__ import annotations

import os

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import SSL4ServerEndpoint
from twisted.internet.ssl import Certificate, PrivateCertificate
from twisted.web.server import Site

from mgateway.config import ConfigError
from mgateway.egress.tls import TlsFiles
from mgateway.egress.webhook import WebhookSink
from tests.support.tlsfiles import make_client_files, make_tls_files
from tests.test_webhook import ScriptedReceiver, event, stats


class CertificateRecorder(ScriptedReceiver):
    """Also notes the common name of each client certificate shown."""

    def __init__(self):
        super().__init__()
        self.client_names = []

    def render(self, request):
        peer = request.channel.transport.getPeerCertificate()
        self.client_names.append(peer.get_subject().CN if peer is not None else None)
        return super().render(request)


async def listen(server, client_ca=None, interface="127.0.0.1"):
    """An HTTPS receiver with C{server}'s certificate, requiring a client one signed by C{client_ca}."""
    resource = CertificateRecorder()
    identity = PrivateCertificate.loadPEM(server.server_key.read_bytes()
                                          + server.server_cert.read_bytes())
    authorities = [Certificate.loadPEM(client_ca.read_bytes())] if client_ca else []
    endpoint = SSL4ServerEndpoint(reactor, 0, identity.options(*authorities), interface=interface)
    port = await endpoint.listen(Site(resource))
    resource.url = f"https://{interface}:{port.getHost().port}/hook"
    return resource, port


@pytest_twisted.async_yield_fixture
async def deliver(tls_files):
    """C{await deliver(receiver, **sink options)}: one utterance, drained; returns the sink."""
    made, ports = [], []

    async def send(receiver, **options):
        sink = WebhookSink(receiver.url, reactor=reactor, timeout_seconds=10, concurrency=1,
                           queue_size=4, **options)
        made.append(sink)
        sink.deliver(event())
        assert await sink.drain(20)
        return sink

    async def listen_here(*args, **kwargs):
        receiver, port = await listen(*args, **kwargs)
        ports.append(port)
        return receiver

    send.listen = listen_here
    yield send
    for sink in made:
        await sink.close()
    for port in ports:
        await port.stopListening()


def client_dir(tmp_path, name):
    directory = tmp_path / name
    directory.mkdir()
    return directory


@pytest_twisted.ensureDeferred
async def test_mtls_with_a_plain_key_is_accepted_by_a_receiver_that_requires_a_client_certificate(
        tls_files, tmp_path, deliver):
    client = make_client_files(client_dir(tmp_path, "client"))
    receiver = await deliver.listen(tls_files, client_ca=client.ca_cert)
    sink = await deliver(receiver, tls=TlsFiles(ca_file=tls_files.ca_cert,
                                                client_cert=client.cert, client_key=client.key))
    assert sink.stats == stats(sent=1)
    assert receiver.client_names == ["asapp-mg webhook"]


@pytest_twisted.ensureDeferred
async def test_mtls_with_an_encrypted_key_opened_by_the_passphrase_file(tls_files, tmp_path, deliver):
    client = make_client_files(client_dir(tmp_path, "client"), passphrase=b"correct horse")
    passphrase = tmp_path / "passphrase"
    passphrase.write_bytes(b"correct horse\n")
    receiver = await deliver.listen(tls_files, client_ca=client.ca_cert)
    sink = await deliver(receiver, tls=TlsFiles(ca_file=tls_files.ca_cert, client_cert=client.cert,
                                                client_key=client.key, passphrase_file=passphrase))
    assert sink.stats == stats(sent=1)

    passphrase.write_bytes(b"wrong")
    with pytest.raises(ConfigError, match="client_key"):
        WebhookSink(receiver.url, reactor=reactor, timeout_seconds=1, concurrency=1, queue_size=1,
                    tls=TlsFiles(ca_file=tls_files.ca_cert, client_cert=client.cert,
                                 client_key=client.key, passphrase_file=passphrase))


@pytest_twisted.ensureDeferred
async def test_without_the_expected_client_certificate_nothing_is_delivered(tls_files, tmp_path,
                                                                             deliver):
    wanted, other = (make_client_files(client_dir(tmp_path, name)) for name in ("wanted", "other"))
    receiver = await deliver.listen(tls_files, client_ca=wanted.ca_cert)
    none = await deliver(receiver, ca_file=tls_files.ca_cert)
    wrong = await deliver(receiver, tls=TlsFiles(ca_file=tls_files.ca_cert,
                                                 client_cert=other.cert, client_key=other.key))
    assert (none.stats, wrong.stats) == (stats(errors=1), stats(errors=1))
    assert receiver.received == []


@pytest.mark.parametrize("problem", ["expired", "wrong name"])
@pytest_twisted.ensureDeferred
async def test_a_server_certificate_expired_or_for_another_name_fails_closed(tmp_path, deliver,
                                                                            problem):
    server = make_tls_files(tmp_path, expired=problem == "expired")
    interface = "127.0.0.2" if problem == "wrong name" else "127.0.0.1"
    receiver = await deliver.listen(server, interface=interface)
    sink = await deliver(receiver, ca_file=server.ca_cert)
    assert sink.stats == stats(errors=1)
    assert receiver.received == []


@pytest_twisted.ensureDeferred
async def test_a_client_certificate_rotated_on_disk_is_used_without_a_restart(tls_files, tmp_path,
                                                                             deliver):
    old, new = (make_client_files(client_dir(tmp_path, name)) for name in ("old", "new"))
    receiver = await deliver.listen(tls_files, client_ca=new.ca_cert)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(old.cert.read_bytes())
    key.write_bytes(old.key.read_bytes())
    sink = await deliver(receiver, tls=TlsFiles(ca_file=tls_files.ca_cert, client_cert=cert,
                                                client_key=key))
    assert sink.stats == stats(errors=1), "the receiver does not know the old certificate"

    for source, target in ((new.cert, cert), (new.key, key)):
        staged = target.with_suffix(".new")
        staged.write_bytes(source.read_bytes())
        os.replace(staged, target)
    sink.deliver(event(text="after the rotation"))
    assert await sink.drain(20)
    assert sink.stats == stats(sent=1, errors=1)
    assert [post.text for post in receiver.received] == ["after the rotation"]
