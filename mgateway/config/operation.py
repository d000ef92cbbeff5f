# -*- test-case-name: tests.test_config,tests.test_admission -*-
"""
The sections that say how a node is operated: C{[limits]} (how much it takes
before it refuses new calls) and C{[logging]} (JSON log lines).
"""

from __future__ import annotations

from pathlib import Path

import attrs

from mgateway.config.table import _Table

#: Participant streams per decoding thread when C{limits.max_streams} is 0:
#: the README's benchmark kept up with 3 calls (6 streams) on 2 cores with
#: Vosk alone doing 8.4 real-time streams, so 4 a core leaves headroom for
#: SIP, RTP and the text stages.
STREAMS_PER_THREAD = 4


@attrs.frozen
class LimitsConfig:
    #: Participant streams (call legs, attached or started) the node carries
    #: before it refuses new calls; 0: L{STREAMS_PER_THREAD} per ASR thread.
    max_streams: int = 0
    #: What the Retry-After of a refusal says.
    retry_after_seconds: int = 10

    def streams(self, asr_threads: int) -> int:
        """The streams the node carries, its ASR running on C{asr_threads} threads."""
        return self.max_streams or STREAMS_PER_THREAD * asr_threads


@attrs.frozen
class LoggingConfig:
    #: Where every log event is also written as one JSON object a line; None: nowhere.
    json_file: Path | None = None


def _limits(table: _Table) -> LimitsConfig:
    return LimitsConfig(
        max_streams=table.integer("max_streams", minimum=0),
        retry_after_seconds=table.integer("retry_after_seconds", minimum=1),
    )


def _logging(table: _Table, base_dir: Path) -> LoggingConfig:
    json_file = table.string("json_file")
    return LoggingConfig(json_file=base_dir / json_file if json_file else None)
