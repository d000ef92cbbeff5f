# -*- test-case-name: tests.test_rtp_poller -*-
"""
RTP counters on /metrics, read from the receivers when scraped.

The receivers count in plain integers (a Prometheus counter per packet would
cost more than the packet); this collector turns them into two families:

- C{asapp_mg_rtp_packets_total{outcome}}: every stream since the gateway
  started, the closed ones included;
- C{asapp_mg_rtp_stream_packets_total{guid, leg, outcome}}: each stream
  attached to a call, for as long as its socket is open, so the label sets
  stay as many as the streams being received.

Outcomes: C{received} (datagrams read from the socket), C{lost} (sequence
numbers given up on, the shed ones included), C{late} (came after their
place was given up on), C{out_of_order} (put back in place), C{shed} (read
but dropped undecoded because media was falling behind).
"""

from __future__ import annotations

from prometheus_client.core import REGISTRY, CounterMetricFamily

OUTCOMES = ("received", "lost", "late", "out_of_order", "shed")


class RtpMetrics:
    """The live receivers, and the counts of those that closed."""

    def __init__(self):
        self._live: set = set()
        self._closed = dict.fromkeys(OUTCOMES, 0)

    def add(self, receiver) -> None:
        self._live.add(receiver)

    def retire(self, receiver) -> None:
        """C{receiver} closed: its counts go into the totals, its labels off /metrics."""
        if receiver in self._live:
            self._live.discard(receiver)
            for outcome, count in receiver.counts().items():
                self._closed[outcome] += count

    def collect(self):
        totals = CounterMetricFamily("asapp_mg_rtp_packets", "RTP packets of every stream, by outcome.",
                                     labels=["outcome"])
        streams = CounterMetricFamily("asapp_mg_rtp_stream_packets",
                                      "RTP packets of each stream being received, by call guid, leg and outcome.",
                                      labels=["guid", "leg", "outcome"])
        summed = dict(self._closed)
        by_stream: dict[tuple[str, str], dict[str, int]] = {}
        for receiver in self._live:
            counts = receiver.counts()
            for outcome, count in counts.items():
                summed[outcome] += count
            if receiver.stream is not None:
                # Two recordings of one leg overlap briefly when an SBC fails over: one series.
                mine = by_stream.setdefault(receiver.stream, dict.fromkeys(OUTCOMES, 0))
                for outcome, count in counts.items():
                    mine[outcome] += count
        for outcome in OUTCOMES:
            totals.add_metric([outcome], summed[outcome])
        for (guid, leg), counts in by_stream.items():
            for outcome in OUTCOMES:
                streams.add_metric([guid, leg, outcome], counts[outcome])
        yield totals
        yield streams


#: The gateway's one set of RTP counters.
RTP_METRICS = RtpMetrics()
REGISTRY.register(RTP_METRICS)
