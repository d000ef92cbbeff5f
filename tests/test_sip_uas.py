"""
The SIP server core and its transactions, driven message by message with a
fake channel and a deterministic clock.
"""

import attrs
import pytest
from twisted.internet.task import Clock
from zope.interface import implementer
from zope.interface.verify import verifyObject

from mgateway.sip.channel import ISipChannel
from mgateway.sip.errors import NotAcceptableHere, ParseError, SIPError
from mgateway.sip.message import Request, Response, parse_message
from mgateway.sip.transaction import T1, T2
from mgateway.sip.uas import ISessionHandler, UserAgentServer

ANSWER = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"


@implementer(ISipChannel)
@attrs.define
class FakeChannel:
    reliable: bool = False
    transport: str = "UDP"
    local_host: str = "127.0.0.1"
    local_port: int = 5070
    sent: list = attrs.Factory(list)

    def send(self, data: bytes) -> None:
        self.sent.append(parse_message(data))

    def take(self) -> list:
        sent, self.sent = self.sent, []
        return sent

    def statuses(self) -> list:
        return [m.status if isinstance(m, Response) else m.method for m in self.take()]


@implementer(ISessionHandler)
class Handler:
    """Answers at once unless told to wait; records what it was told."""

    def __init__(self, answer_now=True, refuse=None):
        self.answer_now = answer_now
        self.refuse = refuse
        self.server = None
        self.pending = []
        self.modifications = []
        self.endings = []
        self.cancellations = []
        self.acknowledgements = []

    def offered(self, invite):
        if self.refuse is not None:
            raise self.refuse
        self.pending.append(invite)
        if self.answer_now:
            self.server.accept(invite, ANSWER, offering=not invite.request.body)

    def cancelled(self, invite):
        self.cancellations.append(invite)

    def modified(self, dialog, request):
        self.modifications.append(request)
        return ANSWER.replace("4000", "4002") if request.body else None

    def acknowledged(self, dialog, ack):
        self.acknowledgements.append(ack)

    def ended(self, dialog, reason):
        self.endings.append(reason)


def request(method, cseq=1, branch="z9hG4bK-1", to_tag=None, extra="", body=b"", call_id="call-1", from_tag="src"):
    to = "<sip:srs@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
    head = (
        f"{method} sip:srs@127.0.0.1:5070 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5060;branch={branch}\r\n"
        f"From: <sip:src@127.0.0.1>;tag={from_tag}\r\n"
        f"To: {to}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {method}\r\n"
        "Contact: <sip:src@127.0.0.1:5060>;+sip.src\r\n"
        "Max-Forwards: 70\r\n"
        f"{extra}"
        + ("Content-Type: application/sdp\r\n" if body else "")
        + f"Content-Length: {len(body)}\r\n\r\n"
    )
    return parse_message(head.encode() + body)


def make(answer_now=True, refuse=None, reliable=False):
    clock = Clock()
    handler = Handler(answer_now, refuse)
    server = UserAgentServer(clock, handler)
    handler.server = server
    return clock, handler, server, FakeChannel(reliable=reliable)


def established(reliable=False):
    """A server with one acknowledged session; the To tag it chose."""
    clock, handler, server, channel = make(reliable=reliable)
    server.receive(request("INVITE", body=b"v=0\r\n"), channel)
    tag = channel.take()[-1].to_address.tag
    server.receive(request("ACK", branch="z9hG4bK-ack", to_tag=tag), channel)
    return clock, handler, server, channel, tag


def test_the_handler_and_channel_provide_their_interfaces():
    _, handler, _, channel = make()
    verifyObject(ISessionHandler, handler)
    verifyObject(ISipChannel, channel)


def test_invite_gets_100_at_once_then_200_with_the_answer_a_tag_and_our_contact():
    _, handler, server, channel = make()
    server.receive(request("INVITE", body=b"v=0\r\n"), channel)
    trying, ok = channel.take()
    assert (trying.status, ok.status) == (100, 200)
    assert trying.to_address.tag is None and ok.to_address.tag
    assert ok.body.decode() == ANSWER
    assert ok.headers.get("Content-Type") == "application/sdp"
    assert ok.headers.get("Contact") == "<sip:srs@127.0.0.1:5070>;+sip.srs"
    assert "UPDATE" in ok.headers.get("Allow")
    assert len(server.dialogs) == 1


def test_2xx_is_retransmitted_doubling_to_t2_until_the_ack():
    clock, handler, server, channel = make()
    server.receive(request("INVITE", body=b"v=0\r\n"), channel)
    tag = channel.take()[-1].to_address.tag
    intervals = []
    for interval in (T1, 2 * T1, 4 * T1, T2, T2):
        clock.advance(interval)
        intervals.append([m.status for m in channel.take()])
    assert intervals == [[200]] * 5
    server.receive(request("ACK", branch="z9hG4bK-ack", to_tag=tag), channel)
    clock.advance(10 * T2)
    assert channel.take() == []
    assert handler.endings == []


def test_session_never_acknowledged_is_ended_with_a_bye_after_64_t1():
    clock, handler, server, channel = make()
    server.receive(request("INVITE", body=b"v=0\r\n"), channel)
    ok = channel.take()[-1]
    clock.pump([T1] * 64)
    sent = channel.take()
    bye = sent[-1]
    assert all(isinstance(m, Response) and m.status == 200 for m in sent[:-1])
    assert isinstance(bye, Request) and bye.method == "BYE"
    assert bye.from_address.tag == ok.to_address.tag and bye.to_address.tag == "src"
    assert bye.uri == "sip:src@127.0.0.1:5060"
    assert handler.endings == ["no ACK"] and not server.dialogs


def test_our_bye_is_retransmitted_until_answered():
    clock, handler, server, channel = make()
    server.receive(request("INVITE", body=b"v=0\r\n"), channel)
    clock.pump([T1] * 64)
    bye = channel.take()[-1]
    clock.advance(T1)
    assert [m.method for m in channel.take()] == ["BYE"]
    server.receive(parse_message(
        b"SIP/2.0 200 OK\r\n"
        + f"Via: {bye.headers.get('Via')}\r\nFrom: {bye.headers.get('From')}\r\nTo: {bye.headers.get('To')}\r\n"
        f"Call-ID: call-1\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n".encode()), channel)
    clock.advance(10 * T2)
    assert channel.take() == []


def test_retransmitted_invite_is_absorbed_and_not_offered_twice():
    clock, handler, server, channel = make(answer_now=False)
    invite = request("INVITE", body=b"v=0\r\n")
    server.receive(invite, channel)
    server.receive(invite, channel)
    assert channel.statuses() == [100, 100]
    assert len(handler.pending) == 1


def test_bye_ends_the_session_and_a_second_one_gets_481():
    _, handler, server, channel, tag = established()
    server.receive(request("BYE", cseq=2, branch="z9hG4bK-bye", to_tag=tag), channel)
    assert channel.statuses() == [200]
    assert handler.endings == ["BYE"]
    server.receive(request("BYE", cseq=3, branch="z9hG4bK-bye2", to_tag=tag), channel)
    assert channel.statuses() == [481]


def test_retransmitted_bye_gets_the_same_200_again():
    _, handler, server, channel, tag = established()
    bye = request("BYE", cseq=2, branch="z9hG4bK-bye", to_tag=tag)
    server.receive(bye, channel)
    server.receive(bye, channel)
    assert channel.statuses() == [200, 200]
    assert handler.endings == ["BYE"]


def test_cancel_before_the_answer_gets_200_and_the_invite_487():
    clock, handler, server, channel = make(answer_now=False)
    server.receive(request("INVITE", body=b"v=0\r\n"), channel)
    channel.take()
    server.receive(request("CANCEL"), channel)
    cancel_ok, terminated = channel.take()
    assert (cancel_ok.status, cancel_ok.cseq.method) == (200, "CANCEL")
    assert (terminated.status, terminated.cseq.method) == (487, "INVITE")
    assert handler.cancellations == handler.pending
    assert server.accept(handler.pending[0], ANSWER) is None, "too late to answer"
    # Timer G resends the 487 until the ACK, which is absorbed.
    clock.advance(T1)
    assert channel.statuses() == [487]
    server.receive(request("ACK", to_tag=terminated.to_address.tag), channel)
    clock.advance(64 * T1)
    assert channel.take() == []
    assert not server.dialogs


def test_cancel_after_the_answer_gets_200_and_changes_nothing():
    _, handler, server, channel, tag = established()
    server.receive(request("CANCEL"), channel)
    (ok,) = channel.take()
    assert (ok.status, ok.to_address.tag) == (200, tag), "the To tag of the INVITE's answer"
    assert handler.cancellations == [] and len(server.dialogs) == 1


def test_cancel_matching_nothing_gets_481():
    _, _, server, channel = make()
    server.receive(request("CANCEL", branch="z9hG4bK-unknown"), channel)
    assert channel.statuses() == [481]


def test_options_gets_200_with_what_we_allow_accept_and_support():
    _, _, server, channel = make()
    server.receive(request("OPTIONS"), channel)
    (ok,) = channel.take()
    assert ok.status == 200 and ok.to_address.tag
    assert "application/rs-metadata+xml" in ok.headers.get("Accept")
    assert "siprec" in ok.headers.get("Supported")
    assert "INVITE" in ok.headers.get("Allow")


def test_reinvite_gets_a_new_answer_and_is_retransmitted_until_its_ack():
    clock, handler, server, channel, tag = established()
    server.receive(request("INVITE", cseq=2, branch="z9hG4bK-re", to_tag=tag, body=b"v=0\r\n"), channel)
    trying, ok = channel.take()
    assert (trying.status, ok.status) == (100, 200)
    assert "m=audio 4002" in ok.body.decode()
    clock.advance(T1)
    assert channel.statuses() == [200]
    server.receive(request("ACK", cseq=2, branch="z9hG4bK-ack2", to_tag=tag), channel)
    clock.advance(10 * T2)
    assert channel.take() == []


def test_reinvite_while_the_last_answer_is_unacknowledged_gets_491():
    _, handler, server, channel = make()
    server.receive(request("INVITE", body=b"v=0\r\n"), channel)
    tag = channel.take()[-1].to_address.tag
    server.receive(request("INVITE", cseq=2, branch="z9hG4bK-re", to_tag=tag, body=b"v=0\r\n"), channel)
    assert channel.statuses() == [491]
    assert handler.modifications == []


def test_update_without_an_offer_gets_200_without_a_body():
    _, handler, server, channel, tag = established()
    server.receive(request("UPDATE", cseq=2, branch="z9hG4bK-up", to_tag=tag), channel)
    (ok,) = channel.take()
    assert ok.status == 200 and ok.body == b""
    assert len(handler.modifications) == 1


def test_requests_in_unknown_dialogs_get_481():
    _, _, server, channel = make()
    for method in ("BYE", "UPDATE", "INFO", "INVITE"):
        server.receive(request(method, branch=f"z9hG4bK-{method}", to_tag="nope"), channel)
    assert channel.statuses() == [481] * 4


def test_request_with_an_old_cseq_in_a_dialog_gets_500():
    _, _, server, channel, tag = established()
    server.receive(request("INFO", cseq=1, branch="z9hG4bK-info", to_tag=tag), channel)
    (error,) = channel.take()
    assert (error.status, error.headers.get("Retry-After")) == (500, "1")


def test_unknown_required_extension_gets_420_naming_it():
    _, handler, server, channel = make()
    server.receive(request("INVITE", extra="Require: siprec, 100rel\r\n", body=b"v=0\r\n"), channel)
    (bad,) = channel.take()
    assert (bad.status, bad.headers.get("Unsupported")) == (420, "100rel")
    assert handler.pending == []


def test_unknown_method_gets_501():
    _, _, server, channel = make()
    server.receive(request("SUBSCRIBE"), channel)
    (response,) = channel.take()
    assert response.status == 501 and response.headers.get("Allow")


def test_refused_offer_gets_the_handlers_status_retransmitted_until_the_ack():
    clock, _, server, channel = make(refuse=NotAcceptableHere("no codec"))
    server.receive(request("INVITE", body=b"v=0\r\n"), channel)
    trying, refused = channel.take()
    assert refused.status == 488
    clock.advance(T1)
    clock.advance(2 * T1)
    assert channel.statuses() == [488, 488]


def test_refused_offer_is_not_retransmitted_over_a_reliable_transport():
    clock, _, server, channel = make(refuse=NotAcceptableHere("no codec"), reliable=True)
    server.receive(request("INVITE", body=b"v=0\r\n"), channel)
    assert channel.statuses() == [100, 488]
    clock.advance(64 * T1)
    assert channel.take() == []


def test_415_carries_accept():
    _, _, server, channel = make(refuse=SIPError(415, "Unsupported Media Type"))
    server.receive(request("INVITE", body=b"v=0\r\n"), channel)
    refused = channel.take()[-1]
    assert refused.status == 415 and "application/sdp" in refused.headers.get("Accept")


def test_malformed_request_with_the_needed_headers_gets_400_saying_why():
    data = (b"INVITE sip:srs@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK1\r\n"
            b"From: <sip:a@b>;tag=1\r\nTo: <sip:srs@b>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n"
            b"Content-Length: 50\r\n\r\nv=0\r\n")
    _, _, server, channel = make()
    with pytest.raises(ParseError) as caught:
        parse_message(data)
    server.malformed(data, caught.value, channel)
    (bad,) = channel.take()
    assert (bad.status, bad.call_id, bad.cseq.number) == (400, "x", 1)
    assert "Content-Length 50" in bad.headers.get("Warning")


def test_garbage_gets_no_answer():
    _, _, server, channel = make()
    server.malformed(b"\x00\x01 hello", ParseError("garbage"), channel)
    assert channel.take() == []


def test_close_ends_every_session_with_a_bye():
    clock, handler, server, channel, tag = established()
    server.close()
    assert [m.method for m in channel.take()] == ["BYE"]
    assert handler.endings == ["shutting down"]
    clock.advance(64 * T1)
    assert channel.take() == []


TIMER = "Supported: timer\r\nSession-Expires: 1800\r\n"


def test_session_timer_is_accepted_with_the_client_refreshing():
    _, _, server, channel = make()
    server.receive(request("INVITE", extra=TIMER, body=b"v=0\r\n"), channel)
    ok = channel.take()[-1]
    assert ok.headers.get("Session-Expires") == "1800;refresher=uac"
    assert ok.headers.get("Require") == "timer"


def test_session_interval_below_90_s_gets_422_with_min_se():
    _, handler, server, channel = make()
    server.receive(request("INVITE", extra="Supported: timer\r\nSession-Expires: 60\r\n", body=b"v=0\r\n"),
                   channel)
    (refused,) = channel.take()
    assert (refused.status, refused.headers.get("Min-SE")) == (422, "90")
    assert handler.pending == []


def test_session_without_a_refresh_is_ended_with_a_bye_before_it_expires():
    clock, handler, server, channel = make()
    server.receive(request("INVITE", extra=TIMER, body=b"v=0\r\n"), channel)
    tag = channel.take()[-1].to_address.tag
    server.receive(request("ACK", branch="z9hG4bK-ack", to_tag=tag), channel)
    clock.advance(1800 - 32 - 1)
    assert handler.endings == []
    server.receive(request("UPDATE", cseq=2, branch="z9hG4bK-refresh", to_tag=tag, extra=TIMER), channel)
    assert channel.take()[-1].headers.get("Session-Expires") == "1800;refresher=uac"
    clock.advance(1800 - 32 - 1)
    assert handler.endings == [], "the refresh restarted the timer"
    clock.advance(1)
    assert [m.method for m in channel.take() if isinstance(m, Request)] == ["BYE"]
    assert handler.endings == ["session expired"]


def test_client_without_timer_support_gets_no_session_timer():
    clock, handler, server, channel = make()
    server.receive(request("INVITE", extra="Session-Expires: 1800\r\n", body=b"v=0\r\n"), channel)
    ok = channel.take()[-1]
    assert ok.headers.get("Session-Expires") is None


def test_a_handler_bug_costs_a_500_not_the_server():
    _, _, server, channel = make(refuse=KeyError("bug"))
    server.receive(request("INVITE", body=b"v=0\r\n"), channel)
    assert channel.statuses() == [100, 500]
    server.receive(request("OPTIONS", branch="z9hG4bK-after"), channel)
    assert channel.statuses() == [200]


def test_transactions_are_forgotten_once_their_timers_run_out():
    clock, _, server, channel, tag = established()
    server.receive(request("BYE", cseq=2, branch="z9hG4bK-bye", to_tag=tag), channel)
    assert len(server.transactions) == 2, "the INVITE (accepted) and the BYE (completed)"
    clock.advance(64 * T1)
    assert len(server.transactions) == 0


def test_non_2xx_ack_retransmissions_are_absorbed():
    clock, _, server, channel = make(refuse=NotAcceptableHere("no codec"))
    server.receive(request("INVITE", body=b"v=0\r\n"), channel)
    refused = channel.take()[-1]
    ack = request("ACK", to_tag=refused.to_address.tag)
    server.receive(ack, channel)
    server.receive(ack, channel)
    clock.advance(64 * T1)
    assert channel.take() == [] and len(server.transactions) == 0


def test_contact_missing_its_closing_bracket_is_tolerated_and_the_dialog_built():
    """Real SBC templates write C{Contact: <sip:...;+sip.src}: the INVITE is answered, the BYE goes to that URI."""
    _, handler, server, channel = make()
    invite = request("INVITE", body=b"v=0\r\n")
    broken = invite.headers.replaced("Contact", "<sip:src@192.0.2.9:5080;+sip.src")
    server.receive(attrs.evolve(invite, headers=broken), channel)
    assert channel.statuses() == [100, 200]
    (dialog,) = server.dialogs.values()
    server.hang_up(dialog, "test")
    (bye,) = channel.take()
    assert (bye.method, bye.uri) == ("BYE", "sip:src@192.0.2.9:5080")


def test_invite_whose_dialog_cannot_be_built_still_gets_a_final_response_and_cancel_487(monkeypatch):
    clock, handler, server, channel = make(answer_now=False)
    server.receive(request("INVITE", body=b"v=0\r\n"), channel)
    channel.take()
    monkeypatch.setattr("mgateway.sip.uas.Dialog", _Unbuildable)
    with pytest.raises(ParseError):
        server.accept(handler.pending[0], ANSWER)
    server.receive(request("CANCEL"), channel)
    assert channel.statuses() == [200, 487], "the INVITE is still pending: CANCEL ends it"
    server.receive(request("ACK", to_tag=handler.pending[0].local_tag), channel)
    clock.advance(64 * T1)
    assert len(server.transactions) == 0, "every transaction freed"


class _Unbuildable:
    def __init__(self, *args):
        raise ParseError("unbuildable")


@pytest.mark.parametrize("error", [NotAcceptableHere("no codec we decode"), SIPError(486, "Busy Here", "call x busy")])
def test_every_refusal_carries_a_warning_with_the_reason(error):
    _, _, server, channel = make(refuse=error)
    server.receive(request("INVITE", body=b"v=0\r\n"), channel)
    refused = channel.take()[-1]
    assert refused.status == error.status
    assert refused.headers.get("Warning") == f'399 asapp-mg "{error.detail}"'


def test_protocol_refusals_carry_a_warning_too():
    _, _, server, channel = make()
    server.receive(request("BYE", to_tag="nope"), channel)
    (unknown,) = channel.take()
    assert unknown.status == 481 and unknown.headers.get("Warning").startswith("399 asapp-mg ")


def test_delayed_offer_gets_our_offer_in_the_200_and_the_acks_answer_goes_to_the_handler():
    """RFC 3261 §13.2.1: an INVITE without a body; we offer in the 2xx, the ACK answers (Cisco CUCM)."""
    _, handler, server, channel = make()
    server.receive(request("INVITE"), channel)
    ok = channel.take()[-1]
    assert ok.status == 200 and ok.body.decode() == ANSWER
    tag = ok.to_address.tag
    server.receive(request("ACK", branch="z9hG4bK-ack", to_tag=tag, body=b"v=0\r\n"), channel)
    assert [ack.body for ack in handler.acknowledgements] == [b"v=0\r\n"]


def test_an_ack_answer_the_handler_refuses_ends_the_session_with_a_bye():
    _, handler, server, channel = make()
    handler.acknowledged = lambda dialog, ack: (_ for _ in ()).throw(NotAcceptableHere("no codec"))
    server.receive(request("INVITE"), channel)
    tag = channel.take()[-1].to_address.tag
    server.receive(request("ACK", branch="z9hG4bK-ack", to_tag=tag), channel)
    assert channel.statuses() == ["BYE"]
    assert not server.dialogs and handler.endings


def test_an_ack_to_an_answer_of_ours_is_not_taken_for_an_answer():
    _, handler, server, channel, tag = established()
    assert handler.acknowledgements == []
