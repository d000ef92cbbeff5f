# -*- test-case-name: tests.test_sip_uas -*-
"""
The server side of SIP sessions (RFC 3261 §§8.2, 12-15, RFC 3311), with no
I/O: requests come in through L{UserAgentServer.receive} with the channel they
arrived on, responses and BYEs leave through that channel, and every timer
runs on the injected clock.

What a session is for (recording, here) is the business of an
L{ISessionHandler}: the server asks it to answer offers and tells it when a
session ends. The server itself does the protocol: 100 Trying at once, the 2xx
to INVITE retransmitted until the ACK (a session never acknowledged is ended
with a BYE), CANCEL, BYE, OPTIONS, re-INVITE and UPDATE inside a dialog, 481
for unknown dialogs, 491 for an offer on top of an unacknowledged one, 420 for
unknown required extensions.
"""

from __future__ import annotations

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import Interface

from mgateway.sip.dialog import Dialog, contact_uri, dialog_id, new_tag
from mgateway.sip.errors import ParseError, ServiceUnavailable, SIPError
from mgateway.sip.message import (
    Headers,
    Request,
    Response,
    header_key,
    response_for,
    serialize,
    split_head,
)
from mgateway.sip.multipart import ACCEPTED_TYPES
from mgateway.sip.session_timer import IntervalTooSmall, SessionTimer, negotiate
from mgateway.sip.transaction import T1, T2, T4, ServerTransactions

log = Logger()

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO"
SUPPORTED = ("siprec", "timer")
#: The Request-URI schemes we serve; any other gets 416 (RFC 3261 §8.2.2.1).
URI_SCHEMES = ("sip", "sips")
ACCEPT = ", ".join(ACCEPTED_TYPES)


class ISessionHandler(Interface):
    """What sessions are for: answers offers, learns of their end."""

    def offered(invite: PendingInvite) -> None:
        """
        A new session is offered: answer it, now or later, with
        L{UserAgentServer.accept} or L{UserAgentServer.reject}. Raising a
        L{SIPError} rejects it.
        """

    def cancelled(invite: PendingInvite) -> None:
        """The offer was withdrawn (CANCEL) before it was answered."""

    def modified(dialog: Dialog, request: Request) -> str | None:
        """
        A re-INVITE or UPDATE in C{dialog}: the session description to answer
        with (None: the request carried no offer). Raise L{SIPError} to refuse
        the change; the session goes on as it was.
        """

    def acknowledged(dialog: Dialog, ack: Request) -> None:
        """
        The ACK of the 2xx that carried our offer (the INVITE had none: a
        delayed offer, RFC 3261 §13.2.1) came with the answer in its body.
        Raising L{SIPError} ends the session with a BYE.
        """

    def ended(dialog: Dialog, reason: str) -> None:
        """The session is over (BYE, never acknowledged, server shut down)."""


@attrs.define
class PendingInvite:
    """An initial INVITE waiting for its final response."""

    request: Request
    channel: object
    local_tag: str
    timer: SessionTimer | None = None
    answered: bool = False
    cancelled: bool = False


class UserAgentServer:
    def __init__(self, clock: IReactorTime, handler: ISessionHandler, *,
                 t1: float = T1, t2: float = T2, t4: float = T4):
        self.clock = clock
        self.handler = handler
        self.t1, self.t2 = t1, t2
        self.transactions = ServerTransactions(clock, t1=t1, t2=t2, t4=t4)
        self.dialogs: dict[tuple, Dialog] = {}
        self._pending: dict[tuple, PendingInvite] = {}
        self._byes: dict[str, object] = {}

    # -- input ------------------------------------------------------------------

    def receive(self, message: Request | Response, channel) -> None:
        """Handle one parsed message that arrived on C{channel}."""
        if isinstance(message, Response):
            self._response(message)
            return
        if not self.transactions.receive(message, channel):
            return
        try:
            self._dispatch(message, channel)
        except SIPError as error:
            log.info("{method} {call_id}: {error}", method=message.method,
                     call_id=message.call_id, error=str(error))
            if message.method != "ACK":
                self._error(message, error)
        except Exception:
            # A bug must cost one request, not the server: the peer gets a 500.
            log.failure("{method} {call_id} failed", method=message.method, call_id=message.call_id)
            if message.method != "ACK":
                self._error(message, SIPError(500, "Server Internal Error"))

    def malformed(self, data: bytes, error: SIPError, channel) -> None:
        """
        Answer a request that did not parse with C{error}'s status, when it
        has the headers a response needs (RFC 3261 §8.2.6); drop anything else.
        """
        log.info("malformed message from {channel}: {error}", channel=channel, error=str(error))
        try:
            line, headers, _ = split_head(data)
        except SIPError:
            return
        needed = ("Via", "From", "To", "Call-ID", "CSeq")
        if line.upper().startswith("SIP/") or line.split(" ", 1)[0] == "ACK" or not all(
            name in headers for name in needed
        ):
            return
        keys = {header_key(name) for name in needed}
        copied = Headers((name, value) for name, value in headers if header_key(name) in keys)
        response = Response(error.status, error.reason, copied.with_header("Warning", _warning(error)))
        channel.send(serialize(response))

    def _dispatch(self, request: Request, channel) -> None:
        method = request.method
        if method == "ACK":
            return self._ack(request)
        if method == "CANCEL":
            return self._cancel(request)
        if request.uri.partition(":")[0].lower() not in URI_SCHEMES:
            raise SIPError(416, "Unsupported URI Scheme", f"Request-URI scheme not served: {request.uri[:40]!r}")
        unsupported = [tag for tag in request.headers.get_list("Require") if tag.lower() not in SUPPORTED]
        if unsupported:
            return self._respond(request, 420, "Bad Extension", [("Unsupported", ", ".join(unsupported))])
        if method == "OPTIONS":
            return self._respond(request, 200, "OK", self._capabilities(), to_tag=new_tag())
        # Max-Forwards is a proxy's business (RFC 3261 §16.3): as the endpoint
        # a request is addressed to, we process it even at 0.
        if method == "INVITE" and request.to_address.tag is None:
            return self._invite(request, channel)
        if method not in ("INVITE", "UPDATE", "BYE", "INFO"):
            return self._respond(request, 501, "Not Implemented", [("Allow", ALLOW)])
        dialog = self.dialogs.get(self._dialog_of(request))
        if dialog is None:
            return self._respond(request, 481, "Call/Transaction Does Not Exist")
        if request.cseq.number <= dialog.remote_cseq:
            return self._respond(request, 500, "Server Internal Error", [("Retry-After", "1")])
        dialog.remote_cseq = request.cseq.number
        if method == "BYE":
            self._respond(request, 200, "OK")
            self._end(dialog, "BYE")
        elif method == "INFO":
            self._respond(request, 200, "OK")
        else:
            self._modify(dialog, request)

    @staticmethod
    def _dialog_of(request: Request) -> tuple:
        return dialog_id(request.call_id, request.to_address.tag, request.from_address.tag)

    # -- initial INVITE ------------------------------------------------------------

    def _invite(self, request: Request, channel) -> None:
        if not request.headers.get_list("Contact"):
            # RFC 3261 §8.1.1.8: without it the dialog has no remote target.
            raise ParseError("an INVITE must carry a Contact header")
        pending = PendingInvite(request, channel, new_tag(), negotiate(request))
        self._respond(request, 100, "Trying")
        key = self.transactions.find(request).key
        self._pending[key] = pending
        try:
            self.handler.offered(pending)
        except SIPError as error:
            log.info("INVITE {call_id} refused: {error}", call_id=request.call_id, error=str(error))
            self.reject(pending, error)
        except Exception:
            log.failure("INVITE {call_id} failed", call_id=request.call_id)
            self.reject(pending, SIPError(500, "Server Internal Error"))

    def accept(self, pending: PendingInvite, answer: str, *, offering: bool = False) -> Dialog | None:
        """
        Answer the INVITE with 200 and C{answer} (SDP); the new dialog, or None
        when the INVITE was cancelled meanwhile. With C{offering} (the INVITE
        had no offer), C{answer} is our offer, and the ACK's answer goes to
        L{ISessionHandler.acknowledged}.
        """
        if pending.answered or pending.cancelled:
            return None
        request = pending.request
        # Built before the INVITE counts as answered: should it fail, the
        # caller's refusal still reaches the peer (a final response, always).
        dialog = Dialog(request, pending.channel, pending.local_tag, answer)
        pending.answered = True
        self._forget_pending(pending)
        dialog.timer = pending.timer
        dialog.awaiting_answer = offering
        self.dialogs[dialog.id] = dialog
        self._send_2xx(dialog, request, answer)
        return dialog

    def reject(self, pending: PendingInvite, error: SIPError) -> None:
        if pending.answered or pending.cancelled:
            return
        pending.answered = True
        self._forget_pending(pending)
        self._error(pending.request, error, to_tag=pending.local_tag)

    def _forget_pending(self, pending: PendingInvite) -> None:
        transaction = self.transactions.find(pending.request)
        if transaction is not None:
            self._pending.pop(transaction.key, None)

    def _cancel(self, request: Request) -> None:
        transaction = self.transactions.invite_cancelled_by(request)
        if transaction is None:
            return self._respond(request, 481, "Call/Transaction Does Not Exist")
        pending = self._pending.pop(transaction.key, None)
        # The To tag is the one the INVITE's response has (RFC 3261 §9.2).
        tag = pending.local_tag if pending else self._local_tag(request)
        self._respond(request, 200, "OK", to_tag=tag)
        if transaction.final:
            return
        self._respond(transaction.request, 487, "Request Terminated", to_tag=tag)
        if pending is None:
            return
        pending.cancelled = True
        log.info("INVITE {call_id} cancelled", call_id=pending.request.call_id)
        self.handler.cancelled(pending)

    def _local_tag(self, request: Request) -> str | None:
        """Our tag in the dialog the request's INVITE set up, if it did."""
        remote = request.from_address.tag
        return next((d.local_tag for d in self.dialogs.values()
                     if d.call_id == request.call_id and d.remote_tag == remote), None)

    # -- inside a dialog --------------------------------------------------------------

    def _modify(self, dialog: Dialog, request: Request) -> None:
        if request.method == "INVITE" and dialog.unacknowledged is not None:
            return self._respond(request, 491, "Request Pending", [("Retry-After", "1")])
        if request.method == "INVITE":
            self._respond(request, 100, "Trying")
        timer = negotiate(request)
        answer = self.handler.modified(dialog, request)
        dialog.refresh_target(request)
        dialog.timer = timer
        if request.method == "UPDATE":
            self._arm_session_timer(dialog)
            extra = self._session_headers(dialog)
            body = b""
            if answer is not None:
                dialog.answer = answer
                extra.append(("Content-Type", "application/sdp"))
                body = answer.encode()
            return self._respond(request, 200, "OK", extra, body)
        if answer is not None:
            dialog.answer = answer
        dialog.unacknowledged = request.cseq.number
        self._send_2xx(dialog, request, dialog.answer)

    def _send_2xx(self, dialog: Dialog, request: Request, answer: str) -> None:
        """The 2xx to an INVITE, retransmitted from T1 doubling to T2 until the ACK (§13.3.1.4)."""
        extra = self._session_headers(dialog) + [("Content-Type", "application/sdp")]
        response = response_for(request, 200, "OK", extra, answer.encode(), to_tag=dialog.local_tag)
        self._arm_session_timer(dialog)
        self.transactions.respond(request, response)
        data = serialize(response)
        dialog.stop_retransmission()
        dialog.retransmission = self.clock.callLater(self.t1, self._retransmit_2xx, dialog, data, self.t1, self.t1)

    def _arm_session_timer(self, dialog: Dialog) -> None:
        """(Re)start waiting for the next refresh, if the session has a timer."""
        if dialog.expiry is not None and dialog.expiry.active():
            dialog.expiry.cancel()
        dialog.expiry = None
        if dialog.timer is not None:
            dialog.expiry = self.clock.callLater(dialog.timer.expires_after, self.hang_up, dialog, "session expired")

    def _retransmit_2xx(self, dialog: Dialog, data: bytes, interval: float, waited: float) -> None:
        if waited >= 64 * self.t1:
            log.warn("call {call_id}: no ACK for the 200 OK in {seconds} s; ending it",
                     call_id=dialog.call_id, seconds=waited)
            dialog.unacknowledged = dialog.retransmission = None
            self.hang_up(dialog, "no ACK")
            return
        dialog.channel.send(data)
        interval = min(2 * interval, self.t2)
        delay = min(interval, 64 * self.t1 - waited)
        dialog.retransmission = self.clock.callLater(
            delay, self._retransmit_2xx, dialog, data, interval, waited + delay)

    def _ack(self, request: Request) -> None:
        dialog = self.dialogs.get(self._dialog_of(request))
        if dialog is None or dialog.unacknowledged != request.cseq.number:
            return
        dialog.unacknowledged = None
        dialog.stop_retransmission()
        if dialog.awaiting_answer:
            dialog.awaiting_answer = False
            try:
                self.handler.acknowledged(dialog, request)
            except SIPError as error:
                log.info("call {call_id}: the ACK's answer is refused: {error}", call_id=dialog.call_id,
                         error=str(error))
                self.hang_up(dialog, f"no usable answer in the ACK: {error}")

    # -- ending ---------------------------------------------------------------------

    def hang_up(self, dialog: Dialog, reason: str) -> None:
        """End C{dialog} from our side: send a BYE (retransmitted until answered) and end the session."""
        if self.dialogs.get(dialog.id) is not dialog:
            return
        bye = dialog.bye()
        branch = bye.vias[0].branch
        self._byes[branch] = dialog
        data = serialize(bye)
        dialog.channel.send(data)
        if not dialog.channel.reliable:
            self.clock.callLater(self.t1, self._retransmit_bye, branch, dialog.channel, data, self.t1, self.t1)
        self._end(dialog, reason)

    def _retransmit_bye(self, branch: str, channel, data: bytes, interval: float, waited: float) -> None:
        """Timer E of the BYE's client transaction, until a response or Timer F."""
        if branch not in self._byes:
            return
        if waited >= 64 * self.t1:
            del self._byes[branch]
            return
        channel.send(data)
        interval = min(2 * interval, self.t2)
        self.clock.callLater(interval, self._retransmit_bye, branch, channel, data, interval, waited + interval)

    def _response(self, response: Response) -> None:
        try:
            branch = response.vias[0].branch
        except (SIPError, IndexError):
            return
        if response.status >= 200 and self._byes.pop(branch, None) is not None:
            log.info("BYE for {call_id} answered {status}", call_id=response.call_id, status=response.status)

    def _end(self, dialog: Dialog, reason: str) -> None:
        dialog.stop_retransmission()
        dialog.timer = None
        self._arm_session_timer(dialog)
        if self.dialogs.pop(dialog.id, None) is not None:
            log.info("call {call_id} ended: {reason}", call_id=dialog.call_id, reason=reason)
            self.handler.ended(dialog, reason)

    def close(self) -> None:
        """Shut down: every session is ended with a BYE, every timer stopped."""
        for dialog in list(self.dialogs.values()):
            self.hang_up(dialog, "shutting down")
        self._byes.clear()
        self.transactions.close()

    # -- responses ------------------------------------------------------------------

    def _capabilities(self) -> list[tuple[str, str]]:
        return [("Allow", ALLOW), ("Accept", ACCEPT), ("Supported", ", ".join(SUPPORTED))]

    def _session_headers(self, dialog: Dialog) -> list[tuple[str, str]]:
        headers = [("Contact", contact_uri(dialog.channel)), ("Allow", ALLOW), ("Supported", ", ".join(SUPPORTED))]
        return headers + (dialog.timer.headers() if dialog.timer is not None else [])

    def _respond(self, request: Request, status: int, reason: str, extra=(), body: bytes = b"",
                 to_tag: str | None = None) -> None:
        if to_tag is None and status > 100 and request.to_address.tag is None:
            to_tag = new_tag()
        if status >= 300 and not any(name == "Warning" for name, _ in extra):
            extra = [*extra, ("Warning", _warning(SIPError(status, reason)))]
        self.transactions.respond(request, response_for(request, status, reason, extra, body, to_tag=to_tag))

    def _error(self, request: Request, error: SIPError, to_tag: str | None = None) -> None:
        extra = [("Accept", ACCEPT)] if error.status == 415 else []
        if isinstance(error, IntervalTooSmall):
            extra.append(("Min-SE", str(error.minimum)))
        if isinstance(error, ServiceUnavailable):
            extra.append(("Retry-After", str(error.retry_after)))
        extra.append(("Warning", _warning(error)))
        self._respond(request, error.status, error.reason, extra, to_tag=to_tag)


def _warning(error: SIPError) -> str:
    """
    A Warning header (RFC 3261 §20.43, code 399) saying why a request was
    refused (what was malformed, what is busy), so that the peer's logs show it.
    """
    text = "".join(c for c in (error.detail or error.reason) if c.isprintable() and c not in '"\\')[:200]
    return f'399 asapp-mg "{text}"'
