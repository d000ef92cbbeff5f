"""
Several gateway nodes behind the balancers operators already run, from
Debian's packages, configured by the shipped files of etc/kamailio and
etc/haproxy: Kamailio's dispatcher spreads SIPREC recordings from sipp (the
SBC) over two nodes, each dialog's re-INVITE, UPDATE and BYE following its
Record-Route to the node that answered; HAProxy carries the REST API and
WebSocket streams to whichever node is up.
"""

from __future__ import annotations

from collections import defaultdict

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor, task
from twisted.internet.defer import ensureDeferred

from mgateway.sip.message import Request
from tests.support.audio import chunks, pace, read_pcm, until
from tests.support.gateway import AUTH
from tests.support.front import (
    server_states,
    sip_port,
    start_haproxy,
    start_kamailio,
    start_node,
)
from tests.support.siprec_peer import free_sip_port, new_ucid, run_sipp
from tests.support.wsclient import connect

pytestmark = pytest.mark.usefixtures("stop_processes")


@pytest.fixture
def stop_processes():
    """
    Stops every balancer a test started, and waits for it to end: SIGTERM,
    on which Kamailio's main process also ends its children (a SIGKILL would
    leave them holding the output pipes).
    """
    started = []
    yield started
    for process in started:
        if not process.ended.called:
            process.transport.signalProcess("TERM")
        pytest_twisted.blockon(process.ended)


@pytest.fixture
def make_nodes(tmp_path):
    """
    Starts gateway nodes a, b, ... on the given SIP addresses, once their
    models are loaded; stops those still running after the test.
    """
    running = []

    async def make(addresses: list[str], public_url: str = ""):
        for name, address in zip("ab", addresses):
            directory = tmp_path / name
            directory.mkdir()
            running.append(await start_node(reactor, directory, address, public_url))
        await until(reactor, lambda: all(node.service.registry.engine.loaded for node in running), attempts=6000)
        return list(running)

    yield make
    for node in running:
        if node.service.running:
            pytest_twisted.blockon(ensureDeferred(node.service.stopService()))


def tap(monkeypatch, node) -> dict[str, list[str]]:
    """
    The methods of every request that reaches C{node}'s SIP stack, by Call-ID.
    A retransmission (the same CSeq and method again, as sipp or Kamailio
    send when an answer is slow on a loaded machine) is counted once.
    """
    uas = node.service.siprec.server.uas
    seen = defaultdict(list)
    requests = defaultdict(set)
    receive = uas.receive

    def recording(message, channel):
        if isinstance(message, Request):
            request = (message.cseq.number, message.method)
            if request not in requests[message.call_id]:
                requests[message.call_id].add(request)
                seen[message.call_id].append(message.method)
        receive(message, channel)

    monkeypatch.setattr(uas, "receive", recording)
    return seen


def recordings(seen: dict[str, list[str]]) -> dict[str, list[str]]:
    """The dialogs among what a node saw, without OPTIONS (Kamailio's pings, the SBC's keep-alive)."""
    return {call_id: methods for call_id, methods in seen.items() if "INVITE" in methods}


async def kamailio_in_front(tmp_path, stop_processes, *nodes):
    """
    Kamailio dispatching to the C{(node, seen)} pairs of L{make_nodes} (on
    127.0.0.1, 127.0.0.2) and L{tap}, up once its OPTIONS pings reach every
    node: its SIP port and process.
    """
    port = free_sip_port()
    kamailio = start_kamailio(reactor, tmp_path, "127.0.0.1", port,
                              [f"127.0.0.{i}:{sip_port(node)}" for i, (node, _) in enumerate(nodes, 1)])
    stop_processes.append(kamailio)
    await until(reactor, lambda: all(seen for _, seen in nodes) or kamailio.ended.called, attempts=3000)
    assert not kamailio.ended.called, kamailio.output
    return port, kamailio


async def haproxy_in_front(make_nodes, tmp_path, stop_processes):
    """
    Nodes a and b behind HAProxy, both UP: the nodes, HAProxy's port,
    process and stats socket. Streaming URLs point at HAProxy.
    """
    port = free_sip_port()
    a, b = await make_nodes(["127.0.0.1", "127.0.0.1"], f"ws://127.0.0.1:{port}")
    haproxy, stats = start_haproxy(reactor, tmp_path, port, [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"])
    stop_processes.append(haproxy)
    await _wait_for_states(stats, {"node1": "UP", "node2": "UP"}, haproxy)
    return a, b, port, haproxy, stats


async def place_calls(tmp_path, kamailio_port: int, count: int, name: str):
    """sipp, as the SBC, records C{count} calls through Kamailio; its exit code and output."""
    calls = tmp_path / f"{name}.csv"
    calls.write_text("SEQUENTIAL\n" + "".join(f"{new_ucid()[0]};\n" for _ in range(count)))
    sipp = run_sipp(reactor, "siprec_dialog_via_proxy.xml", f"127.0.0.1:{kamailio_port}",
                    "-inf", str(calls), "-m", str(count), "-r", "10", "-l", str(count),
                    workdir=tmp_path)
    return await sipp.ended, sipp.output


@pytest_twisted.ensureDeferred
async def test_kamailio_spreads_recordings_keeps_each_dialog_on_its_node_and_skips_a_stopped_one(
        make_nodes, tmp_path, monkeypatch, stop_processes):
    a, b = await make_nodes(["127.0.0.1", "127.0.0.2"])
    seen_a, seen_b = tap(monkeypatch, a), tap(monkeypatch, b)
    port, kamailio = await kamailio_in_front(tmp_path, stop_processes, (a, seen_a), (b, seen_b))

    # An SBC's keep-alive (Max-Forwards: 0) is answered while a node is up (sipp checks Allow and Accept).
    keep_alive = run_sipp(reactor, "options.xml", f"127.0.0.1:{port}", workdir=tmp_path)
    assert await keep_alive.ended == 0, keep_alive.output

    code, output = await place_calls(tmp_path, port, 20, "twenty")
    # sipp checks every answer: a 481 from a node that did not hold the
    # dialog, or a lost request, fails the call and sipp's exit code.
    assert code == 0, output + kamailio.output
    on_a, on_b = recordings(seen_a), recordings(seen_b)
    assert len(on_a) + len(on_b) == 20
    assert on_a and on_b, "the Call-ID hash spreads the calls over both nodes"
    assert not set(on_a) & set(on_b), "every dialog's requests reach one node"
    for methods in (*on_a.values(), *on_b.values()):
        assert sorted(methods) == ["ACK", "ACK", "BYE", "INVITE", "INVITE", "UPDATE"], methods

    b_address = f"127.0.0.2:{sip_port(b)}"
    await b.service.stopService()
    await kamailio.wait_for(f"recording node sip:{b_address} is down")
    marked_down = len(kamailio.output)
    before = set(on_a)
    code, output = await place_calls(tmp_path, port, 6, "after")
    assert code == 0, output + kamailio.output
    new = set(recordings(seen_a)) - before
    assert len(new) == 6, "with node b down, every new call goes to node a"
    assert "tried again" not in kamailio.output[marked_down:], "a node marked down is skipped, not tried"


def answers(monkeypatch, node) -> dict[str, list[tuple[int, str | None]]]:
    """The final answers C{node}'s SIP stack gives to INVITEs, with their Retry-After, by Call-ID."""
    transactions = node.service.siprec.server.uas.transactions
    given = defaultdict(list)
    respond = transactions.respond

    def recording(request, response):
        if request.method == "INVITE" and response.status >= 200:
            given[request.call_id].append((response.status, response.headers.get("Retry-After")))
        respond(request, response)

    monkeypatch.setattr(transactions, "respond", recording)
    return given


@pytest_twisted.ensureDeferred
async def test_kamailio_sends_new_calls_to_the_other_node_while_one_drains_and_its_dialogs_end_on_it(
        make_nodes, tmp_path, monkeypatch, stop_processes):
    """
    The first step of a SIGTERM's stop (L{admission.drain}, the call
    C{stopService} makes before anything ends): the rest of that stop closes
    the SIP port and ends each recording itself, which the test above covers.
    """
    a, b = await make_nodes(["127.0.0.1", "127.0.0.2"])
    seen_a, seen_b = tap(monkeypatch, a), tap(monkeypatch, b)
    answered_b = answers(monkeypatch, b)
    port, kamailio = await kamailio_in_front(tmp_path, stop_processes, (a, seen_a), (b, seen_b))

    placing = ensureDeferred(place_calls(tmp_path, port, 20, "drain"))
    # Node b drains while it holds a recording it has answered and not yet ended.
    await until(reactor, lambda: any(methods[-1] != "BYE" for methods in recordings(seen_b).values()
                                     if len(methods) > 1) or placing.called, attempts=3000)
    assert not placing.called, "node b held no call when it was to drain"
    held = {call_id for call_id, methods in recordings(seen_b).items() if methods[-1] != "BYE"}
    before = set(recordings(seen_a)) | set(recordings(seen_b))
    b.service.admission.drain()
    code, output = await placing
    assert code == 0, output + kamailio.output

    for call_id in held:
        assert recordings(seen_b)[call_id][-1] == "BYE", "b's dialog ends on b"
    new = (set(recordings(seen_a)) | set(recordings(seen_b))) - before
    assert len(new) == 20 - len(before)
    for call_id in new:
        assert sorted(seen_a[call_id]) == ["ACK", "ACK", "BYE", "INVITE", "INVITE", "UPDATE"], call_id
    refused = new & set(recordings(seen_b))
    assert refused, "the Call-ID hash sent some of the new calls to node b"
    for call_id in refused:
        assert answered_b[call_id] == [(503, "10")], answered_b[call_id]
    assert "tried again" in kamailio.output, "Kamailio tries a refused call again on the other node"


@pytest_twisted.ensureDeferred
async def test_haproxy_carries_a_streaming_url_from_one_node_to_the_other_and_drops_a_stopped_node(
        make_nodes, tmp_path, stop_processes):
    a, b, port, haproxy, stats = await haproxy_in_front(make_nodes, tmp_path, stop_processes)
    health = await treq.get(f"http://127.0.0.1:{port}/health")
    assert health.code == 200

    # Node a issues the URL; node a stops; the URL opens on node b.
    issued = await a.post("/autotranscribe/v1/streaming-url", {"externalId": "conv-in-front"})
    assert issued.code == 200
    url = (await issued.json())["streamingUrl"]
    assert url.startswith(f"ws://127.0.0.1:{port}/autotranscribe/v1/stream?token="), url
    await a.service.stopService()
    await _wait_for_states(stats, {"node1": "DOWN", "node2": "UP"}, haproxy)
    assert (await server_states(reactor, stats, "asapp_mg_streams"))["node1"].startswith("DOWN")

    client = await connect(url)[0]
    client.send_json({"message": "startStream", "sender": {"role": "customer", "externalId": "c-1"},
                      "language": "ko-KR"})
    start = await client.next_message()
    assert start["status"] == {"code": "1000", "description": "OK"}, start
    assert len(b.service.registry) == 1, "node b holds the stream"
    pcm = read_pcm("customer.wav")[: 8000 * 2 * 2]
    await pace(reactor, chunks(pcm), client.send_audio)
    client.send_json({"message": "finishStream"})
    while (final := await client.next_message())["message"] == "transcript":
        pass
    assert final["message"] == "finalResponse", final
    assert final["summary"]["totalAudioBytes"] == len(pcm)


async def _wait_for_states(stats, expected: dict[str, str], haproxy) -> None:
    """Until HAProxy's checks give each server of the REST backend the C{expected} status."""
    await until(reactor, lambda: stats.exists() or haproxy.ended.called, attempts=3000)
    states = {}
    for _ in range(300):
        states = await server_states(reactor, stats, "asapp_mg_rest")
        if all(states.get(server, "").startswith(status) for server, status in expected.items()):
            return
        assert not haproxy.ended.called, haproxy.output
        await task.deferLater(reactor, 0.1, lambda: None)
    raise AssertionError(f"HAProxy's servers stayed {states}, not {expected}\n{haproxy.output}")


@pytest_twisted.ensureDeferred
async def test_haproxy_drops_a_draining_node_and_sends_a_new_stream_to_the_other(make_nodes, tmp_path, stop_processes):
    a, b, port, haproxy, stats = await haproxy_in_front(make_nodes, tmp_path, stop_processes)

    b.service.admission.drain()
    health = await treq.get(f"http://127.0.0.1:{b.port}/health")
    assert (health.code, (await health.json())["status"]) == (503, "draining")
    await _wait_for_states(stats, {"node1": "UP", "node2": "DOWN"}, haproxy)
    assert (await server_states(reactor, stats, "asapp_mg_streams"))["node2"].startswith("DOWN")

    issued = await treq.post(f"http://127.0.0.1:{port}/autotranscribe/v1/streaming-url",
                             json={"externalId": "conv-drain"}, headers=AUTH)
    assert issued.code == 200
    client = await connect((await issued.json())["streamingUrl"])[0]
    client.send_json({"message": "startStream", "sender": {"role": "customer", "externalId": "c-1"},
                      "language": "ko-KR"})
    start = await client.next_message()
    assert start["status"] == {"code": "1000", "description": "OK"}, start
    assert (len(a.service.registry), len(b.service.registry)) == (1, 0), "node a holds the new stream"
    client.send_json({"message": "finishStream"})
    while (final := await client.next_message())["message"] == "transcript":
        pass
    assert final["message"] == "finalResponse", final
