"""
Whether a node takes a new call: the admission seam, its real and fake
implementations, and how each ingress core answers a refusal in its own
protocol's terms (SIP 503 with Retry-After and a Warning; the direct API's
5001 and 5002), while requests for calls already held are served.
"""

import json

import pytest
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from zope.interface.verify import verifyObject

from mgateway.admission import DRAINING, FULL, NOT_READY, Admission, Capacity
from mgateway.config import parse_config
from mgateway.ingress.direct.session import DirectSession
from mgateway.ingress.siprec.rtp_listener import RtpPorts, decodable_codecs
from mgateway.ingress.siprec.srs import RecordingServer
from mgateway.interfaces import IAdmission
from mgateway.lifecycle import InOrder, Step, within
from mgateway.sip.message import parse_message
from mgateway.testing import RecordingCallRegistry, SettableAdmission
from tests.support.siprec_samples import invite_around
from tests.test_sip_uas import FakeChannel, request
from tests.test_siprec_server import IN_SAMPLE_DIALOG, OFFER


def admission(max_streams=4, in_use=0, loaded=True):
    held = {"streams": in_use}
    real = Admission(max_streams=max_streams, in_use=lambda: held["streams"], loaded=lambda: loaded,
                     retry_after=7)
    return real, held


@pytest.mark.parametrize("implementation", [lambda: admission()[0], SettableAdmission])
def test_the_admission_and_its_fake_provide_the_interface_and_stop_admitting_once_drained(implementation):
    node = implementation()
    verifyObject(IAdmission, node)
    assert node.refusal(2) is None and node.draining is False
    assert isinstance(node.capacity(), Capacity)
    node.drain()
    assert node.draining is True
    assert node.refusal(1).reason == DRAINING


def test_a_call_that_would_pass_the_streams_limit_is_refused_full():
    node, held = admission(max_streams=4, in_use=2)
    assert node.refusal(2) is None
    held["streams"] = 3
    refused = node.refusal(2)
    assert (refused.reason, refused.retry_after) == (FULL, 7)
    assert node.capacity().to_json() == {"streams": 4, "inUse": 3, "available": 1}


def test_a_node_whose_models_are_loading_is_not_ready_and_draining_comes_first():
    node, _ = admission(loaded=False)
    assert node.refusal(1).reason == NOT_READY
    node.drain()
    assert node.refusal(1).reason == DRAINING


def test_max_streams_zero_means_four_per_asr_thread_and_retry_after_is_configured(tmp_path):
    apps = {"auth": {"apps": [{"api_id": "a", "api_secret": "b"}]}}
    derived = parse_config({**apps, "asr": {"threads": 3}}, tmp_path / "c.toml", tmp_path)
    assert derived.limits.streams(derived.asr.threads) == 12
    assert derived.limits.retry_after_seconds == 10
    fixed = parse_config({**apps, "limits": {"max_streams": 50, "retry_after_seconds": 30}},
                         tmp_path / "c.toml", tmp_path)
    assert (fixed.limits.streams(3), fixed.limits.retry_after_seconds) == (50, 30)


# -- SIPREC ------------------------------------------------------------------


@pytest.fixture
def refusing_server():
    node = SettableAdmission(retry_after=12)
    ports = RtpPorts(reactor, "127.0.0.1", 44000, 44999, 1 << 20)
    srs = RecordingServer(reactor, RecordingCallRegistry(), ports, media_address="127.0.0.1",
                          codecs=decodable_codecs(), admission=node)
    yield srs, node
    srs.close()


@pytest.mark.parametrize("reason", [DRAINING, FULL, NOT_READY])
def test_a_new_recording_is_refused_503_with_retry_after_and_a_warning(refusing_server, reason):
    server, node = refusing_server
    node.refused = reason
    channel = FakeChannel()
    server.uas.receive(parse_message(invite_around(OFFER, "application/sdp")), channel)
    trying, refused = channel.take()
    assert (trying.status, refused.status, refused.reason) == (100, 503, "Service Unavailable")
    assert refused.headers.get("Retry-After") == "12"
    assert refused.headers.get("Warning").startswith('399 asapp-mg "the node'), refused.headers.get("Warning")
    assert node.asked == [2], "a call of two m-lines asks for two streams"
    assert server.sessions() == []


def test_a_draining_node_still_serves_re_invites_and_byes_of_its_recordings(refusing_server):
    server, node = refusing_server
    channel = FakeChannel()
    server.uas.receive(parse_message(invite_around(OFFER, "application/sdp")), channel)
    tag = channel.take()[-1].to_address.tag
    server.uas.receive(request("ACK", branch="z9hG4bK-ack", to_tag=tag, **IN_SAMPLE_DIALOG), channel)
    node.drain()
    reinvite = request("INVITE", cseq=2, branch="z9hG4bK-re", to_tag=tag, body=OFFER, **IN_SAMPLE_DIALOG)
    server.uas.receive(reinvite, channel)
    assert [m.status for m in channel.take()] == [100, 200]
    server.uas.receive(request("BYE", cseq=3, branch="z9hG4bK-bye", to_tag=tag, **IN_SAMPLE_DIALOG), channel)
    assert channel.statuses() == [200]
    assert node.asked == [2], "only the new dialog's INVITE asked"


# -- the direct API core -----------------------------------------------------

START = json.dumps({"message": "startStream", "sender": {"role": "customer", "externalId": "x"},
                    "language": "ko-KR"})


@pytest.mark.parametrize("reason, code", [(DRAINING, "5001"), (FULL, "5002"), (NOT_READY, "5002")])
def test_a_direct_stream_the_node_cannot_take_ends_with_the_specs_code(reason, code):
    node = SettableAdmission(refused=reason)
    session = DirectSession("s-1", lambda tag: tag, refusal=lambda: node.refusal(1))
    session.receive_text(START)
    (final,) = [json.loads(frame) for frame in session.data_to_send()]
    assert final["message"] == "finalResponse"
    assert final["status"]["code"] == code, final
    (terminated,) = session.events()
    assert terminated.close_code == 1000


def test_a_direct_stream_the_node_takes_starts():
    node = SettableAdmission()
    session = DirectSession("s-1", lambda tag: tag, refusal=lambda: node.refusal(1))
    session.receive_text(START)
    (start,) = [json.loads(frame) for frame in session.data_to_send()]
    assert (start["message"], start["status"]["code"]) == ("startResponse", "1000")


# -- the bounded stop ----------------------------------------------------------


def test_a_stop_is_waited_for_until_it_is_done():
    clock, work = Clock(), Deferred()
    done = within(work, 30, clock, "stopping")
    clock.advance(10)
    assert not done.called
    work.callback(None)
    assert done.called and not clock.getDelayedCalls()


def test_a_stop_that_outlasts_its_grace_is_given_up_on_with_a_log_line():
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        clock, work = Clock(), Deferred()
        done = within(work, 30, clock, "stopping", lambda: "calls")
        clock.advance(29.9)
        assert not done.called
        clock.advance(0.1)
        assert done.called
        work.callback(None)  # finishing late changes nothing
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert any("ran out" in e.get("log_format", "") and (e.get("what"), e.get("step")) == ("stopping", "calls")
               for e in events), events


def test_a_tree_being_stopped_names_the_step_it_waits_for():
    tree, stuck = InOrder(), Deferred()
    Step("store").setServiceParent(tree)
    Step("calls", stop=lambda: stuck).setServiceParent(tree)
    tree.startService()
    stopped = tree.stopService()
    assert (tree.stopping, stopped.called) == ("calls", False)
    stuck.callback(None)
    assert (tree.stopping, stopped.called) == (None, True)
