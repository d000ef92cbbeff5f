# -*- test-case-name: tests.test_sip_uas -*-
"""
A dialog (RFC 3261 §12) as the server side holds it: the identifiers and
targets needed to recognise its requests and to send it a BYE, and the 2xx
to INVITE that is retransmitted until the ACK comes.
"""

from __future__ import annotations

import secrets

from twisted.internet.interfaces import IDelayedCall

from mgateway.sip.errors import SIPError
from mgateway.sip.grammar import parse_contact
from mgateway.sip.message import Headers, Request


def new_tag() -> str:
    return secrets.token_hex(8)


def new_branch() -> str:
    return "z9hG4bK" + secrets.token_hex(10)


def dialog_id(call_id: str, local_tag: str | None, remote_tag: str | None) -> tuple:
    return (call_id, local_tag, remote_tag)


class Dialog:
    """
    One dialog, created by the 2xx to an INVITE.

    @ivar context: what the session handler keeps for this dialog.
    @ivar remote_cseq: the highest CSeq number received from the peer.
    @ivar unacknowledged: the CSeq number of the 2xx to INVITE still waiting
        for its ACK, or None.
    @ivar answer: the session description we sent last.
    """

    def __init__(self, invite: Request, channel, local_tag: str, answer: str):
        self.call_id = invite.call_id
        self.local_tag = local_tag
        self.remote_tag = invite.from_address.tag
        self.channel = channel
        self.local_uri = invite.headers.get("To", "") + f";tag={local_tag}"
        self.remote_uri = invite.headers.get("From", "")
        self.route_set = list(invite.headers.get_all("Record-Route"))
        self.remote_target = invite.from_address.uri
        self.refresh_target(invite)
        self.remote_cseq = invite.cseq.number
        self.local_cseq = 0
        self.unacknowledged: int | None = invite.cseq.number
        self.retransmission: IDelayedCall | None = None
        #: The session timer (RFC 4028) and the call that ends the session when no refresh comes.
        self.timer = None
        self.expiry: IDelayedCall | None = None
        self.answer = answer
        #: Our 2xx carried the offer (a delayed offer): its ACK brings the answer.
        self.awaiting_answer = False
        self.context: object = None

    @property
    def id(self) -> tuple:
        return dialog_id(self.call_id, self.local_tag, self.remote_tag)

    def refresh_target(self, request: Request) -> None:
        """
        A target refresh request (INVITE, UPDATE) may move the peer's Contact.
        A Contact that cannot be read even leniently (L{parse_contact}) leaves
        the target where it was: the dialog still works, its BYE goes to the
        From URI or the last good Contact.
        """
        contact = request.headers.get_list("Contact")
        if contact:
            try:
                self.remote_target = parse_contact(contact[0]).uri
            except SIPError:
                pass

    def stop_retransmission(self) -> None:
        if self.retransmission is not None and self.retransmission.active():
            self.retransmission.cancel()
        self.retransmission = None

    def bye(self) -> Request:
        """A BYE ending the dialog from our side (RFC 3261 §15.1.1)."""
        self.local_cseq += 1
        channel = self.channel
        headers = [
            ("Via", f"SIP/2.0/{channel.transport} {_host_port(channel)};branch={new_branch()};rport"),
            ("Max-Forwards", "70"),
            ("From", self.local_uri),
            ("To", self.remote_uri),
            ("Call-ID", self.call_id),
            ("CSeq", f"{self.local_cseq} BYE"),
        ]
        headers.extend(("Route", route) for route in self.route_set)
        return Request("BYE", self.remote_target, Headers(headers))


def _host_port(channel) -> str:
    host = f"[{channel.local_host}]" if ":" in channel.local_host else channel.local_host
    return f"{host}:{channel.local_port}"


def contact_uri(channel) -> str:
    """Our Contact for a dialog set up on C{channel}, with the SIPREC server feature tag."""
    transport = "" if channel.transport == "UDP" else f";transport={channel.transport.lower()}"
    return f"<sip:srs@{_host_port(channel)}{transport}>;+sip.srs"
