"""
SIPREC load against a running gateway: at each load level, N concurrent
recording sessions, each with two G.711 streams of speech paced in real time,
transcription started through the REST API.

Every stream carries audio of its own: the speech fixtures shuffled and
concatenated in an order drawn for that stream, so no recogniser decodes the
same audio twice in a row and levels do not get warmer as the run goes on.
The pauses between sentences are of one kind per run (``--pause``): the
fixtures' line noise, comfort noise, digital silence (0xFF mu-law), or
packets missing (not sent). Each level runs with calls starting in a burst
(all on the same packet) and spread out (``--stagger-ms`` apart).

For each level it prints whether the gateway kept up and the latency from
the end of speech (the packet carrying the last word's end, as the webhook's
``end`` gives it) to the webhook POST carrying the utterance (p50/p95/p99),
and, with ``--gateway-pid``, the gateway's CPU per stream, minute by minute.
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
import sys
import tempfile
import time
import uuid
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import treq
import vosk
from twisted.internet import defer, task
from twisted.internet.protocol import DatagramProtocol
from twisted.web.resource import Resource
from twisted.web.server import Site

from mgateway.asr.overlay import endpoint_overlay
from mgateway.config import load_config
from mgateway.media.g711 import ulaw_decode, ulaw_encode
from mgateway.media.rtp import build_rtp
from mgateway.sip.message import Response, parse_message
from mgateway.sip.sdp import parse_sdp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.support.speech: where the speech is in a fixture

from mgateway.media.noise import comfort_noise  # noqa: E402
from tests.support.speech import speech_spans  # noqa: E402

SPEECH = ROOT / "tests" / "fixtures" / "speech"
FIXTURES = ("customer.wav", "agent.wav", "single.wav")
PAUSES = ("line", "comfort", "zeros", "missing")
PACKET_MS = 20
PACKET_SAMPLES = 160
#: How much audio Vosk gets per call in the raw baseline: the gateway's own slice.
RAW_CHUNK_BYTES = 1600


def read_pcm(name: str) -> bytes:
    with wave.open(str(SPEECH / name), "rb") as w:
        return w.readframes(w.getnframes())


class StreamAudio:
    """
    One benchmark stream: the fixtures in an order drawn from C{seed}, each
    repeated only after all were used, cut to C{seconds}; its pauses made of
    C{pause}. C{silent[i]}: packet C{i} lies in a pause (speech at -40 dBFS
    and above, joined across gaps under a second, is not a pause).
    """

    def __init__(self, seed: int, seconds: int, pause: str):
        rng = random.Random(seed)
        wanted = seconds * 8000 * 2
        pieces, length = [], 0
        while length < wanted:
            order = list(FIXTURES)
            rng.shuffle(order)
            for name in order:
                pieces.append(read_pcm(name))
                length += len(pieces[-1])
        pcm = bytearray(b"".join(pieces)[:wanted])
        samples = len(pcm) // 2
        speech = np.zeros(samples, dtype=bool)
        for start_ms, end_ms in speech_spans(bytes(pcm)):
            speech[start_ms * 8 : end_ms * 8] = True
        self.sentences = len(speech_spans(bytes(pcm)))
        if pause in ("comfort", "zeros", "missing"):
            filler = np.frombuffer(comfort_noise(samples) if pause == "comfort" else bytes(2 * samples), "<i2")
            audio = np.frombuffer(bytes(pcm), "<i2").copy()
            audio[~speech] = filler[~speech]
            pcm = bytearray(audio.tobytes())
        self.mu_law = ulaw_encode(bytes(pcm))
        self.packets = [self.mu_law[i : i + PACKET_SAMPLES] for i in range(0, len(self.mu_law), PACKET_SAMPLES)]
        per_packet = speech[: len(self.packets) * PACKET_SAMPLES].reshape(-1, PACKET_SAMPLES).any(axis=1)
        self.silent = [pause == "missing" and not s for s in per_packet]
        #: What the gateway decodes: the audio as it comes out of G.711.
        self.pcm = ulaw_decode(self.mu_law)


# -- raw Vosk, the baseline ---------------------------------------------------------


def decode(recognizer: vosk.KaldiRecognizer, pcm: bytes) -> vosk.KaldiRecognizer:
    """All of C{pcm} through C{recognizer} in 100 ms chunks, to a final result."""
    for start in range(0, len(pcm), RAW_CHUNK_BYTES):
        recognizer.AcceptWaveform(pcm[start : start + RAW_CHUNK_BYTES])
    recognizer.FinalResult()
    return recognizer


def raw_vosk_rate(model: vosk.Model, streams: list[bytes], threads: int) -> float:
    """
    Decode C{streams} with Vosk alone, C{threads} at a time, as fast as it
    goes, each on a fresh recogniser (as vosk-server does): the real-time
    streams that rate amounts to.
    """

    def fresh(pcm: bytes) -> vosk.KaldiRecognizer:
        recognizer = vosk.KaldiRecognizer(model, 8000)
        recognizer.SetWords(True)
        return decode(recognizer, pcm)

    with ThreadPoolExecutor(threads) as pool:
        began = time.monotonic()
        list(pool.map(fresh, streams))
        wall = time.monotonic() - began
    return sum(len(pcm) for pcm in streams) / 16000 / wall


def tuned_model(config) -> Path:
    """The model of the default language, through the same overlay the gateway loads."""
    language = next(lang for lang in config.asr.languages if lang.language == config.asr.default_language)
    if language.model_path is None:
        raise SystemExit(f"no model for {language.language} at {language.model}")
    return endpoint_overlay(language.model_path, Path(tempfile.mkdtemp(prefix="bench-overlay-")),
                            config.asr.endpoint_silence_ms, config.asr.max_utterance_ms)


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

    def send_packet(self, role: str, leg: int, payload: bytes, packet: int, missing: bool = False) -> None:
        """Send (unless C{missing}: the sender is silent) packet C{packet}; its time is kept either way."""
        if not missing:
            datagram = build_rtp(0, (self.sequence[leg] + packet) & 0xFFFF, packet * PACKET_SAMPLES & 0xFFFFFFFF,
                                 leg + 1, payload)
            self.transport.write(datagram, (self.sip[0], self.ports[leg]))
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
        call = Call(sip)
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
                        call.send_packet(role, leg, stream.packets[packet], packet, stream.silent[packet])
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


def latencies_ms(calls: list[Call], webhook: Webhook, ended_at: float) -> list[float]:
    """
    End of speech to webhook, for each transcript that came while its call's
    audio was still being sent (not from the flush at BYE): its arrival less
    the send time of the packet carrying its last word's end.
    """
    by_call = {call.call_id: call for call in calls}
    latencies = []
    for guid, role, end_ms, arrived in webhook.arrivals:
        call = by_call.get(guid)
        if call is None or arrived > ended_at:
            continue
        sent = call.sent_at[role]
        packet = end_ms // PACKET_MS
        if packet < len(sent):
            latencies.append(1000 * (arrived - sent[packet]))
    return latencies


def streams_for(calls: int, level_seed: int, seconds: int, pause: str) -> list[tuple["StreamAudio", "StreamAudio"]]:
    """Audio no stream of the run carried before: each stream's own order of the fixtures."""
    return [tuple(StreamAudio(level_seed * 1000 + 2 * call + leg, seconds, pause) for leg in (0, 1))
            for call in range(calls)]


async def run(reactor, options) -> None:
    config = load_config(options.config)
    options.sip_host, options.sip_port = config.sip.udp_interface, config.sip.udp_port
    app = config.auth.apps[0]
    auth = {"asapp-api-id": options.api_id or app.api_id, "asapp-api-secret": options.api_secret}
    threads = config.asr.threads
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
    seed = 0
    for start in options.starts:
        stagger_ms = 0 if start == "burst" else options.stagger_ms
        sustained = previous = 0
        for calls_wanted in options.calls:
            seed += 1
            audio = streams_for(calls_wanted, seed, options.seconds, options.pause)
            calls, late, total, cpu = await load_level(reactor, options, calls_wanted, options.seconds, audio, auth,
                                                       stagger_ms)
            ended_at = max(max(c.sent_at["customer"]) for c in calls)
            streams = 2 * calls_wanted
            latencies = latencies_ms(calls, webhook, ended_at)
            expected = sum(stream.sentences for pair in audio for stream in pair)
            if latencies:
                p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
                figures = f"p50 {p50:.0f} ms, p95 {p95:.0f} ms, p99 {p99:.0f} ms"
            else:
                p95, figures = float("inf"), "no transcripts arrived: is the webhook pointed at this script?"
            # Kept up: the audio went out on time, nearly every sentence was
            # delivered while the call went on, and recognition was not falling behind.
            kept_up = late <= total // 100 and len(latencies) >= 0.8 * expected and p95 <= options.max_latency_ms
            if kept_up and sustained == 2 * previous:
                sustained = streams
            previous = calls_wanted
            cpu_text = (", CPU per stream by minute " + " ".join(f"{100 * c:.0f}%" for c in cpu)) if cpu else ""
            print(f"{start}: {calls_wanted} calls, {streams} streams of {options.seconds} s: "
                  f"{'kept up' if kept_up else 'did NOT keep up'}; ticks late {late} of {total}; "
                  f"transcripts during the calls {len(latencies)} of {expected} sentences; "
                  f"end of speech to webhook {figures}{cpu_text}", flush=True)
        print(f"{start}: real-time streams sustained: {sustained}; raw Vosk: {raw_rate:.1f}; "
              f"ratio {sustained / raw_rate:.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="the running gateway's configuration file")
    parser.add_argument("--calls", type=int, nargs="+", default=[3, 4, 5, 6], help="load levels, in calls")
    parser.add_argument("--seconds", type=int, default=30, help="audio per stream at each level")
    parser.add_argument("--api", default="http://127.0.0.1:8080")
    parser.add_argument("--api-id", default="", help="default: the first app of the configuration")
    parser.add_argument("--api-secret", default="demo-secret",
                        help="the app's secret (the configuration keeps only its digest)")
    parser.add_argument("--raw-seconds", type=int, default=0,
                        help="audio per stream of the raw Vosk baseline (default: --seconds)")
    parser.add_argument("--pause", choices=PAUSES, default="line",
                        help="what the pauses between sentences hold (missing: no packets are sent)")
    parser.add_argument("--starts", nargs="+", choices=("burst", "spread"), default=["burst", "spread"],
                        help="how the calls of a level start: all at once, or --stagger-ms apart")
    parser.add_argument("--stagger-ms", type=int, default=1000,
                        help="between the first packets of two calls, in the spread-out round")
    parser.add_argument("--gateway-pid", type=int, default=0,
                        help="the gateway's process id: its CPU per stream is printed minute by minute")
    parser.add_argument("--webhook-port", type=int, default=8099)
    parser.add_argument("--max-latency-ms", type=int, default=1500,
                        help="the p95 end of speech to webhook latency above which the level did not keep up")
    options = parser.parse_args()
    task.react(lambda reactor: defer.ensureDeferred(run(reactor, options)))


if __name__ == "__main__":
    main()
