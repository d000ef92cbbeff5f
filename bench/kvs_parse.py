"""
Amazon Connect receive path on one core: how many seconds of Connect call
(one KVS fragment of two 8 kHz tracks per 1.024 s) the incremental MKV reader
and the contact media router handle per second of CPU, fed in GetMedia-sized
pieces.

    python bench/kvs_parse.py
"""

from __future__ import annotations

import os
import platform
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from mgateway.ingress.kvs.contact import ContactMedia  # noqa: E402
from mgateway.ingress.kvs.mkv import MkvParser  # noqa: E402
from tests.support.connect_mkv import contact_fragments  # noqa: E402

CALL_SECONDS = 300
CHUNK = 16 * 1024  # about what one read of a chunked HTTP body hands over
ROUNDS = 3  # the best of: other processes on the machine only ever slow a round down


def main() -> None:
    pcm = os.urandom(16000 * CALL_SECONDS)
    fragments = contact_fragments("contact", pcm, pcm)
    data = b"".join(f.data for f in fragments)
    audio_seconds = len(fragments) * 1.024
    for label, route in (("MKV reader", False), ("MKV reader + contact media", True)):
        elapsed = []
        for _ in range(ROUNDS):
            parser, media = MkvParser(), ContactMedia("contact")
            started = time.perf_counter()
            for i in range(0, len(data), CHUNK):
                events = parser.feed(data[i : i + CHUNK])
                if route:
                    media.receive(events)
            parser.close()
            elapsed.append(time.perf_counter() - started)
        best = min(elapsed)
        print(f"{label:<28} {len(data) / best / 1e6:7.1f} MB/s = {audio_seconds / best:8,.0f} "
              f"real-time calls (two tracks each)")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")


if __name__ == "__main__":
    main()
