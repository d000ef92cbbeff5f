# -*- test-case-name: tests.test_recordings -*-
"""
Speaker-separated recordings: with C{audioRecordingAllowed: true}, the audio
each participant's recogniser gets is also written as an 8 kHz 16-bit mono
WAV, C{DIRECTORY/CONVERSATION/STREAM_ID.wav} (C{STREAM_ID.N.wav} for the
N-th start of the same stream). Without that consent nothing is written.

Writing happens on a thread of its own, in order, so recognition never waits
for the disk; a failure is logged with the conversation and counted, and the
recording stops there. Files older than the transcripts' retention are
deleted.
"""

from __future__ import annotations

import os
import time
import wave
from pathlib import Path
from urllib.parse import quote

from prometheus_client import Counter
from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

log = Logger()

FAILURES = Counter("asapp_mg_recording_failures", "Recordings that could not be written.")

SAMPLE_RATE = 8000


def file_name(component: str) -> str:
    """A conversation or stream id as one safe path component."""
    quoted = quote(component, safe="")
    return quoted.replace(".", "%2E") if quoted in (".", "..") else quoted


class Recording:
    """One participant's audio of one started period, written by the recorder's thread."""

    def __init__(self, recordings: Recordings, path: Path, conversation_id: str):
        self.path = path
        self._recordings = recordings
        self._conversation_id = conversation_id
        self._wav: wave.Wave_write | None = None
        self._failed = False

    def write(self, pcm: bytes) -> None:
        self._recordings.run(self._append, pcm)

    def close(self) -> Deferred:
        """Fires once everything written so far is on disk and the file is closed."""
        return self._recordings.run_and_wait(self._close)

    # On the recorder's thread:

    def _append(self, pcm: bytes) -> None:
        if self._failed:
            return
        try:
            if self._wav is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._wav = wave.open(str(self.path), "wb")
                self._wav.setnchannels(1)
                self._wav.setsampwidth(2)
                self._wav.setframerate(SAMPLE_RATE)
            self._wav.writeframesraw(pcm)
        except OSError as e:
            self._fail(e)

    def _close(self) -> None:
        if self._wav is not None:
            try:
                self._wav.close()
            except OSError as e:
                self._fail(e)
            self._wav = None

    def _fail(self, error: OSError) -> None:
        self._failed = True
        FAILURES.inc()
        log.error("recording {path} of {conversation} failed: {error}; the rest is not recorded",
                  path=str(self.path), conversation=self._conversation_id, error=str(error))


class Recordings(TimerService):
    """
    @param directory: where recordings go (None: recording is switched off
        in the config, and consent records nothing).
    @param retention_seconds: age after which a recording is deleted.
    """

    def __init__(self, directory: Path | None, reactor, clock: IReactorTime,
                 retention_seconds: float, purge_interval_seconds: float):
        super().__init__(purge_interval_seconds, self._purge_logged)
        self.clock = clock
        self.directory = directory
        self._reactor = reactor
        self._retention = retention_seconds
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name="recordings")

    def open(self, conversation_id: str, stream_id: str) -> Recording | None:
        """A new recording of one stream (None when recording is off)."""
        if self.directory is None:
            log.info("recording of {conversation} allowed but no recordings directory is configured",
                     conversation=conversation_id)
            return None
        folder = self.directory / file_name(conversation_id)
        name, n = file_name(stream_id), 1
        path = folder / f"{name}.wav"
        while path.exists():
            n += 1
            path = folder / f"{name}.{n}.wav"
        log.info("recording stream {stream_id} of {conversation}", stream_id=stream_id,
                 conversation=conversation_id)
        return Recording(self, path, conversation_id)

    def run(self, work, *args) -> None:
        if not self._pool.started:
            self._pool.start()
        self._pool.callInThread(work, *args)

    def run_and_wait(self, work, *args) -> Deferred:
        if not self._pool.started:
            self._pool.start()
        return deferToThreadPool(self._reactor, self._pool, work, *args)

    def purge(self) -> Deferred:
        """Delete recordings older than the retention; fires with how many."""
        return self.run_and_wait(self._purge, time.time() - self._retention)

    def _purge(self, older_than: float) -> int:
        deleted = 0
        if self.directory is None or not self.directory.exists():
            return 0
        for path in self.directory.glob("*/*.wav"):
            try:
                if path.stat().st_mtime < older_than:
                    path.unlink()
                    deleted += 1
            except OSError as e:
                log.warn("could not delete the old recording {path}: {error}", path=str(path), error=str(e))
        for folder in self.directory.iterdir():
            if folder.is_dir() and not any(folder.iterdir()):
                os.rmdir(folder)
        return deleted

    def _purge_logged(self) -> Deferred:
        return self.purge().addCallbacks(
            lambda count: count and log.info("deleted {count} old recordings", count=count),
            lambda failure: log.failure("deleting old recordings failed", failure),
        )

    def stopService(self) -> Deferred:
        return super().stopService().addCallback(lambda _: self.close())

    def close(self) -> Deferred:
        """Every recording begun is written out, then the thread stops."""
        if not self._pool.started:
            return succeed(None)
        return self.run_and_wait(lambda: None).addCallback(lambda _: self._pool.stop())
