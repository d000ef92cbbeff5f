"""
SIPREC load: N concurrent recording sessions against a running gateway, each
with two G.711 streams of speech paced in real time, transcription started
through the REST API. Prints how many real-time streams were sustained and
the latency from the RTP packet that completes an utterance to the webhook
POST carrying it (p50/p95/p99).

The gateway's webhook must point at this script's receiver:

    [webhook]
    url = "http://127.0.0.1:8099/hook"

    python bench/siprec_calls.py --calls 10 --seconds 60 \\
        --sip 127.0.0.1:5070 --api http://127.0.0.1:8080 \\
        --api-id demo --api-secret demo-secret --webhook-port 8099
"""

from __future__ import annotations

import argparse
import json
import random
import time
import uuid
import wave
from pathlib import Path

import numpy as np
import treq
from twisted.internet import defer, task
from twisted.internet.protocol import DatagramProtocol
from twisted.web.resource import Resource
from twisted.web.server import Site

from mgateway.media.g711 import ulaw_encode
from mgateway.media.rtp import build_rtp
from mgateway.sip.message import Response, parse_message
from mgateway.sip.sdp import parse_sdp

SPEECH = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "speech"
PACKET_MS = 20
PACKET_SAMPLES = 160


def read_pcm(name: str) -> bytes:
    with wave.open(str(SPEECH / name), "rb") as w:
        return w.readframes(w.getnframes())


def mu_law_packets(pcm: bytes) -> list[bytes]:
    payload = ulaw_encode(pcm)
    return [payload[i : i + PACKET_SAMPLES] for i in range(0, len(payload) - PACKET_SAMPLES + 1, PACKET_SAMPLES)]


class Webhook(Resource):
    """Records when each transcript arrived, by (guid, role)."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.arrivals: list[tuple[str, str, int, float]] = []

    def render_POST(self, request):
        body = json.loads(request.content.read())
        self.arrivals.append((body["externalConversationId"], body["sender"]["role"],
                              body["autotranscribeResponse"]["end"], time.monotonic()))
        return b"{}"


class Call(DatagramProtocol):
    """
    One recording session: its SIP dialog (over UDP) and its two RTP streams.
    With no vendor call id in the INVITE, the SIP Call-ID is the call's guid.
    """

    def __init__(self, sip: tuple[str, int]):
        self.sip = sip
        self.call_id = f"bench-{uuid.uuid4().hex}"
        self.answer = defer.Deferred()
        self.ended = defer.Deferred()
        self.to = None
        self.ports: list[int] = []
        self.sent_at: dict[str, list[float]] = {"customer": [], "agent": []}
        self.sequence = [random.getrandbits(16), random.getrandbits(16)]

    def _request(self, method: str, cseq: int, body: bytes = b"", content_type: str = "") -> bytes:
        local = self.transport.getHost()
        headers = [
            f"{method} sip:srs@{self.sip[0]}:{self.sip[1]} SIP/2.0",
            f"Via: SIP/2.0/UDP {local.host}:{local.port};branch=z9hG4bK{uuid.uuid4().hex}",
            f"From: <sip:src@{local.host}>;tag=bench",
            f"To: {self.to or f'<sip:srs@{self.sip[0]}>'}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:src@{local.host}:{local.port}>;+sip.src",
            "Max-Forwards: 70",
            "Require: siprec" if method == "INVITE" else "",
            f"Content-Type: {content_type}" if content_type else "",
            f"Content-Length: {len(body)}",
        ]
        return ("\r\n".join(h for h in headers if h) + "\r\n\r\n").encode() + body

    def invite(self) -> None:
        local = self.transport.getHost().host
        sdp = (f"v=0\r\no=bench 1 1 IN IP4 {local}\r\ns=-\r\nc=IN IP4 {local}\r\nt=0 0\r\n"
               "m=audio 9 RTP/AVP 0\r\na=label:1\r\na=sendonly\r\n"
               "m=audio 11 RTP/AVP 0\r\na=label:2\r\na=sendonly\r\n").encode()
        self.transport.write(self._request("INVITE", 1, sdp, "application/sdp"), self.sip)

    def datagramReceived(self, data, addr):
        message = parse_message(data)
        if not isinstance(message, Response) or message.status < 200:
            return
        if message.cseq.method == "INVITE":
            self.to = message.headers.get("To")
            self.transport.write(self._request("ACK", 1), self.sip)
            if not self.answer.called:
                self.ports = [m.port for m in parse_sdp(message.body).media]
                self.answer.callback(None)
        elif message.cseq.method == "BYE" and not self.ended.called:
            self.ended.callback(None)

    def send_packet(self, role: str, leg: int, payload: bytes, packet: int) -> None:
        datagram = build_rtp(0, (self.sequence[leg] + packet) & 0xFFFF, packet * PACKET_SAMPLES & 0xFFFFFFFF,
                             leg + 1, payload)
        self.transport.write(datagram, (self.sip[0], self.ports[leg]))
        self.sent_at[role].append(time.monotonic())

    def bye(self) -> None:
        self.transport.write(self._request("BYE", 2), self.sip)


async def run(reactor, options) -> None:
    host, port = options.sip.rsplit(":", 1)
    sip = (host, int(port))
    webhook = Webhook()
    listening = reactor.listenTCP(options.webhook_port, Site(webhook), interface="127.0.0.1")
    auth = {"asapp-api-id": options.api_id, "asapp-api-secret": options.api_secret}
    customer, agent = mu_law_packets(read_pcm("customer.wav")), mu_law_packets(read_pcm("agent.wav"))

    calls = []
    for _ in range(options.calls):
        call = Call(sip)
        reactor.listenUDP(0, call, interface="127.0.0.1")
        call.invite()
        calls.append(call)
    await defer.gatherResults([call.answer for call in calls])
    for call in calls:
        body = {"namespace": "siprec", "guid": call.call_id, "customerId": "c", "agentId": "a",
                "autotranscribeParams": {"language": options.language},
                "siprecParams": {"mediaLineOrder": "CUSTOMER_FIRST"}}
        response = await treq.post(options.api + "/mg-autotranscribe/v1/start-streaming",
                                   json.dumps(body).encode(), headers=auth)
        if response.code != 200:
            raise SystemExit(f"start-streaming failed: {response.code} {await response.text()}")

    total = options.seconds * 1000 // PACKET_MS
    sent = late = 0
    done = defer.Deferred()

    def tick(count: int) -> None:
        """Every 20 ms; C{count} > 1 when the reactor fell behind: those packets go late."""
        nonlocal sent, late
        late += count - 1
        for _ in range(count):
            if sent == total:
                break
            for call in calls:
                call.send_packet("customer", 0, customer[sent % len(customer)], sent)
                call.send_packet("agent", 1, agent[sent % len(agent)], sent)
            sent += 1
        if sent == total and not done.called:
            done.callback(None)

    ticker = task.LoopingCall.withCount(tick)
    ticker.clock = reactor
    ticker.start(PACKET_MS / 1000, now=True)
    await done
    ticker.stop()

    for call in calls:
        call.bye()
    await defer.DeferredList([call.ended for call in calls])
    await task.deferLater(reactor, 2, lambda: None)
    listening.stopListening()
    report(options, calls, webhook, late, total)


def report(options, calls: list[Call], webhook: Webhook, late: int, total: int) -> None:
    by_call = {call.call_id: call for call in calls}
    latencies = []
    for guid, role, end_ms, arrived in webhook.arrivals:
        call = by_call.get(guid)
        if call is None:
            continue
        sent = call.sent_at[role]
        packet = min(end_ms // PACKET_MS, len(sent) - 1)
        latencies.append(1000 * (arrived - sent[packet]))
    streams = 2 * len(calls)
    print(f"{len(calls)} calls, {streams} streams of {options.seconds} s; "
          f"20 ms ticks missed: {late} of {total}")
    if not latencies:
        print("no transcripts arrived: is the gateway's webhook pointed at this script?")
        return
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
    print(f"transcripts: {len(latencies)}; latency from the completing packet to the webhook: "
          f"p50 {p50:.0f} ms, p95 {p95:.0f} ms, p99 {p99:.0f} ms")
    # Sustained: the audio went out on time and recognition kept up with it.
    kept_up = late <= total // 100 and p95 <= options.max_latency_ms
    print(f"real-time streams sustained: {streams if kept_up else 0} "
          f"({'yes' if kept_up else 'no'}: p95 limit {options.max_latency_ms} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--sip", default="127.0.0.1:5070", help="the gateway's SIP UDP address")
    parser.add_argument("--api", default="http://127.0.0.1:8080")
    parser.add_argument("--api-id", default="demo")
    parser.add_argument("--api-secret", default="demo-secret")
    parser.add_argument("--language", default="en-US")
    parser.add_argument("--webhook-port", type=int, default=8099)
    parser.add_argument("--max-latency-ms", type=int, default=3000,
                        help="the p95 latency above which recognition is deemed not to keep up")
    options = parser.parse_args()
    task.react(lambda reactor: defer.ensureDeferred(run(reactor, options)))


if __name__ == "__main__":
    main()
