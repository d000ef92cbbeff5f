# -*- test-case-name: tests.test_webhook_tls -*-
"""
How the webhook's HTTPS connections are secured: which servers it trusts,
which certificate it shows, and when it notices that those files changed.

The server's name is always checked against its certificate
(C{service_identity}, through L{optionsForClientTLS}) and TLS 1.2 is the
least accepted. Trust is the platform's certificate authorities or, with
C{ca_file}, exactly those of that PEM bundle (the guides' "custom CA"). With
C{client_cert} and C{client_key} the webhook shows that certificate (the
guides' mTLS); an encrypted key is opened with the passphrase read from
C{passphrase_file}.

The files are looked at again (size and modification time) whenever a new
connection is made, and read anew when they changed, so that certificates
can be rotated without a restart. A rotation caught half written keeps the
previous material until the files read well again.
"""

from __future__ import annotations

import os
from pathlib import Path

import attrs
from cryptography import x509
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)
from twisted.internet.ssl import (
    Certificate,
    PrivateCertificate,
    TLSVersion,
    optionsForClientTLS,
    trustRootFromCertificates,
)
from twisted.logger import Logger
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from mgateway.errors import ConfigError

log = Logger()


@attrs.frozen
class TlsFiles:
    """
    The operator's TLS files for one webhook target; L{None} where not used.
    C{client_cert} and C{client_key} go together; C{passphrase_file} only
    with an encrypted C{client_key}.
    """

    ca_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    passphrase_file: Path | None = None

    def paths(self) -> tuple[Path, ...]:
        return tuple(p for p in attrs.astuple(self) if p is not None)


def trust_policy(ca_file: Path | None = None, files: TlsFiles | None = None) -> IPolicyForHTTPS:
    """
    The TLS policy for an L{twisted.web.client.Agent}.

    @raise ConfigError: a file is missing or holds no usable certificate or key.
    """
    return ReloadingPolicy(files or TlsFiles(ca_file=ca_file))


@implementer(IPolicyForHTTPS)
class ReloadingPolicy:
    """An C{IPolicyForHTTPS} over L{TlsFiles}, read again when they change."""

    def __init__(self, files: TlsFiles):
        self._files = files
        self._stamp = _stamp(files)
        self._trust, self._client = _load(files)

    def creatorForNetloc(self, hostname: bytes, port: int):
        self._reload_if_changed()
        options = {"raiseMinimumTo": TLSVersion.TLSv1_2}
        client = None
        if self._client is not None:
            client, chain = self._client
            options["extraCertChain"] = chain
        return optionsForClientTLS(
            hostname.decode("ascii"),
            trustRoot=self._trust,
            clientCertificate=client,
            extraCertificateOptions=options,
        )

    def _reload_if_changed(self) -> None:
        stamp = _stamp(self._files)
        if stamp == self._stamp:
            return
        try:
            self._trust, self._client = _load(self._files)
        except ConfigError as e:
            log.error("webhook TLS files changed but cannot be used, keeping the previous ones: "
                      "{problem}", problem=str(e))
            return
        self._stamp = stamp
        log.info("webhook TLS files {paths} reloaded",
                 paths=", ".join(str(p) for p in self._files.paths()))


def _stamp(files: TlsFiles) -> tuple:
    """What changes when one of the files is rewritten or replaced."""
    stamps = []
    for path in files.paths():
        try:
            info = os.stat(path)
        except OSError:
            stamps.append(None)
        else:
            stamps.append((info.st_ino, info.st_size, info.st_mtime_ns))
    return tuple(stamps)


def _load(files: TlsFiles):
    trust = None
    if files.ca_file is not None:
        trust = trustRootFromCertificates(load_ca_bundle(files.ca_file))
    client = None
    if files.client_cert is not None:
        client = _client_certificate(files)
    return trust, client


def load_ca_bundle(path: Path) -> list[Certificate]:
    """Every certificate of a PEM file, in file order."""
    try:
        certificates = x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError) as e:
        raise ConfigError(f"webhook.ca_file: no CA certificate could be read from {path}: {e}") from None
    return [Certificate.loadPEM(c.public_bytes(Encoding.PEM)) for c in certificates]


def _client_certificate(files: TlsFiles) -> tuple[PrivateCertificate, list]:
    """
    The client certificate with its key (the first certificate of
    C{client_cert}), and the intermediates that follow it in the file.
    """
    try:
        chain = x509.load_pem_x509_certificates(files.client_cert.read_bytes())
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"webhook.client_cert: no certificate could be read from {files.client_cert}: {e}"
        ) from None
    password = None
    if files.passphrase_file is not None:
        try:
            password = files.passphrase_file.read_bytes().rstrip(b"\r\n")
        except OSError as e:
            raise ConfigError(f"webhook.client_key_passphrase_file: {e}") from None
    try:
        key = load_pem_private_key(files.client_key.read_bytes(), password)
    except (OSError, ValueError, TypeError) as e:
        raise ConfigError(
            f"webhook.client_key: {files.client_key} cannot be opened"
            f"{' with the passphrase' if password else ''}: {e}"
        ) from None
    if key.public_key() != chain[0].public_key():
        raise ConfigError(
            f"webhook.client_key: {files.client_key} is not the key of {files.client_cert}"
        )
    key_pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    certificate = PrivateCertificate.loadPEM(key_pem + chain[0].public_bytes(Encoding.PEM))
    return certificate, [Certificate.loadPEM(c.public_bytes(Encoding.PEM)).original for c in chain[1:]]
