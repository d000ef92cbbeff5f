"""
Which HTTPS servers the webhook trusts: those the platform's certificate
authorities vouch for or, when the operator configures C{webhook.ca_file},
exactly those signed by the authorities in that PEM bundle (the spec's
"custom CA" authentication) and no others.
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from twisted.internet.ssl import Certificate, trustRootFromCertificates
from twisted.web.client import BrowserLikePolicyForHTTPS
from twisted.web.iweb import IPolicyForHTTPS

from mgateway.errors import ConfigError


def trust_policy(ca_file: Path | None) -> IPolicyForHTTPS:
    """
    The TLS policy for an L{twisted.web.client.Agent}: the server's name is
    checked against its certificate in both cases, and TLS 1.2 is the least
    accepted (Twisted's default minimum).

    @raise ConfigError: C{ca_file} holds no readable certificate.
    """
    if ca_file is None:
        return BrowserLikePolicyForHTTPS()
    return BrowserLikePolicyForHTTPS(trustRoot=trustRootFromCertificates(load_ca_bundle(ca_file)))


def load_ca_bundle(path: Path) -> list[Certificate]:
    """Every certificate of a PEM file, in file order."""
    try:
        certificates = x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError) as e:
        raise ConfigError(f"webhook.ca_file: no CA certificate could be read from {path}: {e}") from None
    return [Certificate.loadPEM(c.public_bytes(Encoding.PEM)) for c in certificates]
