"""
Two real nodes (C{twistd asapp-mg} processes) on one PostgreSQL: a SIPREC
call held by node A started and stopped through node B, a Twilio stream held
by B started through A, and A killed mid-call.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
import pytest_twisted
from twisted.internet import reactor, task
from twisted.internet.defer import ensureDeferred

from mgateway.cluster.carry import signature
from mgateway.ingress.twilio.signature import twilio_signature
from tests.support.audio import pace, read_pcm
from tests.support.gateway import TWILIO_AUTH_TOKEN
from tests.support.nodes import CLUSTER_SECRET, DEAD_AFTER_SECONDS, start_nodes
from tests.support.pcap import write_rtp_pcap
from tests.support.siprec_peer import RtpSender, free_sip_port, go_on, new_ucid, run_sipp
from tests.support.twilio_peer import TwilioPeer
from tests.support.wsclient import connect

START = "/mg-autotranscribe/v1/start-streaming"
STOP = "/mg-autotranscribe/v1/stop-streaming"
MESSAGES = "/conversation/v1/conversation/messages"


@pytest.fixture
def nodes(tmp_path, fresh_postgres_dsn):
    started = pytest_twisted.blockon(ensureDeferred(start_nodes(tmp_path, fresh_postgres_dsn)))
    yield started
    for node in started:
        pytest_twisted.blockon(ensureDeferred(node.stop()))


def start_body(namespace: str, guid: str, **params) -> dict:
    return {"namespace": namespace, "guid": guid, "customerId": "TT9833237", "agentId": "RE223444211993",
            "autotranscribeParams": {"language": "ko-KR"}, **params}


async def answer_once_found(node, path: str, body: dict, attempts: int = 500) -> tuple[int, dict]:
    """
    POST until the answer is no longer 400-203 (the call's media has not
    reached its node yet); the answer then.
    """
    for _ in range(attempts):
        code, answer = await node.post_json(path, body)
        if answer.get("error", {}).get("code") != "400-203":
            return code, answer
        await task.deferLater(reactor, 0.05, lambda: None)
    raise AssertionError(f"{body['guid']} never reached a node")


async def messages(node, guid: str) -> list[dict]:
    response = await node.get(MESSAGES, externalId=guid)
    assert response.code == 200
    return (await response.json())["items"]


async def until_stored(node, guid: str, predicate, attempts: int = 3000) -> list[dict]:
    """The call's messages in the shared store, read through C{node}, once C{predicate} holds of them."""
    for _ in range(attempts):
        items = await messages(node, guid)
        if predicate(items):
            return items
        await task.deferLater(reactor, 0.05, lambda: None)
    raise AssertionError(f"the store never held what was expected of {guid}: {items}")


def summaries(stopped: dict) -> dict:
    return {role: answer["summary"] for role, answer in stopped["autotranscribeResponse"].items()}


async def sipp_call(node, workdir, customer: bytes):
    """sipp records a new call on C{node}: (guid, call id, sipp port, sipp)."""
    uui, guid = new_ucid()
    call_id = f"siprec-{uuid.uuid4().hex}"
    port = free_sip_port()
    write_rtp_pcap(workdir / "customer.pcap", RtpSender().packets(customer))
    sipp = run_sipp(reactor, "siprec_call.xml", node.sip_target, "-set", "uui", uui,
                    port=port, call_id=call_id, workdir=workdir)
    return guid, call_id, port, sipp


async def twilio_stream(issuer, holder):
    """A Twilio stream on C{holder}, its URL issued by C{issuer}: (callSid, peer, client)."""
    response = await issuer.get("/mg-autotranscribe/v1/twilio-media-stream-url")
    url = (await response.json())["streamingUrl"]
    path = url.split(str(issuer.port), 1)[1]
    # The URL one node signed opens on the other (the key is shared).
    signed = f"wss://127.0.0.1:{holder.port}{path}"
    client = await connect(f"ws://127.0.0.1:{holder.port}{path}",
                           headers={"X-Twilio-Signature": twilio_signature(TWILIO_AUTH_TOKEN, signed)})[0]
    sid = "CA" + uuid.uuid4().hex
    peer = TwilioPeer(sid, tracks=["inbound"])
    client.send_text(peer.connected())
    client.send_text(peer.start())
    return sid, peer, client


@pytest_twisted.ensureDeferred
async def test_a_siprec_call_on_a_is_started_and_stopped_through_b(nodes, tmp_path):
    a, b = nodes
    customer = read_pcm("customer.wav")
    guid, call_id, sipp_port, sipp = await sipp_call(a, tmp_path, customer)
    body = start_body("siprec", guid, siprecParams={"mediaLineOrder": "CUSTOMER_FIRST"})

    code, started = await answer_once_found(b, START, body)
    assert code == 200, started
    ids = {role: started["autotranscribeResponse"][role]["streamId"] for role in ("customer", "agent")}
    # The owner's answer, carried back: a second start is its 409-201, the
    # same as A answers itself (each under its own request's id).
    code, again = await b.post_json(START, body)
    assert (code, again["error"]["code"]) == (409, "409-201"), again
    code_a, again_a = await a.post_json(START, body)
    for answer in (again, again_a):
        del answer["error"]["requestId"]
    assert (code_a, again_a) == (code, again)

    go_on(reactor, sipp_port, call_id)  # sipp plays the customer's m-line in real time
    await until_stored(b, guid, lambda items: len(items) >= 2)
    code, stopped = await b.post_json(STOP, {"namespace": "siprec", "guid": guid})
    assert code == 200, stopped
    summary = summaries(stopped)
    assert {role: stopped["autotranscribeResponse"][role]["streamId"] for role in ids} == ids
    assert 0 < summary["customer"]["totalAudioBytes"] <= len(customer)
    assert summary["customer"]["transcripts"] >= 2
    assert summary["agent"]["totalAudioBytes"] == 0 and summary["agent"]["transcripts"] == 0
    expected = summary["customer"]["transcripts"]
    # Every utterance the summary counts is in the shared store, the
    # customer's, read through either node.
    stored = await until_stored(a, guid, lambda items: len(items) == expected)
    assert {(item["sender"]["role"], item["sender"]["externalId"]) for item in stored} == {("customer", "TT9833237")}
    assert len(await messages(b, guid)) == expected

    go_on(reactor, sipp_port, call_id)  # hold, resume, BYE
    assert await sipp.ended == 0, sipp.output
    code, ended = await answer_once_found_or_ended(b, body)
    assert (code, ended["error"]["code"]) == (400, "400-203")


async def answer_once_found_or_ended(node, body: dict, attempts: int = 500) -> tuple[int, dict]:
    """POST start until the call is gone (400-203): the BYE reached its node and the directory."""
    for _ in range(attempts):
        code, answer = await node.post_json(START, body)
        if answer.get("error", {}).get("code") == "400-203":
            return code, answer
        await task.deferLater(reactor, 0.05, lambda: None)
    raise AssertionError(f"{body['guid']} never ended: {answer}")


@pytest_twisted.ensureDeferred
async def test_a_twilio_stream_on_b_is_started_and_stopped_through_a(nodes):
    a, b = nodes
    sid, peer, client = await twilio_stream(a, b)
    code, started = await answer_once_found(a, START, start_body("twilio", sid))
    assert code == 200, started

    inbound = read_pcm("customer.wav")
    await pace(reactor, peer.media_frames({"inbound": inbound}), client.send_text)
    await until_stored(a, sid, lambda items: len(items) >= 2)
    code, stopped = await a.post_json(STOP, {"namespace": "twilio", "guid": sid})
    assert code == 200, stopped
    summary = summaries(stopped)
    assert summary["customer"]["transcripts"] >= 2
    assert 0 < summary["customer"]["totalAudioBytes"] <= len(inbound)
    await until_stored(b, sid, lambda items: len(items) == summary["customer"]["transcripts"])
    client.send_text(peer.stop())


@pytest_twisted.ensureDeferred
async def test_a_carried_request_without_the_clusters_signature_is_refused(nodes):
    a, b = nodes
    sid, peer, client = await twilio_stream(b, b)
    body = json.dumps(start_body("twilio", sid)).encode()
    headers = {"asapp-mg-app": "test-app", "asapp-mg-request-id": "r1", "asapp-mg-timestamp": str(int(time.time()))}
    forged = {**headers, "asapp-mg-signature": signature(b"not-the-secret", headers["asapp-mg-timestamp"],
                                                         "start-streaming", "test-app", "r1", body)}
    for sent in (headers, forged):
        response = await b.post("/internal/v1/cluster/start-streaming", raw=body, headers=sent)
        assert response.code == 401
        assert (await response.json())["error"]["code"] == "401-01"
    signed = {**headers, "asapp-mg-signature": signature(CLUSTER_SECRET.encode(), headers["asapp-mg-timestamp"],
                                                         "start-streaming", "test-app", "r1", body)}
    response = await b.post("/internal/v1/cluster/start-streaming", raw=body, headers=signed)
    answer = await response.json()
    assert response.code == 200 and set(answer["autotranscribeResponse"]) == {"customer", "agent"}, answer
    client.send_text(peer.stop())


@pytest_twisted.ensureDeferred
async def test_when_a_is_killed_b_ends_its_calls_after_the_timeout_and_serves_its_own(nodes, tmp_path):
    a, b = nodes
    guid, call_id, sipp_port, sipp = await sipp_call(a, tmp_path, read_pcm("customer.wav"))
    siprec = start_body("siprec", guid)
    code, _ = await answer_once_found(b, START, siprec)
    assert code == 200
    sid, peer, client = await twilio_stream(b, b)
    code, _ = await answer_once_found(b, START, start_body("twilio", sid))
    assert code == 200

    a.kill()
    assert await a.twistd.ended == "killed by signal 9"
    # Until A is dead, B cannot reach it: 500-201 at once, never a hang;
    # then the directory has A's call ended: 400-203.
    answers = []
    while not answers or answers[-1] != (400, "400-203"):
        code, answer = await b.post_json(STOP, {"namespace": "siprec", "guid": guid})
        answers.append((code, answer["error"]["code"]))
        await task.deferLater(reactor, 0.1, lambda: None)
        assert len(answers) < 50 * DEAD_AFTER_SECONDS, answers
    assert set(answers) <= {(500, "500-201"), (400, "400-203")}, answers

    # B's own call goes on.
    await pace(reactor, peer.media_frames({"inbound": read_pcm("customer.wav")}), client.send_text)
    await until_stored(b, sid, lambda items: len(items) >= 1)
    code, stopped = await b.post_json(STOP, {"namespace": "twilio", "guid": sid})
    assert code == 200, stopped
    assert summaries(stopped)["customer"]["transcripts"] >= 1
    client.send_text(peer.stop())
    sipp.transport.signalProcess("KILL")
    await sipp.ended
