"""
SIPREC load against a running gateway: at each load level, N concurrent
recording sessions, each with two G.711 streams (G.729 with ``--pause sid``)
of speech paced in real time, transcription started through the REST API.

Every stream carries audio of its own: the speech fixtures shuffled and
concatenated in an order drawn for that stream, so no recogniser decodes the
same audio twice in a row and levels do not get warmer as the run goes on.
The pauses between sentences are of one kind per run (``--pause``): the
fixtures' line noise, comfort noise, digital silence (0xFF mu-law),
packets missing (not sent), or G.729 Annex B silence suppression (SID frames,
then nothing). Each level runs with calls starting in a burst (all on the
same packet) and spread out (``--stagger-ms`` apart); ``--runs`` repeats the
whole sweep and says whether the runs agree within one load level.

For each level it prints whether the gateway kept up and the latency from
the end of speech (the packet carrying the last word's end, as the webhook's
``end`` gives it) to the webhook POST carrying the utterance (p50/p95/p99),
the same from the endpoint-completing packet (``endpoint_silence_ms`` of
audio later), and, with ``--gateway-pid``, the gateway's CPU per stream,
minute by minute.
Before the load it decodes the same streams with Vosk alone (fresh
recognisers, 100 ms chunks) on as many threads as the gateway's ASR pool, so
the sustained streams are quoted against raw Vosk in the same run.

Start the gateway with ``bench/siprec-gateway.toml`` (its webhook points at
this script's receiver), then::

    python bench/siprec_calls.py --config bench/siprec-gateway.toml --calls 3 4 5 6 --seconds 30 --pause zeros
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
import uuid
from pathlib import Path

import numpy as np
import treq
import vosk
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, task
from twisted.internet.protocol import DatagramProtocol
from twisted.web.resource import Resource
from twisted.web.server import Site

from mgateway.config import load_config
from mgateway.media.rtp import build_rtp
from mgateway.sip.message import Response, parse_message
from mgateway.sip.sdp import parse_sdp
from siprec_audio import G729, PACKET_MS, PAUSES, StreamAudio, raw_vosk_rate, streams_for, tuned_model


# -- the gateway under load ------------------------------------------------------


class Webhook(Resource):
    """Records when each transcript arrived, by call and role."""

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

    def __init__(self, sip: tuple[str, int], payload_type: int = 0):
        self.sip = sip
        self.payload_type = payload_type
        self.call_id = f"bench-{uuid.uuid4().hex}"
        self.answer = defer.Deferred()
        self.ended = defer.Deferred()
        self.to = None
        self.ports: list[int] = []
        self.sent_at: dict[str, list[float]] = {"customer": [], "agent": []}
        #: The index of each leg's first packet sent: where the gateway's
        #: utterance times start (a sender silent before the first word
        #: sends nothing then, and the gateway's stream begins at its first packet).
        self.first_sent: dict[str, int] = {}
        #: The next RTP sequence number of each leg: one more for each packet sent.
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
        pt = self.payload_type
        codec = "a=rtpmap:18 G729/8000\r\na=fmtp:18 annexb=yes\r\n" if pt == G729 else ""
        sdp = (f"v=0\r\no=bench 1 1 IN IP4 {local}\r\ns=-\r\nc=IN IP4 {local}\r\nt=0 0\r\n"
               f"m=audio 9 RTP/AVP {pt}\r\n{codec}a=label:1\r\na=sendonly\r\n"
               f"m=audio 11 RTP/AVP {pt}\r\n{codec}a=label:2\r\na=sendonly\r\n").encode()
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

    def send_packet(self, role: str, leg: int, stream: StreamAudio, packet: int) -> None:
        """Send packet C{packet} of C{stream} (unless it has none there: the sender is silent); its time is kept either way."""
        payload = stream.packets[packet]
        if payload is not None:
            datagram = build_rtp(self.payload_type, self.sequence[leg], stream.timestamps[packet] & 0xFFFFFFFF,
                                 leg + 1, payload)
            self.sequence[leg] = (self.sequence[leg] + 1) & 0xFFFF
            self.transport.write(datagram, (self.sip[0], self.ports[leg]))
            self.first_sent.setdefault(role, packet)
        self.sent_at[role].append(time.monotonic())

    def bye(self) -> None:
        self.transport.write(self._request("BYE", 2), self.sip)


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of process C{pid} so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load_level(reactor, options, calls_wanted: int, seconds: int, audio: list[tuple], auth,
                     stagger_ms: int):
    """
    One load level, C{audio[i]} the (customer, agent) L{StreamAudio} of call
    C{i}: (calls, 20 ms ticks missed, ticks in all, CPU share of a core per
    stream for each minute).
    """
    sip = (options.sip_host, options.sip_port)
    calls, sockets = [], []
    for _ in range(calls_wanted):
        call = Call(sip, audio[0][0].payload_type)
        sockets.append(reactor.listenUDP(0, call, interface="127.0.0.1"))
        call.invite()
        calls.append(call)
    await defer.gatherResults([call.answer for call in calls])
    for call in calls:
        body = {"namespace": "siprec", "guid": call.call_id, "customerId": "c", "agentId": "a",
                "siprecParams": {"mediaLineOrder": "CUSTOMER_FIRST"}}
        response = await treq.post(options.api + "/mg-autotranscribe/v1/start-streaming",
                                   json.dumps(body).encode(), headers=auth)
        if response.code != 200:
            raise SystemExit(f"start-streaming failed: {response.code} {await response.text()}")

    # Calls begin on the same packet (a burst: every recogniser's slow first
    # seconds at once) or one after another, as they do in a contact centre.
    total = seconds * 1000 // PACKET_MS
    offsets = [i * stagger_ms // PACKET_MS for i in range(len(calls))]
    ticks = late = 0
    done = defer.Deferred()
    cpu_per_minute: list[float] = []
    sample = (time.monotonic(), cpu_seconds(options.gateway_pid)) if options.gateway_pid else None

    def sample_cpu() -> None:
        nonlocal sample
        now, used = time.monotonic(), cpu_seconds(options.gateway_pid)
        cpu_per_minute.append((used - sample[1]) / (now - sample[0]) / (2 * len(calls)))
        sample = (now, used)

    def tick(count: int) -> None:
        """Every 20 ms; C{count} > 1 when the reactor fell behind: those packets go late."""
        nonlocal ticks, late
        late += count - 1
        for _ in range(count):
            for call, offset in zip(calls, offsets):
                packet = ticks - offset
                if 0 <= packet < total:
                    for leg, (role, stream) in enumerate(zip(("customer", "agent"), audio[calls.index(call)])):
                        call.send_packet(role, leg, stream, packet)
            ticks += 1
            if sample is not None and ticks % (60_000 // PACKET_MS) == 0:
                sample_cpu()
        if ticks >= total + offsets[-1] and not done.called:
            done.callback(None)

    ticker = task.LoopingCall.withCount(tick)
    ticker.clock = reactor
    ticker.start(PACKET_MS / 1000, now=True)
    await done
    ticker.stop()
    if sample is not None and ticks % (60_000 // PACKET_MS):
        sample_cpu()

    for call in calls:
        call.bye()
    await defer.DeferredList([call.ended for call in calls])
    # The next level starts once these calls are flushed: none left behind.
    while True:
        response = await treq.get(options.api + "/health")
        if (await response.json())["calls"] == 0:
            break
        await task.deferLater(reactor, 0.5, lambda: None)
    await task.deferLater(reactor, 1, lambda: None)
    for socket in sockets:
        await socket.stopListening()
    return calls, late, ticks, cpu_per_minute


def latencies_ms(calls: list[Call], webhook: Webhook, ended_at: float, after_ms: int = 0) -> list[float]:
    """
    For each transcript that came while its call's audio was still being
    sent (not from the flush at BYE): its arrival less the send time of the
    packet C{after_ms} of audio after the end of its last word (its times
    count from the leg's first packet sent; 0: the packet
    carrying the end of speech; C{endpoint_silence_ms}: the packet whose
    arrival let the endpointer decide, sent or, in a pause without packets,
    due).
    """
    by_call = {call.call_id: call for call in calls}
    latencies = []
    for guid, role, end_ms, arrived in webhook.arrivals:
        call = by_call.get(guid)
        if call is None or arrived > ended_at:
            continue
        sent = call.sent_at[role]
        packet = call.first_sent.get(role, 0) + (end_ms + after_ms) // PACKET_MS
        if packet < len(sent):
            latencies.append(1000 * (arrived - sent[packet]))
    return latencies


#: The gateway's histograms of where an utterance's time goes, in order, by (metric, stage).
STAGE_METRICS = [("asapp_mg_utterance_stage_seconds", stage) for stage in ("waited", "decoded", "returned", "delivered")]
STAGE_METRICS += [("asapp_mg_webhook_latency_seconds", stage) for stage in ("queued", "answered")]


async def stage_totals(api: str) -> dict[tuple[str, str], tuple[float, float]]:
    """The gateway's stage histograms now: {(metric, stage): (sum of seconds, count)}."""
    response = await treq.get(api + "/metrics")
    totals: dict[tuple[str, str], list[float]] = {}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            for suffix, index in (("_sum", 0), ("_count", 1)):
                metric = sample.name.removesuffix(suffix)
                if sample.name.endswith(suffix) and (metric, sample.labels.get("stage")) in STAGE_METRICS:
                    totals.setdefault((metric, sample.labels["stage"]), [0.0, 0.0])[index] = sample.value
    return {key: tuple(value) for key, value in totals.items()}


def stage_means(before: dict, after: dict) -> str:
    """Each stage's mean over one level (ms) and its share of their sum."""
    means = []
    for key in STAGE_METRICS:
        (sum_before, count_before), (sum_after, count_after) = before.get(key, (0, 0)), after.get(key, (0, 0))
        count = count_after - count_before
        means.append((key[1], 1000 * (sum_after - sum_before) / count if count else 0.0))
    total = sum(mean for _, mean in means) or 1.0
    return ", ".join(f"{stage} {mean:.1f} ms ({100 * mean / total:.0f}%)" for stage, mean in means)


def percentiles(latencies: list[float]) -> str:
    if not latencies:
        return "none"
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
    return f"p50 {p50:.0f} ms, p95 {p95:.0f} ms, p99 {p99:.0f} ms"


async def sweep(reactor, options, webhook: Webhook, auth, endpoint_ms: int, raw_rate: float, run_seed: int) -> dict:
    """Every level of C{options.calls} for each way of starting: {start: real-time streams sustained}."""
    seed = run_seed
    sustained_by_start = {}
    for start in options.starts:
        stagger_ms = 0 if start == "burst" else options.stagger_ms
        sustained = previous = 0
        for calls_wanted in options.calls:
            seed += 1
            audio = streams_for(calls_wanted, seed, options.seconds, options.pause)
            stages_before = await stage_totals(options.api)
            calls, late, total, cpu = await load_level(reactor, options, calls_wanted, options.seconds, audio, auth,
                                                       stagger_ms)
            ended_at = max(max(c.sent_at["customer"]) for c in calls)
            streams = 2 * calls_wanted
            latencies = latencies_ms(calls, webhook, ended_at)
            decided = latencies_ms(calls, webhook, ended_at, endpoint_ms)
            expected = sum(stream.sentences for pair in audio for stream in pair)
            p95 = np.percentile(latencies, 95) if latencies else float("inf")
            # Kept up: the audio went out on time, nearly every sentence was
            # delivered while the calls went on, and recognition was not falling behind.
            kept_up = late <= total // 100 and len(latencies) >= 0.8 * expected and p95 <= options.max_latency_ms
            if kept_up and sustained == 2 * previous:
                sustained = streams
            previous = calls_wanted
            cpu_text = (", CPU per stream by minute " + " ".join(f"{100 * c:.0f}%" for c in cpu)) if cpu else ""
            print(f"{start}: {calls_wanted} calls, {streams} streams of {options.seconds} s: "
                  f"{'kept up' if kept_up else 'did NOT keep up'}; ticks late {late} of {total}; "
                  f"transcripts during the calls {len(latencies)} of {expected} sentences; "
                  f"end of speech to webhook {percentiles(latencies)}; "
                  f"endpoint-completing packet ({endpoint_ms} ms later) to webhook {percentiles(decided)}"
                  f"{cpu_text}", flush=True)
            print(f"  gateway stages, mean per utterance: {stage_means(stages_before, await stage_totals(options.api))}",
                  flush=True)
            if not latencies:
                print("no transcripts arrived: is the webhook pointed at this script?", flush=True)
        print(f"{start}: real-time streams sustained: {sustained}; raw Vosk: {raw_rate:.1f}; "
              f"ratio {sustained / raw_rate:.2f}", flush=True)
        sustained_by_start[start] = sustained
    return sustained_by_start


def agree_within_one_level(levels: list[int], sustained: list[int]) -> bool:
    """The runs' sustained streams are at most one load level (of C{levels}, in calls) apart."""
    steps = [sum(1 for calls in levels if 2 * calls <= streams) for streams in sustained]
    return max(steps) - min(steps) <= 1


async def run(reactor, options) -> None:
    config = load_config(options.config)
    options.sip_host, options.sip_port = config.sip.udp_interface, config.sip.udp_port
    app = config.auth.apps[0]
    auth = {"asapp-api-id": options.api_id or app.api_id, "asapp-api-secret": options.api_secret}
    threads = config.asr.threads or os.cpu_count()
    vosk.SetLogLevel(-1)
    model = vosk.Model(str(tuned_model(config)))
    raw_seconds = options.raw_seconds or options.seconds
    raw_audio = [stream.pcm for pair in streams_for(threads * 3, 999, raw_seconds, options.pause) for stream in pair]
    raw_rate = raw_vosk_rate(model, raw_audio, threads)
    print(f"machine: {os.cpu_count()} cores; raw Vosk, {threads} threads, fresh recognisers: "
          f"{raw_rate:.1f} real-time streams ({len(raw_audio)} streams of {raw_seconds} s); "
          f"pauses: {options.pause}", flush=True)

    # One receiver for the whole run: the gateway keeps its connections to it open.
    webhook = Webhook()
    reactor.listenTCP(options.webhook_port, Site(webhook), interface="127.0.0.1")
    runs = []
    for number in range(options.runs):
        if options.runs > 1:
            print(f"run {number + 1} of {options.runs}", flush=True)
        runs.append(await sweep(reactor, options, webhook, auth, config.asr.endpoint_silence_ms, raw_rate,
                                100 * number))
    if options.runs > 1:
        for start in options.starts:
            sustained = [r[start] for r in runs]
            verdict = "agree" if agree_within_one_level(options.calls, sustained) else "do NOT agree"
            print(f"{start}: streams sustained by run {' '.join(map(str, sustained))}: "
                  f"the runs {verdict} within one load level", flush=True)


def add_gateway_options(parser: argparse.ArgumentParser) -> None:
    """The options every SIPREC load benchmark takes: where the gateway is, what the pauses hold."""
    parser.add_argument("--config", required=True, help="the running gateway's configuration file")
    parser.add_argument("--api", default="http://127.0.0.1:8080")
    parser.add_argument("--api-id", default="", help="default: the first app of the configuration")
    parser.add_argument("--api-secret", default="demo-secret",
                        help="the app's secret (the configuration keeps only its digest)")
    parser.add_argument("--pause", choices=PAUSES, default="line",
                        help="what the pauses between sentences hold (missing: no packets are sent; "
                             "sid: G.729 with Annex B SID frames)")
    parser.add_argument("--gateway-pid", type=int, default=0,
                        help="the gateway's process id: its CPU per stream is printed minute by minute")
    parser.add_argument("--webhook-port", type=int, default=8099)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_gateway_options(parser)
    parser.add_argument("--calls", type=int, nargs="+", default=[3, 4, 5, 6], help="load levels, in calls")
    parser.add_argument("--seconds", type=int, default=30, help="audio per stream at each level")
    parser.add_argument("--raw-seconds", type=int, default=0,
                        help="audio per stream of the raw Vosk baseline (default: --seconds)")
    parser.add_argument("--starts", nargs="+", choices=("burst", "spread"), default=["burst", "spread"],
                        help="how the calls of a level start: all at once, or --stagger-ms apart")
    parser.add_argument("--stagger-ms", type=int, default=1000,
                        help="between the first packets of two calls, in the spread-out round")
    parser.add_argument("--max-latency-ms", type=int, default=1500,
                        help="the p95 end of speech to webhook latency above which the level did not keep up")
    parser.add_argument("--runs", type=int, default=1,
                        help="sweep this many times in a row, and say whether the runs agree within one level")
    options = parser.parse_args()
    task.react(lambda reactor: defer.ensureDeferred(run(reactor, options)))


if __name__ == "__main__":
    main()
