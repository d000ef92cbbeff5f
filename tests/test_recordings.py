"""
Speaker-separated recordings: each participant's WAV is the audio its
recogniser got, only with consent; old ones go with the transcripts'
retention; a failing disk stops only that recording.
"""

from __future__ import annotations

import os
import time
import wave
from pathlib import Path

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.logger import capturedLogs

from mgateway.egress.recordings import Recordings, file_name
from mgateway.media.g711 import ulaw_decode, ulaw_encode
from tests.support.audio import read_pcm, until
from tests.test_text_end_to_end import AUDIO, START, scripted, stream, twilio_call


@pytest_twisted.async_yield_fixture
async def recordings(tmp_path):
    """Recordings in a temporary directory, their thread stopped afterwards."""
    made = Recordings(tmp_path, reactor, Clock(), retention_seconds=3600, purge_interval_seconds=60)
    yield made
    await made.close()


def wav_frames(path: Path) -> bytes:
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 8000)
        return wav.readframes(wav.getnframes())


async def written(gateway) -> Path:
    """The recordings directory, once everything handed to its thread is on disk."""
    recordings = gateway.service.recordings
    await recordings.run_and_wait(lambda: None)
    return recordings.directory


@pytest_twisted.ensureDeferred
async def test_direct_stream_with_consent_is_recorded_as_the_recogniser_heard_it(gateway, monkeypatch):
    language = scripted(monkeypatch, gateway, ["hello there"])
    _, final, _ = await stream(gateway, {**START, "audioRecordingAllowed": True}, "rec-direct-1")
    folder = (await written(gateway)) / "rec-direct-1"
    (path,) = folder.iterdir()
    assert path.name == f"{final['streamId']}.wav"
    assert wav_frames(path) == bytes(language.recognizers[0].heard) == AUDIO


@pytest_twisted.ensureDeferred
async def test_nothing_is_recorded_without_consent(gateway, monkeypatch):
    scripted(monkeypatch, gateway, ["hello there"])
    await stream(gateway, START, "rec-direct-2")
    await stream(gateway, {**START, "audioRecordingAllowed": False}, "rec-direct-2")
    assert not ((await written(gateway)) / "rec-direct-2").exists()


@pytest_twisted.ensureDeferred
async def test_twilio_call_with_consent_has_one_recording_per_participant(gateway, webhook, monkeypatch):
    language = scripted(monkeypatch, gateway, ["hello"], ["hi"])
    agent_audio = read_pcm("agent.wav")[: len(AUDIO)]
    params = {"language": "en-US", "audioRecordingAllowed": True}
    sid, ids = await twilio_call(gateway, params, AUDIO, agent_audio)
    await webhook.posts_of_call(sid, 2, ids, {"customer": "C1", "agent": "A1"})
    # The last utterance can be posted before the call's flush has closed
    # its recordings: wait for the call to be gone.
    await until(reactor, lambda: gateway.service.registry.find("twilio", sid) is None)
    folder = (await written(gateway)) / sid
    recorded = {path.name: wav_frames(path) for path in folder.iterdir()}
    assert set(recorded) == {f"{ids['customer']}.wav", f"{ids['agent']}.wav"}
    heard = sorted(bytes(r.heard) for r in language.recognizers)
    assert sorted(recorded.values()) == heard
    # inbound is the customer: its recording holds the inbound audio (as
    # mu-law carried it), the agent's the outbound.
    assert ulaw_decode(ulaw_encode(AUDIO)) in recorded[f"{ids['customer']}.wav"]
    assert ulaw_decode(ulaw_encode(agent_audio)) in recorded[f"{ids['agent']}.wav"]


@pytest_twisted.ensureDeferred
async def test_old_recordings_are_deleted_with_the_transcripts_retention(recordings):
    old, new = recordings.open("conv-a", "s1"), recordings.open("conv-b", "s2")
    for recording in (old, new):
        recording.write(b"\1\0" * 80)
        await recording.close()
    hours_ago = time.time() - 2 * 3600
    os.utime(old.path, (hours_ago, hours_ago))
    assert await recordings.purge() == 1
    assert not old.path.exists() and not old.path.parent.exists()
    assert wav_frames(new.path) == b"\1\0" * 80


@pytest_twisted.ensureDeferred
async def test_a_second_period_of_a_stream_gets_its_own_file(recordings):
    first = recordings.open("conv", "stream")
    first.write(b"\0\0")
    await first.close()
    second = recordings.open("conv", "stream")
    assert (first.path.name, second.path.name) == ("stream.wav", "stream.2.wav")


@pytest_twisted.ensureDeferred
async def test_a_disk_that_fails_stops_only_that_recording(recordings):
    (recordings.directory / "blocked").write_text("a file where the conversation's folder would go")
    broken, fine = recordings.open("blocked", "s1"), recordings.open("other", "s2")
    with capturedLogs() as logs:
        broken.write(b"\0\0")
        fine.write(b"\2\0")
        await broken.close()
        await fine.close()
    assert any("blocked" in str(e.get("conversation")) for e in logs), logs
    assert wav_frames(fine.path) == b"\2\0"


def test_ids_are_safe_file_names():
    assert file_name("../etc/passwd") == "..%2Fetc%2Fpasswd"
    assert file_name("..") == "%2E%2E"
    assert file_name("00002542391662063156") == "00002542391662063156"


@pytest_twisted.ensureDeferred
async def test_the_service_purges_on_start_and_every_interval(tmp_path):
    clock = Clock()
    recordings = Recordings(tmp_path, reactor, clock, retention_seconds=3600, purge_interval_seconds=60)
    purges = []
    recordings.purge = lambda: purges.append(clock.seconds()) or succeed(0)
    recordings.startService()
    clock.advance(60)
    await recordings.stopService()
    assert purges == [0, 60]


def test_recording_switched_off_in_the_config_records_nothing():
    assert Recordings(None, reactor, Clock(), 3600, 60).open("conv", "s") is None
