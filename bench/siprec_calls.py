"""
SIPREC load against a running gateway: at each load level, N concurrent
recording sessions, each with two G.711 streams of speech paced in real time,
transcription started through the REST API. For each level it prints whether
the gateway kept up and the latency from the RTP packet that completes an
utterance's endpoint (the packet whose audio made Vosk, fed the same audio
alone, return that final result) to the webhook POST carrying it
(p50/p95/p99). Before the load it decodes the
same audio with Vosk directly, on as many threads as the gateway's ASR pool,
so the gateway's sustained streams are quoted against raw Vosk on the same
machine in the same run.

Start the gateway with ``bench/siprec-gateway.toml`` (its webhook points at
this script's receiver), then::

    python bench/siprec_calls.py --config bench/siprec-gateway.toml --calls 3 4 5 6 --seconds 30
"""

from __future__ import annotations

import argparse
import json
import random
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

SPEECH = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "speech"
PACKET_MS = 20
PACKET_SAMPLES = 160
#: How much audio Vosk gets per call in the raw baseline: the gateway's own slice.
RAW_CHUNK_BYTES = 1600


def read_pcm(name: str) -> bytes:
    with wave.open(str(SPEECH / name), "rb") as w:
        return w.readframes(w.getnframes())


def looped(pcm: bytes, seconds: int) -> bytes:
    """C{pcm} repeated to C{seconds} of audio: what each benchmark stream carries."""
    wanted = seconds * 8000 * 2
    return (pcm * (wanted // len(pcm) + 1))[:wanted]


# -- raw Vosk, the baseline ---------------------------------------------------------


def endpoints(model: vosk.Model, pcm: bytes) -> dict[int, int]:
    """
    Decode C{pcm} with Vosk alone, fed as the gateway feeds it: for each
    final result that endpointed, the end of its last word -> the audio
    position (ms) at which Vosk returned it. Decoding is deterministic, so
    this is where the gateway's recogniser of the same audio finalises too.
    """
    recognizer = vosk.KaldiRecognizer(model, 8000)
    recognizer.SetWords(True)
    found = {}
    for start in range(0, len(pcm), RAW_CHUNK_BYTES):
        if recognizer.AcceptWaveform(pcm[start : start + RAW_CHUNK_BYTES]):
            words = json.loads(recognizer.Result()).get("result")
            if words:
                found[round(1000 * words[-1]["end"])] = (start + RAW_CHUNK_BYTES) // 16
    recognizer.FinalResult()
    return found


def decode(recognizer: vosk.KaldiRecognizer, pcm: bytes) -> vosk.KaldiRecognizer:
    """All of C{pcm} through C{recognizer}, fed as the gateway feeds it, to a final result."""
    for start in range(0, len(pcm), RAW_CHUNK_BYTES):
        recognizer.AcceptWaveform(pcm[start : start + RAW_CHUNK_BYTES])
    recognizer.FinalResult()
    return recognizer


def raw_vosk_rate(model: vosk.Model, streams: list[bytes], threads: int) -> float:
    """
    Decode C{streams} with Vosk alone, C{threads} at a time, as fast as it
    goes: the real-time streams that rate amounts to. Each recogniser has
    decoded its stream's audio once before, untimed: Vosk's steady state, as
    the gateway's recycled recognisers are in (L{mgateway.asr.warm}).
    """

    def warm(pcm: bytes) -> vosk.KaldiRecognizer:
        recognizer = vosk.KaldiRecognizer(model, 8000)
        recognizer.SetWords(True)
        return decode(recognizer, pcm)

    with ThreadPoolExecutor(threads) as pool:
        recognizers = list(pool.map(warm, streams))
        began = time.monotonic()
        list(pool.map(decode, recognizers, streams))
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

    def send_packet(self, role: str, leg: int, payload: bytes, packet: int) -> None:
        datagram = build_rtp(0, (self.sequence[leg] + packet) & 0xFFFF, packet * PACKET_SAMPLES & 0xFFFFFFFF,
                             leg + 1, payload)
        self.transport.write(datagram, (self.sip[0], self.ports[leg]))
        self.sent_at[role].append(time.monotonic())

    def bye(self) -> None:
        self.transport.write(self._request("BYE", 2), self.sip)


async def load_level(reactor, options, calls_wanted: int, seconds: int, packets: dict[str, list[bytes]], auth):
    """One load level: (calls, 20 ms ticks missed, ticks in all)."""
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

    # Calls begin one after another, as they do in a contact centre: a
    # recogniser's first seconds decode slowest (Vosk builds its graph
    # caches), and calls that all begin on the same packet would queue behind
    # each other's warm-up.
    total = seconds * 1000 // PACKET_MS
    offsets = [i * options.stagger_ms // PACKET_MS for i in range(len(calls))]
    ticks = late = 0
    done = defer.Deferred()

    def tick(count: int) -> None:
        """Every 20 ms; C{count} > 1 when the reactor fell behind: those packets go late."""
        nonlocal ticks, late
        late += count - 1
        for _ in range(count):
            for call, offset in zip(calls, offsets):
                packet = ticks - offset
                if 0 <= packet < total:
                    call.send_packet("customer", 0, packets["customer"][packet], packet)
                    call.send_packet("agent", 1, packets["agent"][packet], packet)
            ticks += 1
        if ticks >= total + offsets[-1] and not done.called:
            done.callback(None)

    ticker = task.LoopingCall.withCount(tick)
    ticker.clock = reactor
    ticker.start(PACKET_MS / 1000, now=True)
    await done
    ticker.stop()

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
    return calls, late, ticks


def latencies_ms(calls: list[Call], webhook: Webhook, finalised: dict[str, dict[int, int]]) -> list[float]:
    """
    For each transcript that endpointed: its arrival less the send time of
    the packet that completed its endpoint (C{finalised}: role -> last word's
    end -> audio position, from L{endpoints}). Transcripts of the final flush
    at BYE have no such packet and are left out.
    """
    by_call = {call.call_id: call for call in calls}
    latencies = []
    for guid, role, end_ms, arrived in webhook.arrivals:
        call = by_call.get(guid)
        position = finalised[role].get(end_ms)
        if call is None or position is None:
            continue
        sent = call.sent_at[role]
        latencies.append(1000 * (arrived - sent[min(position // PACKET_MS, len(sent)) - 1]))
    return latencies


async def run(reactor, options) -> None:
    config = load_config(options.config)
    options.sip_host, options.sip_port = config.sip.udp_interface, config.sip.udp_port
    app = config.auth.apps[0]
    auth = {"asapp-api-id": options.api_id or app.api_id, "asapp-api-secret": options.api_secret}
    mu_law = {role: ulaw_encode(looped(read_pcm(f"{role}.wav"), options.seconds)) for role in ("customer", "agent")}
    packets = {role: [audio[i : i + PACKET_SAMPLES] for i in range(0, len(audio), PACKET_SAMPLES)]
               for role, audio in mu_law.items()}
    # What the gateway decodes: the audio as it comes out of G.711.
    pcm = {role: ulaw_decode(audio) for role, audio in mu_law.items()}

    threads = config.asr.threads
    vosk.SetLogLevel(-1)
    model = vosk.Model(str(tuned_model(config)))
    finalised = {role: endpoints(model, audio) for role, audio in pcm.items()}
    expected = sum(len(found) for found in finalised.values()) / len(finalised)
    raw_streams = [pcm["customer"], pcm["agent"]] * threads * 3
    raw_rate = raw_vosk_rate(model, raw_streams, threads)
    lag = [position - end for found in finalised.values() for end, position in found.items()]
    print(f"raw Vosk, {threads} threads: {raw_rate:.1f} real-time streams "
          f"({len(raw_streams)} streams of {options.seconds} s, {expected:.1f} endpointed utterances a stream, "
          f"endpoint {np.median(lag):.0f} ms of audio after the last word, median)", flush=True)

    # One receiver for the whole run: the gateway keeps its connections to it open.
    webhook = Webhook()
    reactor.listenTCP(options.webhook_port, Site(webhook), interface="127.0.0.1")
    if options.warm_up_seconds:
        # A gateway that has just started decodes its first calls' speech
        # slower: each recogniser's graph cache fills as it decodes. A round
        # of the largest level first, not reported, leaves the gateway's
        # recycled recognisers (warm_recognizers) as they are in service.
        await load_level(reactor, options, max(options.calls), options.warm_up_seconds, packets, auth)
        print(f"warm-up: {max(options.calls)} calls for {options.warm_up_seconds} s, not reported", flush=True)
    sustained = previous = 0
    for calls_wanted in options.calls:
        calls, late, total = await load_level(reactor, options, calls_wanted, options.seconds, packets, auth)
        streams = 2 * calls_wanted
        latencies = latencies_ms(calls, webhook, finalised)
        per_stream = len(latencies) / streams
        if latencies:
            p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
            figures = f"p50 {p50:.0f} ms, p95 {p95:.0f} ms, p99 {p99:.0f} ms"
        else:
            p95, figures = float("inf"), "no transcripts arrived: is the webhook pointed at this script?"
        # Kept up: the audio went out on time, every stream was transcribed as
        # fully as raw Vosk transcribes it, and recognition was not falling behind.
        kept_up = late <= total // 100 and per_stream >= 0.9 * expected and p95 <= options.max_latency_ms
        # Sustained: the largest level up to which every level kept up.
        if kept_up and sustained == 2 * previous:
            sustained = streams
        previous = calls_wanted
        print(f"{calls_wanted} calls, {streams} streams of {options.seconds} s: "
              f"{'kept up' if kept_up else 'did NOT keep up'}; ticks late {late} of {total}; "
              f"transcripts {len(latencies)} ({per_stream:.1f} a stream, raw Vosk {expected:.1f}); "
              f"endpoint to webhook {figures}", flush=True)
    print(f"real-time streams sustained: {sustained}; raw Vosk: {raw_rate:.1f}; "
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
    parser.add_argument("--warm-up-seconds", type=int, default=20,
                        help="a round of the largest level first, not reported (0: none)")
    parser.add_argument("--stagger-ms", type=int, default=1000, help="between the first packets of two calls")
    parser.add_argument("--webhook-port", type=int, default=8099)
    parser.add_argument("--max-latency-ms", type=int, default=1500,
                        help="the p95 latency above which recognition is deemed not to keep up")
    options = parser.parse_args()
    task.react(lambda reactor: defer.ensureDeferred(run(reactor, options)))


if __name__ == "__main__":
    main()
