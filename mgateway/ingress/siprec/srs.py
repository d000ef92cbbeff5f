"""
The Session Recording Server (RFC 7866): what a recording session means to
the gateway. Each accepted m-line gets an RTP socket whose decoded audio feeds
the call registry under the call's guid, one leg per m-line position (C{"0"},
C{"1"}, ...); BYE ends the call.
"""

from __future__ import annotations

import secrets
from functools import partial
from typing import Sequence

from twisted.internet.defer import DeferredList, maybeDeferred
from twisted.logger import Logger
from zope.interface import implementer

from mgateway.calls.errors import LegBusy
from mgateway.calls.namespaces import SIPREC as NAMESPACE
from mgateway.ingress.siprec.rtp_listener import RtpPorts, RtpReceiver
from mgateway.sip.callid import DEFAULT_ORDER, extract_call_id
from mgateway.sip.dialog import Dialog
from mgateway.sip.errors import NotAcceptableHere, SIPError
from mgateway.sip.message import Request, parse_name_addr
from mgateway.sip.metadata import RecordingMetadata, merge, parse_metadata
from mgateway.sip.multipart import recording_parts
from mgateway.sip.sdp import (
    DEFAULT_CODEC_PREFERENCE,
    SessionDescription,
    build_answer,
    compare_offers,
    parse_sdp,
)
from mgateway.sip.uas import ISessionHandler, PendingInvite, UserAgentServer

log = Logger()


def is_recording_session(request: Request) -> bool:
    """
    RFC 7866 §6: C{Require: siprec}, or the C{+sip.src} feature tag in
    Contact (BroadWorks writes C{src}). Either is enough: real clients often
    send only one.
    """
    if any(tag.lower() == "siprec" for tag in request.headers.get_list("Require")):
        return True
    for contact in request.headers.get_list("Contact"):
        try:
            address = parse_name_addr(contact)
        except SIPError:
            continue
        if address.has_param("+sip.src") or address.has_param("src"):
            return True
    return False


class RecordingSession:
    """One recording dialog: its offer, its RTP receivers by m-line index, its call attachments."""

    def __init__(self, guid: str, offer: SessionDescription, metadata: RecordingMetadata | None):
        self.guid = guid
        self.offer = offer
        self.metadata = metadata
        self.session_id = secrets.randbelow(2**31)
        self.version = 1
        self.receivers: dict[int, RtpReceiver] = {}
        #: Every attachment made for this recording, hung up when it ends.
        self.attachments = []

    @property
    def ports(self) -> dict[int, int]:
        """Our RTP port for each accepted m-line, by index."""
        return {index: receiver.port.getHost().port for index, receiver in self.receivers.items()}

    def close(self):
        """Release buffered audio, close the sockets and hang up: fires when the call is flushed."""
        closing = [maybeDeferred(receiver.close) for receiver in self.receivers.values()]
        closing += [attachment.hang_up() for attachment in self.attachments]
        self.receivers.clear()
        return DeferredList(closing, consumeErrors=True)


@implementer(ISessionHandler)
class RecordingServer:
    """
    @param ports: where RTP sockets come from.
    @param media_address: the address put in our SDP answers.
    @param codecs: what we decode, by static payload type.
    @param codec_preference: which codec a stream gets when its offer lists
        several we decode, first first.
    @param accept_plain: take INVITEs without SIPREC indicators as recordings
        (Cisco network-based recording sends none).
    """

    def __init__(self, clock, registry, ports: RtpPorts, *, media_address: str, codecs: dict[str, int],
                 codec_preference: Sequence[str] = DEFAULT_CODEC_PREFERENCE, accept_plain: bool = False, call_id_sources: Sequence[str] = DEFAULT_ORDER,
                 call_id_header: str | None = None):
        self.registry = registry
        self.ports = ports
        self.media_address = media_address
        self.codecs = dict(codecs)
        self.codec_preference = tuple(codec_preference)
        self.accept_plain = accept_plain
        self.call_id_sources = tuple(call_id_sources)
        self.call_id_header = call_id_header or None
        self.uas = UserAgentServer(clock, self)
        self._closing = []

    # -- ISessionHandler ------------------------------------------------------------

    def offered(self, invite: PendingInvite) -> None:
        request = invite.request
        if not (self.accept_plain or is_recording_session(request)):
            raise NotAcceptableHere("not a recording session (no Require: siprec, no +sip.src)")
        sdp, metadata = self._bodies(request, None)
        if sdp is None:
            raise NotAcceptableHere("an INVITE without an SDP offer is not supported")
        call_id = extract_call_id(request, metadata, self.call_id_sources, self.call_id_header)
        session = RecordingSession(call_id.value, sdp, metadata)
        try:
            answer = self._answer(session, sdp)
            dialog = self.uas.accept(invite, answer)
        except BaseException:
            session.close()
            raise
        if dialog is None:
            session.close()
            return
        dialog.context = session
        log.info("recording {sip_call_id} is call {guid} (from {source}), streams {streams}",
                 sip_call_id=request.call_id, guid=session.guid, source=call_id.source,
                 streams={i: r.codec for i, r in session.receivers.items()})

    def cancelled(self, invite: PendingInvite) -> None:
        log.info("recording {sip_call_id} cancelled before it was answered", sip_call_id=invite.request.call_id)

    def modified(self, dialog: Dialog, request: Request) -> str | None:
        session: RecordingSession = dialog.context
        sdp, metadata = self._bodies(request, session.metadata)
        session.metadata = metadata
        if sdp is None:
            return None
        for update in compare_offers(session.offer, sdp):
            if update.changed:
                log.info("call {guid}: m-line {index} changed: on hold {on_hold}, removed {removed}, "
                         "added {added}, from {address}:{port}", guid=session.guid, index=update.index,
                         on_hold=update.on_hold, removed=update.removed, added=update.added,
                         address=update.remote_address, port=update.remote_port)
        session.version += 1
        return self._answer(session, sdp)

    def ended(self, dialog: Dialog, reason: str) -> None:
        session: RecordingSession = dialog.context
        if session is None:
            return
        log.info("call {guid}: recording ended ({reason})", guid=session.guid, reason=reason)
        closing = session.close()
        self._closing.append(closing)
        closing.addBoth(lambda _: self._closing.remove(closing))

    # -- helpers ----------------------------------------------------------------------

    def _bodies(self, request: Request, previous: RecordingMetadata | None):
        """The request's SDP (parsed) and the metadata model updated by its metadata, if any."""
        sdp, metadata = recording_parts(request.content_type, request.body)
        if metadata is not None:
            try:
                previous = merge(previous, parse_metadata(metadata))
            except SIPError as error:
                # The audio can be recorded without it: say so and go on.
                log.warn("{call_id}: recording metadata ignored: {error}", call_id=request.call_id, error=str(error))
        return (parse_sdp(sdp) if sdp is not None else None), previous

    def _answer(self, session: RecordingSession, offer: SessionDescription) -> str:
        """
        Answer C{offer}: an m-line we already receive keeps its port; a new
        one gets a socket and a leg of the call; a stream the offer now
        refuses is closed, and a held one paused.
        """
        def port_for(index: int) -> int:
            if index not in session.receivers:
                receiver = self.ports.receiver()
                self.ports.listen(receiver)
                session.receivers[index] = receiver
            return session.ports[index]

        answer, accepted = build_answer(
            offer, local_ip=self.media_address, ports=port_for, session_id=session.session_id,
            version=session.version, codec_preference=self.codec_preference, supported=self.codecs)
        if not accepted:
            raise NotAcceptableHere("no stream with a codec we decode")
        new = [str(stream.index) for stream in accepted if session.receivers[stream.index].deliver is None]
        if new:
            attachment = self._attach(session, new)
            for leg in new:
                session.receivers[int(leg)].deliver = partial(attachment.audio, leg)
        kept = {stream.index for stream in accepted}
        for index in [i for i in session.receivers if i not in kept]:
            session.receivers.pop(index).close()
            for attachment in session.attachments:  # only the one feeding it lets go
                attachment.release(str(index))
        for stream in accepted:
            receiver = session.receivers[stream.index]
            receiver.use(stream.codec, stream.payload_type)
            receiver.hold(stream.on_hold)
        session.offer = offer
        return answer

    def _attach(self, session: RecordingSession, legs: list[str]):
        try:
            attachment = self.registry.attach(NAMESPACE, session.guid, legs)
        except LegBusy as error:
            raise SIPError(486, "Busy Here", f"call {session.guid} is already being recorded: {error}") from None
        session.attachments.append(attachment)
        return attachment

    def sessions(self) -> list[RecordingSession]:
        """The recordings in progress."""
        return [dialog.context for dialog in self.uas.dialogs.values() if dialog.context is not None]

    def close(self):
        """End every recording (BYE) and fire when every call is flushed."""
        self.uas.close()
        self.ports.stop()
        return DeferredList(list(self._closing), consumeErrors=True)
