"""
C{asapp-mg stream-file}, as a new user runs it: a child process that streams
a WAV file through the direct API of a running gateway.
"""

import json
import os
import sys
import uuid
import wave
from pathlib import Path

import pytest_twisted
from twisted.internet import reactor

from tests.support.audio import SPEECH
from tests.support.gateway import API_ID, API_SECRET
from tests.support.twistd import Twistd

ASAPP_MG = str(Path(sys.executable).with_name("asapp-mg"))


def stream_file(gateway, *args: str) -> Twistd:
    protocol = Twistd()
    argv = [ASAPP_MG, "stream-file", *args, "--api", gateway.base, "--api-id", API_ID, "--api-secret", API_SECRET]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    reactor.spawnProcess(protocol, ASAPP_MG, argv, env=env)
    return protocol


@pytest_twisted.ensureDeferred
async def test_a_wav_file_is_streamed_and_its_transcripts_printed_and_stored(gateway):
    conversation = f"try-{uuid.uuid4().hex}"
    run = stream_file(gateway, str(SPEECH / "customer.wav"), "--language", "ko-KR", "--external-id", conversation)
    assert await run.ended == 0, run.output
    messages = [json.loads(line) for line in run.output.splitlines() if line.startswith("{")]
    kinds = [m["message"] for m in messages]
    assert kinds[0] == "startResponse" and kinds[-1] == "finalResponse", run.output
    transcripts = [m for m in messages if m["message"] == "transcript"]
    assert len(transcripts) >= 2, run.output
    assert messages[-1]["summary"]["totalAudioBytes"] == 150_000
    response = await gateway.get("/conversation/v1/conversation/messages", externalId=conversation)
    assert len((await response.json())["items"]) == len(transcripts)


@pytest_twisted.ensureDeferred
async def test_a_file_the_direct_api_cannot_take_gets_one_line_saying_how_to_convert_it(gateway, tmp_path):
    wideband = tmp_path / "wideband.wav"
    with wave.open(str(wideband), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes(bytes(3200))
    run = stream_file(gateway, str(wideband))
    assert await run.ended == 1
    (line,) = run.output.strip().splitlines()
    assert "16000 Hz" in line and "sox" in line, line


@pytest_twisted.ensureDeferred
async def test_a_stream_the_gateway_ends_prints_its_final_response_and_fails(gateway):
    run = stream_file(gateway, str(SPEECH / "single.wav"), "--language", "xx-XX")
    assert await run.ended == 1
    (final,) = [json.loads(line) for line in run.output.splitlines() if line.startswith("{")]
    assert (final["message"], final["status"]["code"]) == ("finalResponse", "4050")
    assert "Traceback" not in run.output, run.output
