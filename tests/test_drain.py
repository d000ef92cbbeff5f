"""
A node that is full, draining or not ready, as its peers see it: /health for
the balancers, SIP 503 and HTTP 503 at the WebSocket upgrades with
Retry-After, the direct API's 5001 and 5002, start-streaming still served for calls the node holds;
JSON log lines carrying the call; and SIGTERM on a real twistd mid-utterance.
"""

import json
import os
import signal
import socket
import sqlite3

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import eventsFromJSONLogFile

from mgateway.api.health import Health
from mgateway.config import load_config
from mgateway.service import make_service
from mgateway.testing import MemoryTranscriptStore, SettableAdmission
from tests.conftest import wait
from tests.support.audio import pace, read_pcm, until
from tests.support.gateway import RunningGateway, webhook_section, write_config
from tests.support.siprec_samples import invite_around
from tests.support.twilio_peer import TwilioPeer
from tests.support.wsclient import connect, refusal
from tests.test_direct_api import START, open_stream
from tests.test_sip_transports import Collector
from tests.test_siprec_server import OFFER
from tests.test_twilio_api import call_sid, open_twilio, signed_headers, stream_url
from tests.support.twistd import run_twistd

AUDIOHOOK_PATH = "/mg-genesysaudiohook-autotranscribe/"


def small_node_config(directory, extra=""):
    """A node that carries two streams, its log also in JSON."""
    config = write_config(directory, extra)
    config.write_text(config.read_text().replace("max_streams = 1000", "max_streams = 2")
                      + f'\n[logging]\njson_file = "{directory / "log.json"}"\n')
    return config


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    directory = tmp_path_factory.mktemp("small-node")
    service = make_service(load_config(small_node_config(directory)), reactor)
    service.startService()
    ports = wait(service.listening)
    yield RunningGateway(service, ports[0].getHost().port)
    wait(service.stopService())


async def health(node) -> tuple[int, dict]:
    response = await treq.get(node.base + "/health")
    return response.code, await response.json()


@pytest_twisted.ensureDeferred
async def test_a_ready_node_says_so_with_its_capacity(node):
    code, body = await health(node)
    assert code == 200, body
    assert body == {"status": "ok", "ready": True, "draining": False, "calls": 0, "modelsLoaded": True,
                    "storeReachable": True, "capacity": {"streams": 2, "inUse": 0, "available": 2}}


@pytest_twisted.ensureDeferred
async def test_a_node_whose_store_does_not_answer_is_not_ready(node):
    store = MemoryTranscriptStore()
    await store.close()
    report = await Health(registry=node.service.registry, store=store, admission=SettableAdmission(),
                          clock=reactor).report()
    assert (report.code, report.status, report.store_reachable) == (503, "not ready", False)


@pytest_twisted.ensureDeferred
async def test_a_full_node_refuses_new_calls_and_serves_the_ones_it_holds(node):
    held = node.service.registry.attach("siprec", "full-node-call", ["0", "1"])
    try:
        code, body = await health(node)
        assert (code, body["ready"], body["capacity"]) == (200, True, {"streams": 2, "inUse": 2, "available": 0})

        twilio = await stream_url(node)
        refused = await treq.get(twilio, headers=signed_headers(node, twilio))
        assert (refused.code, refused.headers.getRawHeaders("Retry-After")) == (503, ["10"])
        opened, _ = connect(twilio.replace("http", "ws"), headers=signed_headers(node, twilio))
        assert "503" in await refusal(opened)
        opened, _ = connect(f"ws://127.0.0.1:{node.port}{AUDIOHOOK_PATH}")
        assert "503" in await refusal(opened)

        client, factory = await open_stream(node)
        client.send_json(START)
        final = await client.next_message()
        assert (final["message"], final["status"]["code"]) == ("finalResponse", "5002"), final

        code, started = await node.post_json("/mg-autotranscribe/v1/start-streaming", {
            "namespace": "siprec", "guid": "full-node-call", "customerId": "c", "agentId": "a",
            "autotranscribeParams": {"language": "ko-KR"}})
        assert code == 200, started
    finally:
        await held.hang_up()


@pytest_twisted.ensureDeferred
async def test_a_full_node_answers_a_new_siprec_invite_over_udp_with_503_and_retry_after(node):
    held = node.service.registry.attach("siprec", "full-node-sip-call", ["0", "1"])
    client = Collector()
    port = reactor.listenUDP(0, client, interface="127.0.0.1")
    try:
        sip_port = node.service.siprec.udp.getHost().port
        # Answered at the Via's port (RFC 3261 §18.2.2): ours.
        invite = invite_around(OFFER, "application/sdp").replace(
            b"Via: SIP/2.0/UDP 192.0.2.20:5060", f"Via: SIP/2.0/UDP 127.0.0.1:{port.getHost().port}".encode())
        port.write(invite, ("127.0.0.1", sip_port))
        await until(reactor, lambda: any(r.status >= 200 for r in client.received))
    finally:
        await port.stopListening()
        await held.hang_up()
    final = client.received[-1]
    assert (final.status, final.reason) == (503, "Service Unavailable")
    assert final.headers.get("Retry-After") == "10"
    assert "carries all the streams it can" in final.headers.get("Warning")


@pytest_twisted.ensureDeferred
async def test_one_calls_json_log_lines_all_carry_its_id_namespace_and_streams(node):
    client, factory = await open_stream(node, "json-log-conversation")
    client.send_json(START)
    start = await client.next_message()
    stream_id = start["streamID"]
    await pace(reactor, [read_pcm("single.wav")[i:i + 320] for i in range(0, 16000, 320)], client.send_audio)
    client.send_json({"message": "finishStream"})
    while (await client.next_message())["message"] != "finalResponse":
        pass
    await factory.closed
    await until(reactor, lambda: node.service.registry.find("direct", stream_id) is None)
    path = node.service.config.logging.json_file
    with path.open() as f:
        events = list(eventsFromJSONLogFile(f))
    mine = [e for e in events if stream_id in json.dumps(e, default=str)]
    # The socket's "opened" line comes before its startStream made it a call.
    attached = next(i for i, e in enumerate(mine) if "attached" in e["log_format"])
    assert all("opened" in e["log_format"] for e in mine[:attached]), mine[:attached]
    mine = mine[attached:]
    assert len(mine) >= 3, mine
    for event in mine:
        assert (event.get("callId"), event.get("namespace")) == (stream_id, "direct"), event
        assert event["conversationId"] == "json-log-conversation", event
        assert event["streamIds"]["customer"] == stream_id, event
    said = " ".join(e["log_format"] for e in mine)
    assert "start" in said and "ended" in said, said


@pytest_twisted.ensureDeferred
async def test_a_draining_node_says_so_and_refuses_new_calls_with_the_specs_codes(node):
    """Last in this module: a node never stops draining."""
    sid = call_sid()
    peer = TwilioPeer(sid)
    twilio_client, twilio_factory = await open_twilio(node)
    twilio_client.send_text(peer.connected())
    twilio_client.send_text(peer.start())
    await until(reactor, lambda: node.service.registry.find("twilio", sid) is not None)
    node.service.admission.drain()

    code, body = await health(node)
    assert (code, body["status"], body["ready"], body["draining"]) == (503, "draining", False, True), body
    twilio = await stream_url(node)
    refused = await treq.get(twilio, headers=signed_headers(node, twilio))
    assert (refused.code, refused.headers.getRawHeaders("Retry-After")) == (503, ["10"])
    client, factory = await open_stream(node)
    client.send_json(START)
    final = await client.next_message()
    assert (final["message"], final["status"]) == (
        "finalResponse", {"code": "5001", "description": "Service shutting down: the node is shutting down"})
    code, started = await node.post_json("/mg-autotranscribe/v1/start-streaming", {
        "namespace": "twilio", "guid": sid, "customerId": "c", "agentId": "a",
        "autotranscribeParams": {"language": "ko-KR"}})
    assert code == 200, "a call the node holds is still served"
    twilio_client.send_text(peer.stop())
    await twilio_factory.closed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def decodes_started(child) -> float:
    """How many decoding jobs the child's ASR ran (its /metrics), each on audio a stream received."""
    text = (await (await treq.get(child.base + "/metrics")).text())
    for line in text.splitlines():
        if line.startswith("asapp_mg_asr_lag_seconds_count"):
            return float(line.split()[-1])
    return 0.0


async def child_node(tmp_path, extra: str, grace: int):
    """A twistd child on a free port, its models loaded: (process, gateway)."""
    port = free_port()
    config = write_config(tmp_path, extra)
    config.write_text(config.read_text().replace("tcp:0:", f"tcp:{port}:", 1)
                      .replace("shutdown_grace_seconds = 2", f"shutdown_grace_seconds = {grace}"))
    twistd = run_twistd("-n", "--pidfile=", "asapp-mg", "--config", str(config), cwd=tmp_path)
    await twistd.wait_for("languages available: ko-KR")
    return twistd, RunningGateway(None, port), config


async def transcribed_twilio_call(child, pcm: bytes) -> str:
    """A Twilio call on C{child}, transcription started, C{pcm} sent and reaching the recogniser."""
    sid = call_sid()
    peer = TwilioPeer(sid, tracks=("inbound",))
    client, factory = await open_twilio(child)
    client.send_text(peer.connected())
    client.send_text(peer.start())
    start = {"namespace": "twilio", "guid": sid, "customerId": "c-1", "agentId": "a-1",
             "autotranscribeParams": {"language": "ko-KR"},
             "twilioParams": {"trackMap": {"inbound": "customer"}}}
    for _ in range(200):  # until the start frame made the call
        code, started = await child.post_json("/mg-autotranscribe/v1/start-streaming", start)
        if code == 200:
            break
    assert code == 200, started
    await pace(reactor, peer.media_frames({"inbound": pcm}), client.send_text)
    for _ in range(500):
        if await decodes_started(child) > 0:
            break
    assert await decodes_started(child) > 0, "the speech reached the recogniser"
    return sid


@pytest_twisted.ensureDeferred
async def test_sigterm_mid_utterance_delivers_and_stores_it_then_exits(tmp_path, webhook_target, tls_files):
    receiver, url = webhook_target
    twistd, child, config = await child_node(tmp_path, webhook_section(url, tls_files), grace=20)
    # The first 2.5 s of customer.wav: inside its first sentence, so no
    # utterance can have ended before the signal; only the flush ends it.
    sid = await transcribed_twilio_call(child, read_pcm("customer.wav")[:2 * 8000 * 5 // 2])
    assert [r for r in receiver.received if r.body["externalConversationId"] == sid] == []

    os.kill(twistd.transport.pid, signal.SIGTERM)
    assert await twistd.ended == "killed by signal 15", twistd.output
    assert "draining: new calls are refused" in twistd.output
    assert "ran out" not in twistd.output, "stopped within shutdown_grace_seconds"
    posts = [r for r in receiver.received if r.body["externalConversationId"] == sid]
    assert len(posts) >= 1, twistd.output
    assert posts[-1].body["autotranscribeResponse"]["utterance"][0]["text"], posts[-1].body
    database = load_config(config, base_dir=tmp_path).store.sqlite_path
    with sqlite3.connect(database) as db:
        (stored,) = db.execute("SELECT count(*) FROM messages WHERE conversation_id = ?", (sid,)).fetchone()
    assert stored == len(posts), "every utterance delivered is also stored"


class _Unanswering(Protocol):
    """A webhook receiver that reads requests and never answers."""

    def dataReceived(self, data):
        pass


@pytest_twisted.ensureDeferred
async def test_a_stop_that_cannot_finish_in_its_grace_exits_all_the_same_and_says_so(tmp_path):
    silent = reactor.listenTCP(0, Factory.forProtocol(_Unanswering), interface="127.0.0.1")
    try:
        extra = f'[webhook]\nurl = "http://127.0.0.1:{silent.getHost().port}/hook"\ntimeout_seconds = 60\n'
        twistd, child, _ = await child_node(tmp_path, extra, grace=1)
        await transcribed_twilio_call(child, read_pcm("customer.wav"))
        os.kill(twistd.transport.pid, signal.SIGTERM)
        assert await twistd.ended == "killed by signal 15", twistd.output
        assert "the grace of 1.0 s ran out while at " in twistd.output, twistd.output
    finally:
        await silent.stopListening()
