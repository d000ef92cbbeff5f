"""
Real SIPREC bodies from tests/fixtures/siprec (MIT, see LICENSE and
PROVENANCE.md there), with CRLF line ends as they travel in SIP, and INVITEs
built around them.
"""

from __future__ import annotations

import re
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "siprec"

BODIES = (
    "drachtio_acme_fronting_avaya_ucid_body.txt",
    "drachtio_avaya_sbce_body.txt",
    "drachtio_broadworks_body_mangled.txt",
    "drachtio_cisco_cube_body.txt",
    "drachtio_cisco_cube_inactive_body.txt",
    "drachtio_connectel_opensips_body.txt",
    "drachtio_oracle_acme_body.txt",
    "drachtio_ribbon_sonus_body.txt",
    "drachtio_sems_procomm_body.txt",
)
FULL_INVITE = "drachtio_intrado_viper_invite.txt"


def crlf(data: bytes) -> bytes:
    return re.sub(rb"\r?\n", b"\r\n", data)


def sample(name: str) -> bytes:
    return crlf((FIXTURES / name).read_bytes())


def body_content_type(body: bytes) -> str:
    """The multipart Content-Type for a sample body, from its first delimiter line."""
    boundary = re.search(rb"^--(\S+)", body, re.MULTILINE)[1].decode()
    return f"multipart/mixed;boundary={boundary}"


def invite_around(body: bytes, content_type: str, extra_headers: str = "") -> bytes:
    """A SIPREC INVITE carrying C{body}, as a recording client sends it over UDP."""
    head = (
        "INVITE sip:srs@192.0.2.10:5060 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bK-sample-1\r\n"
        "Max-Forwards: 70\r\n"
        'From: "SRC" <sip:src@192.0.2.20>;tag=src-tag\r\n'
        "To: <sip:srs@192.0.2.10>\r\n"
        "Call-ID: rs-call-1@192.0.2.20\r\n"
        "CSeq: 1 INVITE\r\n"
        "Contact: <sip:src@192.0.2.20:5060>;+sip.src\r\n"
        "Require: siprec\r\n"
        f"{extra_headers}"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
    )
    return head.encode() + body
