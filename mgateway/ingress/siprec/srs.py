# -*- test-case-name: tests.test_siprec_server,tests.test_siprec_sessions,tests.test_siprec_api -*-
"""
The Session Recording Server (RFC 7866): what a recording session means to
the gateway. Each accepted m-line gets an RTP socket whose decoded audio feeds
the call registry under the call's guid, one leg per m-line position (C{"0"},
C{"1"}, ...); BYE ends the call.

Also:

  - a recording of one m-line takes the first participant leg of its guid
    still free, so two such recordings of one call (Cisco CUCM's
    built-in-bridge sends one per party, both with the same Cisco-Guid) form
    one call, one participant each;
  - an INVITE without an offer (CUCM again) gets our offer in the 200, and
    the ACK's answer sets the codec;
  - a recording whose streams send nothing for C{media_timeout} is ended
    (BYE, last words flushed), and a new INVITE for the guid of a recording
    silent for C{replace_silent_after} takes its place (an SBC that failed
    over without a BYE), the call's transcription carrying on.
"""

from __future__ import annotations

import secrets
from functools import partial
from typing import Sequence

from twisted.internet.defer import DeferredList, maybeDeferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from mgateway.calls.errors import LegBusy
from mgateway.calls.namespaces import SIPREC as NAMESPACE
from mgateway.ingress.siprec.rtp_listener import RtpPorts, RtpReceiver
from mgateway.sip.callid import DEFAULT_ORDER, extract_call_id
from mgateway.sip.dialog import Dialog
from mgateway.sip.errors import NotAcceptableHere, ServiceUnavailable, SIPError
from mgateway.sip.grammar import parse_contact
from mgateway.sip.message import Request
from mgateway.sip.metadata import RecordingMetadata, merge, parse_metadata
from mgateway.sip.multipart import recording_parts
from mgateway.sip.sdp import (
    SessionDescription,
    build_answer,
    build_offer,
    compare_offers,
    parse_sdp,
)
from mgateway.sip.uas import ISessionHandler, PendingInvite, UserAgentServer

log = Logger()

#: How often recordings are checked for streams that went silent.
MEDIA_CHECK_SECONDS = 1.0


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
            address = parse_contact(contact)
        except SIPError:
            continue
        if address.has_param("+sip.src") or address.has_param("src"):
            return True
    return False


class RecordingSession:
    """One recording dialog: its offer, its RTP receivers by m-line index, its call attachments."""

    def __init__(self, guid: str, offer: SessionDescription | None, metadata: RecordingMetadata | None,
                 started: float = 0.0):
        self.guid = guid
        self.offer = offer
        self.metadata = metadata
        self.session_id = secrets.randbelow(2**31)
        self.version = 1
        self.started = started
        self.receivers: dict[int, RtpReceiver] = {}
        #: The call's leg each m-line feeds, by m-line index.
        self.legs: dict[int, str] = {}
        #: Every attachment made for this recording, hung up when it ends.
        self.attachments = []

    def silent_since(self) -> float:
        """When the last RTP packet of any stream came (when the recording began, if none did)."""
        return max([self.started] + [r.heard for r in self.receivers.values() if r.heard is not None])

    @property
    def sending(self) -> bool:
        """Whether some stream is expected to carry media (one not on hold)."""
        return any(not receiver.on_hold for receiver in self.receivers.values())

    def flush(self) -> None:
        """Deliver what the jitter buffers hold, before this recording's legs are handed over."""
        for receiver in self.receivers.values():
            receiver.flush()

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
    @param codecs: what we decode, by static payload type (answers take
        those the offer lists, in the offer's order).
    @param accept_plain: take INVITEs without SIPREC indicators as recordings
        (Cisco network-based recording sends none).
    @param media_timeout: seconds without RTP on any stream not on hold after
        which a recording is ended; 0: never.
    @param replace_silent_after: seconds without RTP after which a recording
        gives way to a new INVITE for its guid.
    @param admission: the L{mgateway.interfaces.IAdmission} a new dialog's
        INVITE asks (re-INVITEs, UPDATEs and BYEs of a dialog never do);
        None: every INVITE is taken.
    """

    def __init__(self, clock, registry, ports: RtpPorts, *, media_address: str, codecs: dict[str, int],
                 accept_plain: bool = False, call_id_sources: Sequence[str] = DEFAULT_ORDER,
                 call_id_header: str | None = None, media_timeout: float = 60,
                 replace_silent_after: float = 10, admission=None):
        self.registry = registry
        self.admission = admission
        self.ports = ports
        self.media_address = media_address
        self.codecs = dict(codecs)
        self.accept_plain = accept_plain
        self.call_id_sources = tuple(call_id_sources)
        self.call_id_header = call_id_header or None
        self.clock = clock
        self.media_timeout = media_timeout
        self.replace_silent_after = replace_silent_after
        self.uas = UserAgentServer(clock, self)
        self._closing = []
        self._checking = LoopingCall(self._check_media)
        self._checking.clock = clock

    # -- ISessionHandler ------------------------------------------------------------

    def offered(self, invite: PendingInvite) -> None:
        request = invite.request
        if not (self.accept_plain or is_recording_session(request)):
            raise NotAcceptableHere("not a recording session (no Require: siprec, no +sip.src)")
        sdp, metadata = self._bodies(request, None)
        self._admit(request, sdp)
        call_id = extract_call_id(request, metadata, self.call_id_sources, self.call_id_header)
        session = RecordingSession(call_id.value, sdp, metadata, started=self.clock.seconds())
        try:
            if sdp is None:
                dialog = self.uas.accept(invite, self._offer(session), offering=True)
            else:
                dialog = self.uas.accept(invite, self._answer(session, sdp))
        except BaseException:
            session.close()
            raise
        if dialog is None:
            session.close()
            return
        dialog.context = session
        if self.media_timeout and not self._checking.running:
            self._checking.start(MEDIA_CHECK_SECONDS, now=False).addErrback(
                lambda failure: log.failure("the media timeout check stopped", failure))
        log.info("recording {sip_call_id} is call {guid} (from {source}), streams {streams}",
                 sip_call_id=request.call_id, guid=session.guid, source=call_id.source,
                 streams={i: r.codec for i, r in session.receivers.items()})

    def _admit(self, request: Request, sdp: SessionDescription | None) -> None:
        """A new recording only when the node takes it: else 503 with Retry-After."""
        if self.admission is None:
            return
        refusal = self.admission.refusal(len(sdp.media) if sdp is not None else 2)
        if refusal is not None:
            log.info("recording {sip_call_id} refused: {reason}", sip_call_id=request.call_id,
                     reason=refusal.reason)
            raise ServiceUnavailable(refusal.description, refusal.retry_after)

    def acknowledged(self, dialog: Dialog, ack: Request) -> None:
        """The answer to our offer (delayed offer): it says which codec comes."""
        session: RecordingSession = dialog.context
        sdp, session.metadata = self._bodies(ack, session.metadata)
        if sdp is None:
            raise NotAcceptableHere("the ACK carries no answer to our offer")
        self._answer(session, sdp)
        log.info("call {guid}: the answer in the ACK of {sip_call_id} chose {streams}", guid=session.guid,
                 sip_call_id=dialog.call_id, streams={i: r.codec for i, r in session.receivers.items()})

    def cancelled(self, invite: PendingInvite) -> None:
        log.info("recording {sip_call_id} cancelled before it was answered", sip_call_id=invite.request.call_id)

    def modified(self, dialog: Dialog, request: Request) -> str | None:
        session: RecordingSession = dialog.context
        sdp, metadata = self._bodies(request, session.metadata)
        session.metadata = metadata
        if sdp is None:
            return None
        for update in compare_offers(session.offer, sdp) if session.offer is not None else ():
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
            version=session.version, supported=self.codecs)
        if not accepted:
            raise NotAcceptableHere("no stream with a codec we decode")
        new = [stream.index for stream in accepted if session.receivers[stream.index].deliver is None]
        if new:
            self._feed(session, new, single=len(offer.media) == 1)
        kept = {stream.index for stream in accepted}
        for index in [i for i in session.receivers if i not in kept]:
            session.receivers.pop(index).close()
            leg = session.legs.pop(index, str(index))
            for attachment in session.attachments:  # only the one feeding it lets go
                attachment.release(leg)
        for stream in accepted:
            receiver = session.receivers[stream.index]
            receiver.use(stream.formats, stream.telephone_event_pt)
            receiver.hold(stream.on_hold)
        session.offer = offer
        return answer

    def _offer(self, session: RecordingSession) -> str:
        """Our offer for an INVITE that brought none: one stream, fed into the call now, its codec set by the ACK."""
        receiver = self.ports.receiver()
        session.receivers[0] = receiver
        port = self.ports.listen(receiver)
        self._feed(session, [0], single=True)
        offer = build_offer(local_ip=self.media_address, port=port, session_id=session.session_id,
                            version=session.version, supported=self.codecs)
        session.offer = parse_sdp(offer)
        return offer

    def _feed(self, session: RecordingSession, indexes: list[int], single: bool) -> None:
        """Attach the m-lines at C{indexes} to the call, each as its leg."""
        if single and not session.legs:
            # A one-stream recording is one participant: the next one the call lacks.
            now = self.clock.seconds()
            taken = {leg for _, other in self._recordings_of(session.guid)
                     if now - other.silent_since() < self.replace_silent_after for leg in other.legs.values()}
            legs = {indexes[0]: next((leg for leg in ("0", "1") if leg not in taken), "0")}
        else:
            legs = {index: str(index) for index in indexes}
        attachment = self._attach(session, list(legs.values()))
        for index, leg in legs.items():
            session.legs[index] = leg
            session.receivers[index].deliver = partial(attachment.audio, leg)
            session.receivers[index].stream = (session.guid, leg)

    def _attach(self, session: RecordingSession, legs: list[str]):
        try:
            attachment = self.registry.attach(NAMESPACE, session.guid, legs)
        except LegBusy as error:
            replaced = self._hand_over(session.guid, legs)
            if not replaced:
                raise SIPError(486, "Busy Here", f"call {session.guid} is already being recorded: {error}") from None
            attachment = self.registry.attach(NAMESPACE, session.guid, legs)
            # Ended once the new recording feeds the call, so that the call lives on.
            for dialog in replaced:
                self.uas.hang_up(dialog, "replaced by a new recording of its call")
        session.attachments.append(attachment)
        return attachment

    def _recordings_of(self, guid: str) -> list[tuple[Dialog, RecordingSession]]:
        return [(dialog, dialog.context) for dialog in list(self.uas.dialogs.values())
                if dialog.context is not None and dialog.context.guid == guid]

    def _hand_over(self, guid: str, legs: list[str]) -> list[Dialog]:
        """
        Release the C{legs} of C{guid} from the recordings that feed them, if
        every one of those has been silent for C{replace_silent_after} (an
        SBC that failed over), their buffered audio delivered first; their
        dialogs, to end (none: the legs are still in use).
        """
        now = self.clock.seconds()
        holders = [(dialog, session) for dialog, session in self._recordings_of(guid)
                   if set(session.legs.values()) & set(legs)]
        if not holders or any(now - session.silent_since() < self.replace_silent_after for _, session in holders):
            return []
        for dialog, session in holders:
            log.info("call {guid}: recording {sip_call_id}, silent for {seconds:.0f} s, gives way to a new one",
                     guid=guid, sip_call_id=dialog.call_id, seconds=now - session.silent_since())
            session.flush()
            for attachment in session.attachments:
                for leg in attachment.legs:
                    attachment.release(leg)
        return [dialog for dialog, _ in holders]

    def _check_media(self) -> None:
        """End every recording whose streams have sent nothing for C{media_timeout}."""
        now = self.clock.seconds()
        for dialog in list(self.uas.dialogs.values()):
            session = dialog.context
            if session is None or not session.sending:
                continue
            silent = now - session.silent_since()
            if silent >= self.media_timeout:
                log.warn("call {guid}: no RTP for {seconds:.0f} s on recording {sip_call_id}; ending it",
                         guid=session.guid, seconds=silent, sip_call_id=dialog.call_id)
                self.uas.hang_up(dialog, "no media")

    def sessions(self) -> list[RecordingSession]:
        """The recordings in progress."""
        return [dialog.context for dialog in self.uas.dialogs.values() if dialog.context is not None]

    def close(self):
        """End every recording (BYE) and fire when every call is flushed."""
        if self._checking.running:
            self._checking.stop()
        self.uas.close()
        self.ports.stop()
        return DeferredList(list(self._closing), consumeErrors=True)
