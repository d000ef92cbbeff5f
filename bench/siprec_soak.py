"""
P4 soak: SIPREC calls at one load for a long time against a running gateway,
a table every period: the gateway's RSS (the most it reached in the period),
its growth since the warm-up (the first period), the gateway's memory per
stream beyond the recognisers, end of speech to webhook p50/p99 of the
period's utterances, and the machine's load average (the soak shares it).

The load is C{--calls} calls of C{--call-seconds} each, started a second
apart, then the next C{--calls} calls as soon as those are flushed, until
C{--minutes} have passed. Memory beyond the recognisers is the RSS under load
(the most of the period: every call near its end) less the RSS idle before
the load (models loaded) less what the load's recognisers hold, divided by
the streams; what one recogniser holds is measured once here, with the
gateway's recogniser alone (L{VoskRecognizer} and its voice-activity
detector) decoding a call's worth of the same audio (bench/siprec_audio.py).
That sum only holds when every stream's recogniser is new and freed with its
call: with spares (C{asr.warm_recognizers}), the idle RSS already holds
recognisers the load then uses, and spares freed once they have decoded
C{asr.spare_max_audio_seconds} lower the RSS below it, so the column is
printed only for a gateway run with C{bench/siprec-soak-cold.toml} (no spares)::

    python bench/siprec_soak.py --config bench/siprec-gateway.toml --calls 4 --minutes 60 --gateway-pid PID
    python bench/siprec_soak.py --config bench/siprec-soak-cold.toml --calls 4 --minutes 10 --gateway-pid PID
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import vosk
from twisted.internet import defer, task
from twisted.web.server import Site

from mgateway.config import load_config
from siprec_audio import recognizer_rss, rss_bytes, streams_for, tuned_model
from siprec_calls import Webhook, add_gateway_options, latencies_ms, load_level

MB = 1024 * 1024
RSS_SAMPLE_SECONDS = 10


def table_row(period: int, minutes: float, rss: int, warm: int | None, overhead: float | None,
              latencies: list[float]) -> str:
    growth = f"{100 * (rss - warm) / warm:+6.1f}%" if warm else "  warm-up"
    figures = (f"{np.percentile(latencies, 50):7.0f} {np.percentile(latencies, 99):7.0f}" if latencies
               else "      -       -")
    beyond = f"{overhead / MB:10.1f}" if overhead is not None else f"{'-':>10}"
    return (f"{period:6d} {minutes:7.1f} {rss / MB:8.0f} {growth:>8} {beyond} "
            f"{len(latencies):6d} {figures} {os.getloadavg()[0]:6.2f}")


async def soak(reactor, options) -> None:
    config = load_config(options.config)
    options.sip_host, options.sip_port = config.sip.udp_interface, config.sip.udp_port
    auth = {"asapp-api-id": options.api_id or config.auth.apps[0].api_id, "asapp-api-secret": options.api_secret}
    vosk.SetLogLevel(-1)
    model = vosk.Model(str(tuned_model(config)))
    spares = config.asr.warm_recognizers
    recognizer = None
    if not spares:
        pcm = streams_for(1, 999, options.call_seconds, options.pause)[0][0].pcm
        recognizer = recognizer_rss(model, pcm, config.asr.endpoint_silence_ms)
    del model
    idle = rss_bytes(options.gateway_pid)
    streams = 2 * options.calls
    held = (f"one recogniser after {options.call_seconds} s of audio: {recognizer / MB:.0f} MB" if recognizer is not None
            else f"{spares} spare recognisers: no memory beyond the recognisers (see --help)")
    print(f"machine: {os.cpu_count()} cores; {options.calls} calls ({streams} streams) of {options.call_seconds} s "
          f"at a time for {options.minutes} min, pauses: {options.pause}; {held}; "
          f"the gateway idle: {idle / MB:.0f} MB", flush=True)
    print("period  minute  RSS MB   growth  MB/stream  utter.  p50 ms  p99 ms   load", flush=True)
    print("                         since     beyond           end of speech  average", flush=True)
    print("                        warm-up  recognisers        to webhook     1 min", flush=True)

    webhook = Webhook()
    reactor.listenTCP(options.webhook_port, Site(webhook), interface="127.0.0.1")
    rss_samples: list[int] = []
    sampler = task.LoopingCall(lambda: rss_samples.append(rss_bytes(options.gateway_pid)))
    sampler.clock = reactor
    sampler.start(RSS_SAMPLE_SECONDS)
    began = time.monotonic()
    period, warm, latencies, seed, row_at = 1, None, [], 0, 0.0
    while time.monotonic() - began < 60 * options.minutes:
        seed += 1
        audio = streams_for(options.calls, seed, options.call_seconds, options.pause)
        calls, *_ = await load_level(reactor, options, options.calls, options.call_seconds, audio, auth,
                                     options.stagger_ms)
        ended_at = max(max(c.sent_at["customer"]) for c in calls)
        latencies += latencies_ms(calls, webhook, ended_at)
        webhook.arrivals.clear()
        minutes = (time.monotonic() - began) / 60
        # A row once a period has passed since the last (a round may end late: rows follow the wall clock).
        if minutes >= row_at + options.period_minutes or minutes >= options.minutes:
            rss = max(rss_samples)
            overhead = (rss - idle - streams * recognizer) / streams if recognizer is not None else None
            print(table_row(period, minutes, rss, warm, overhead, latencies), flush=True)
            warm = warm or rss
            period, latencies, row_at = period + 1, [], minutes
            rss_samples.clear()
    sampler.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_gateway_options(parser)
    parser.add_argument("--calls", type=int, default=4, help="calls at a time")
    parser.add_argument("--call-seconds", type=int, default=150, help="audio per stream of each call")
    parser.add_argument("--minutes", type=float, default=60, help="how long the soak lasts")
    parser.add_argument("--period-minutes", type=float, default=5, help="a row of the table every this long")
    parser.add_argument("--stagger-ms", type=int, default=1000, help="between the first packets of two calls")
    options = parser.parse_args()
    if not options.gateway_pid:
        parser.error("--gateway-pid is needed: the soak measures the gateway's memory")
    task.react(lambda reactor: defer.ensureDeferred(soak(reactor, options)))


if __name__ == "__main__":
    main()
