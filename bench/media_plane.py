"""
The SIPREC media plane on one core: how many RTP streams the gateway
receives without loss while SIP and REST stay answered quickly.

The gateway is started pinned to one core (``--gateway-core``) with the
benchmark configuration; SIPREC sessions are set up over SIP (two PCMU
streams each) and transcription is not started, so what is measured is the
receive path alone. A paced sender in its own process, pinned to the other
core, sends 50 packets/s per stream. At each level (in streams) it prints:

- packets sent, and received by the gateway (its ``/metrics`` RTP counters),
  shed by the gateway (read but dropped to keep signalling answered), and
  dropped by the kernel (the drops column of ``/proc/net/udp`` for the
  gateway's RTP sockets, and the growth of ``RcvbufErrors`` in
  ``/proc/net/snmp``, which counts every socket on the machine);
- the gateway's CPU (share of its one core), all threads and the reactor's
  alone (the rest is mostly the ASR pool preparing recognisers for the
  start-streaming probes);
- SIP OPTIONS round trips and REST start-streaming latencies (p50/p99),
  sampled throughout the level on probe sessions that carry no media.

and finally the highest level with loss under 0.1% and both p99s under 50 ms.
Levels add calls to the ones already up, so a level's sessions are set up
while the previous level's media still flows::

    python bench/media_plane.py --streams 100 200 400 800 1000 1200 --seconds 15
"""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np

from mgateway.config import load_config
from mgateway.media.g711 import ulaw_encode
from mgateway.media.noise import comfort_noise
from mgateway.sip.message import Response, parse_message
from mgateway.sip.sdp import parse_sdp

ROOT = Path(__file__).resolve().parent.parent
PACKET_SECONDS = 0.02
PACKET_SAMPLES = 160
#: Sessions kept without media for the REST probe (start-streaming, then stop-streaming).
PROBE_CALLS = 4
#: How many INVITEs are outstanding at once while a level's sessions are set up.
INVITE_WINDOW = 20
LOSS_LIMIT = 0.001
SIGNALLING_P99_LIMIT_MS = 50.0


# -- the machine and the gateway process ---------------------------------------------


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown CPU")
    load = Path("/proc/loadavg").read_text().split()[:3]
    return f"{model}, {os.cpu_count()} cores, load average {' '.join(load)}"


def cpu_seconds(pid: int, thread: int | None = None) -> float:
    """User and system CPU time of process C{pid} (all its threads, or only C{thread}) so far."""
    stat = Path(f"/proc/{pid}/task/{thread}/stat" if thread else f"/proc/{pid}/stat")
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_gateway(config: Path, core: int, api: str, log: str) -> subprocess.Popen:
    twistd = shutil.which("twistd", path=str(Path(sys.executable).parent)) or "twistd"
    output = open(log, "wb") if log else subprocess.DEVNULL
    process = subprocess.Popen([twistd, "-n", "--pidfile=", "asapp-mg", "--config", str(config)],
                               preexec_fn=lambda: os.sched_setaffinity(0, {core}),
                               stdout=output, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the gateway exited with {process.returncode}")
        try:
            urllib.request.urlopen(api + "/health", timeout=1).read()
            return process
        except OSError:
            time.sleep(0.3)
    process.terminate()
    raise SystemExit("the gateway did not answer /health within 60 s")


def rtp_counters(api: str) -> dict[str, float]:
    """The gateway's RTP totals from /metrics, by outcome."""
    text = urllib.request.urlopen(api + "/metrics", timeout=30).read().decode()
    return {match[1]: float(match[2]) for match in
            re.finditer(r'^asapp_mg_rtp_packets_total\{outcome="(\w+)"\} (\S+)$', text, re.M)}


def kernel_drops(ports: set[int]) -> int:
    """The drops column of /proc/net/udp for the sockets bound to C{ports}."""
    drops = 0
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) in ports:
            drops += int(fields[-1])
    return drops


def rcvbuf_errors() -> int:
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines() if line.startswith("Udp:")]
    return int(lines[1][lines[0].index("RcvbufErrors")])


# -- SIP -------------------------------------------------------------------------------


class SipClient:
    """SIPREC sessions over one UDP socket, set up and ended synchronously."""

    def __init__(self, sip: tuple[str, int]):
        self.sip = sip
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.settimeout(10)
        self.host, self.port = self.socket.getsockname()

    def request(self, method: str, call_id: str, cseq: int, to: str | None = None, body: bytes = b"") -> bytes:
        headers = [
            f"{method} sip:srs@{self.sip[0]}:{self.sip[1]} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.host}:{self.port};branch=z9hG4bK{uuid.uuid4().hex}",
            f"From: <sip:src@{self.host}>;tag=bench",
            f"To: {to or f'<sip:srs@{self.sip[0]}>'}",
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:src@{self.host}:{self.port}>;+sip.src",
            "Max-Forwards: 70",
        ]
        if method == "INVITE":
            headers += ["Require: siprec", "Content-Type: application/sdp"]
        headers.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(headers) + "\r\n\r\n").encode() + body

    def _final(self) -> Response:
        while True:
            message = parse_message(self.socket.recv(65536))
            if isinstance(message, Response) and message.status >= 200:
                return message

    def invite(self, count: int) -> list[tuple[str, str, list[int]]]:
        """C{count} sessions: (Call-ID, To header, RTP ports), INVITE_WINDOW at a time."""
        sdp = (f"v=0\r\no=bench 1 1 IN IP4 {self.host}\r\ns=-\r\nc=IN IP4 {self.host}\r\nt=0 0\r\n"
               "m=audio 9 RTP/AVP 0\r\na=label:1\r\na=sendonly\r\n"
               "m=audio 11 RTP/AVP 0\r\na=label:2\r\na=sendonly\r\n").encode()
        sessions = []
        while len(sessions) < count:
            window = [f"bench-{uuid.uuid4().hex}" for _ in range(min(INVITE_WINDOW, count - len(sessions)))]
            for call_id in window:
                self.socket.sendto(self.request("INVITE", call_id, 1, body=sdp), self.sip)
            for _ in window:
                answer = self._final()
                if answer.status != 200:
                    raise SystemExit(f"INVITE answered {answer.status} {answer.reason}")
                call_id, to = answer.headers.get("Call-ID"), answer.headers.get("To")
                self.socket.sendto(self.request("ACK", call_id, 1, to), self.sip)
                sessions.append((call_id, to, [m.port for m in parse_sdp(answer.body).media]))
        return sessions

    def bye(self, sessions) -> None:
        for start in range(0, len(sessions), INVITE_WINDOW):
            window = sessions[start : start + INVITE_WINDOW]
            for call_id, to, _ in window:
                self.socket.sendto(self.request("BYE", call_id, 2, to), self.sip)
            for _ in window:
                self._final()


class Probes:
    """
    Signalling sampled under load, each probe in its own thread: SIP OPTIONS
    every C{interval} seconds, and start-streaming then stop-streaming on the
    media-less probe sessions. A probe unanswered in 5 s counts as 5 s.
    """

    def __init__(self, sip: tuple[str, int], api: str, auth: dict[str, str], probe_calls: list[str],
                 interval: float, rest_interval: float):
        self.sip, self.api, self.auth, self.probe_calls = sip, api, auth, probe_calls
        self.interval, self.rest_interval = interval, rest_interval
        self.options_ms: list[float] = []
        self.start_ms: list[float] = []
        self.unanswered = 0
        self.refused: collections.Counter = collections.Counter()
        self._running = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self.options_ms, self.start_ms, self.unanswered, self.refused = [], [], 0, collections.Counter()
        self._running.set()
        self._threads = [threading.Thread(target=self._options, daemon=True),
                         threading.Thread(target=self._rest, daemon=True)]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._running.clear()
        for thread in self._threads:
            thread.join()

    def _options(self) -> None:
        client = SipClient(self.sip)
        client.socket.settimeout(5)
        while self._running.is_set():
            began = time.monotonic()
            client.socket.sendto(client.request("OPTIONS", f"probe-{uuid.uuid4().hex}", 1), self.sip)
            try:
                client._final()
                self.options_ms.append(1000 * (time.monotonic() - began))
            except TimeoutError:
                self.unanswered += 1
                self.options_ms.append(5000.0)
            time.sleep(max(0.0, self.interval - (time.monotonic() - began)))

    def _post(self, path: str, body: dict) -> float:
        request = urllib.request.Request(self.api + path, json.dumps(body).encode(),
                                         {**self.auth, "Content-Type": "application/json"})
        began = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                response.read()
        except urllib.error.HTTPError as error:  # answered all the same: counted by status
            error.read()
            self.refused[f"{path.rsplit('/', 1)[1]} {error.code}"] += 1
        except OSError:
            self.unanswered += 1
            return 5000.0
        return 1000 * (time.monotonic() - began)

    def warm_up(self, seconds: float = 3.0) -> None:
        """A few start/stop rounds, then time for the ASR pool to replace its recognisers, unmeasured."""
        for guid in self.probe_calls:
            self._post("/mg-autotranscribe/v1/start-streaming", {
                "namespace": "siprec", "guid": guid, "customerId": "c", "agentId": "a"})
            self._post("/mg-autotranscribe/v1/stop-streaming", {"namespace": "siprec", "guid": guid})
        time.sleep(seconds)

    def _rest(self) -> None:
        turn = 0
        while self._running.is_set():
            began = time.monotonic()
            guid = self.probe_calls[turn % len(self.probe_calls)]
            turn += 1
            self.start_ms.append(self._post("/mg-autotranscribe/v1/start-streaming", {
                "namespace": "siprec", "guid": guid, "customerId": "c", "agentId": "a"}))
            self._post("/mg-autotranscribe/v1/stop-streaming", {"namespace": "siprec", "guid": guid})
            time.sleep(max(0.0, self.rest_interval - (time.monotonic() - began)))


# -- the paced sender --------------------------------------------------------------------


def send(core: int, host: str, ports: list[int], seconds: float, result) -> None:
    """
    50 packets/s to each of C{ports} for C{seconds}, pinned to C{core}: every
    20 ms one packet per stream, the streams spread over the 20 ms in four
    groups. Puts (packets sent, ticks that started late by more than 20 ms).
    """
    os.sched_setaffinity(0, {core})
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    out.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    payload = ulaw_encode(comfort_noise(PACKET_SAMPLES, -40))
    datagrams = [bytearray(struct.pack("!BBHII", 0x80, 0, 0, 0, 0x1000 + i) + payload) for i in range(len(ports))]
    addresses = [(host, port) for port in ports]
    groups = [range(g, len(ports), 4) for g in range(4)]
    ticks = int(seconds / PACKET_SECONDS)
    began = time.monotonic()
    sent = late = 0
    for tick in range(ticks):
        for g, group in enumerate(groups):
            due = began + tick * PACKET_SECONDS + g * PACKET_SECONDS / 4
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            elif g == 0 and wait < -PACKET_SECONDS:
                late += 1
            for i in group:
                datagram = datagrams[i]
                struct.pack_into("!HI", datagram, 2, tick & 0xFFFF, tick * PACKET_SAMPLES & 0xFFFFFFFF)
                try:
                    out.sendto(datagram, addresses[i])
                    sent += 1
                except BlockingIOError:
                    pass
    result.put((sent, late))


# -- one level -----------------------------------------------------------------------------


def percentiles(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("inf"), float("inf")
    p50, p99 = np.percentile(values, [50, 99])
    return float(p50), float(p99)


def drained(api: str, expected: float, patience: float) -> dict[str, float]:
    """The counters once the gateway has read what is still queued: all of it, or nothing more for C{patience} s."""
    counters, since = rtp_counters(api), time.monotonic()
    while counters.get("received", 0) < expected and time.monotonic() - since < patience:
        time.sleep(0.2)
        latest = rtp_counters(api)
        if latest.get("received", 0) > counters.get("received", 0):
            since = time.monotonic()
        counters = latest
    return counters


def run_level(options, gateway_pid: int, ports: list[int], probes: Probes) -> dict:
    port_set = set(ports)
    before = rtp_counters(options.api)
    drops_before, rcvbuf_before = kernel_drops(port_set), rcvbuf_errors()
    result = multiprocessing.Queue()
    sender = multiprocessing.Process(target=send, args=(options.sender_core, options.rtp_host, ports,
                                                        options.seconds, result))
    cpu_before, wall_before = cpu_seconds(gateway_pid), time.monotonic()
    reactor_before = cpu_seconds(gateway_pid, gateway_pid)
    probes.start()
    sender.start()
    sent, late = result.get()
    sender.join()
    wall = time.monotonic() - wall_before
    cpu = (cpu_seconds(gateway_pid) - cpu_before) / wall
    reactor_cpu = (cpu_seconds(gateway_pid, gateway_pid) - reactor_before) / wall
    probes.stop()
    after = drained(options.api, before.get("received", 0) + sent, options.drain)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in ("received", "shed", "lost", "late")}
    options_p50, options_p99 = percentiles(probes.options_ms)
    start_p50, start_p99 = percentiles(probes.start_ms)
    kept = delta["received"] - delta["shed"]
    return {
        "streams": len(ports), "sent": sent, "sender_late_ticks": late, "received": int(delta["received"]),
        "shed": int(delta["shed"]), "loss": (sent - kept) / sent if sent else 1.0,
        "kernel_drops": kernel_drops(port_set) - drops_before, "rcvbuf_errors": rcvbuf_errors() - rcvbuf_before,
        "cpu": cpu, "reactor_cpu": reactor_cpu, "options_p50": options_p50, "options_p99": options_p99,
        "start_p50": start_p50, "start_p99": start_p99, "unanswered": probes.unanswered, "refused": dict(probes.refused),
    }


def report(level: dict, seconds: float) -> str:
    return (f"{level['streams']:>5} streams {level['sent'] / seconds:>8,.0f} packets/s: "
            f"sent {level['sent']:,} received {level['received']:,} shed {level['shed']:,} "
            f"loss {100 * level['loss']:.3f}%; kernel drops {level['kernel_drops']:,} "
            f"(RcvbufErrors +{level['rcvbuf_errors']:,}); gateway CPU {100 * level['cpu']:.0f}% "
            f"(reactor thread {100 * level['reactor_cpu']:.0f}%); "
            f"OPTIONS p50 {level['options_p50']:.1f} ms p99 {level['options_p99']:.1f} ms; "
            f"start-streaming p50 {level['start_p50']:.1f} ms p99 {level['start_p99']:.1f} ms"
            + (f"; {level['unanswered']} probes unanswered in 5 s" if level["unanswered"] else "")
            + (f"; REST errors {level['refused']}" if level["refused"] else "")
            + (f"; sender late {level['sender_late_ticks']} ticks" if level["sender_late_ticks"] else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "bench" / "siprec-gateway.toml"),
                        help="the gateway's configuration (it is started with it, unless --gateway-pid)")
    parser.add_argument("--streams", type=int, nargs="+", default=[100, 200, 400, 800, 1000, 1200],
                        help="load levels, in RTP streams (two per session)")
    parser.add_argument("--seconds", type=float, default=15, help="media sent at each level")
    parser.add_argument("--gateway-core", type=int, default=0)
    parser.add_argument("--sender-core", type=int, default=1, help="the sender's and the probes' core")
    parser.add_argument("--gateway-pid", type=int, default=0, help="use this running gateway instead")
    parser.add_argument("--gateway-log", default="", help="where the started gateway's log goes (default: nowhere)")
    parser.add_argument("--api", default="http://127.0.0.1:8080")
    parser.add_argument("--api-secret", default="demo-secret",
                        help="the first app's secret (the configuration keeps only its digest)")
    parser.add_argument("--probe-interval", type=float, default=0.05, help="seconds between SIP OPTIONS")
    parser.add_argument("--rest-interval", type=float, default=0.5,
                        help="seconds between start-streaming probes (each starts and stops a recogniser)")
    parser.add_argument("--drain", type=float, default=1.0,
                        help="after the sender stops, count once the gateway has read nothing more for this long")
    options = parser.parse_args()
    config = load_config(options.config)
    sip = (config.sip.udp_interface, config.sip.udp_port)
    options.rtp_host = config.sip.rtp_address
    auth = {"asapp-api-id": config.auth.apps[0].api_id, "asapp-api-secret": options.api_secret}
    os.sched_setaffinity(0, {options.sender_core})
    print(f"machine: {machine()}", flush=True)
    gateway = None
    if options.gateway_pid:
        pid = options.gateway_pid
    else:
        gateway = start_gateway(Path(options.config), options.gateway_core, options.api, options.gateway_log)
        pid = gateway.pid
    print(f"gateway pid {pid} on core(s) {sorted(os.sched_getaffinity(pid))}; sender and probes on core "
          f"{options.sender_core}; {options.seconds:g} s per level", flush=True)
    client = SipClient(sip)
    sessions = []
    try:
        probe_sessions: list = []
        sustained = None
        for level_number, streams in enumerate(options.streams):
            # Fresh probe sessions each level: without media, the gateway ends them after media_timeout_seconds.
            client.bye(probe_sessions)
            probe_sessions = client.invite(PROBE_CALLS)
            probes = Probes(sip, options.api, auth, [s[0] for s in probe_sessions], options.probe_interval,
                            options.rest_interval)
            if level_number == 0:
                probes.warm_up()
            sessions += client.invite(max(0, (streams + 1) // 2 - len(sessions)))
            ports = [port for _, _, pair in sessions for port in pair][:streams]
            level = run_level(options, pid, ports, probes)
            print(report(level, options.seconds), flush=True)
            if (level["loss"] < LOSS_LIMIT and level["options_p99"] < SIGNALLING_P99_LIMIT_MS
                    and level["start_p99"] < SIGNALLING_P99_LIMIT_MS):
                sustained = streams
        print(f"highest level with loss < {100 * LOSS_LIMIT:g}% and signalling p99 < "
              f"{SIGNALLING_P99_LIMIT_MS:g} ms: {sustained or 'none'} streams", flush=True)
        client.bye(sessions + probe_sessions)
    finally:
        if gateway is not None:
            gateway.terminate()
            gateway.wait(30)


if __name__ == "__main__":
    main()
