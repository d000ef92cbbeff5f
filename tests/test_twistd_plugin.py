"""
The gateway as an operator runs it: C{twistd asapp-mg} in a child process.
"""

import os
import signal
import socket

import pytest_twisted
import treq
from twisted.internet import reactor

from tests.support.gateway import write_config
from tests.support.twistd import run_twistd


@pytest_twisted.ensureDeferred
async def test_help_documents_the_config_option(tmp_path):
    twistd = run_twistd("asapp-mg", "--help", cwd=tmp_path)
    assert await twistd.ended == 0
    assert "--config" in twistd.output
    assert "TOML" in twistd.output


@pytest_twisted.ensureDeferred
async def test_bad_config_stops_start_up_with_one_clear_line(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[auth.apps]]\napi_id = "a"\napi_secret = "b"\n[webhook]\ntimeout_seconds = "soon"\n')
    twistd = run_twistd("-n", "--pidfile=", "asapp-mg", "--config", str(bad), cwd=tmp_path)
    assert await twistd.ended != 0
    assert "Traceback" not in twistd.output
    assert str(bad) in twistd.output
    assert "webhook.timeout_seconds" in twistd.output


@pytest_twisted.ensureDeferred
async def test_gateway_starts_serves_and_stops_on_sigterm(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = write_config(tmp_path)
    # The first listener is the HTTP one.
    config.write_text(config.read_text().replace("tcp:0:", f"tcp:{port}:", 1))
    twistd = run_twistd("-n", "--pidfile=", "asapp-mg", "--config", str(config), cwd=tmp_path)
    await twistd.wait_for(f"listening on tcp:{port}")
    response = await treq.get(f"http://127.0.0.1:{port}/health")
    early = await response.json()
    # Answered at once, ready or not: ready once the models are loaded.
    assert (response.code, early["status"]) in ((503, "not ready"), (200, "ok")), early
    assert early["ready"] is early["modelsLoaded"], early
    await twistd.wait_for("languages available: ko-KR")
    response = await treq.get(f"http://127.0.0.1:{port}/health")
    health = await response.json()
    assert response.code == 200, health
    assert (health["status"], health["ready"], health["modelsLoaded"]) == ("ok", True, True), health
    unauthorised = await treq.post(f"http://127.0.0.1:{port}/mg-autotranscribe/v1/start-streaming")
    assert unauthorised.code == 401
    os.kill(twistd.transport.pid, signal.SIGTERM)
    # twistd shuts down cleanly, then re-raises the signal so that its exit
    # status says why it stopped.
    assert await twistd.ended == "killed by signal 15", twistd.output
    assert "Server Shut Down." in twistd.output
    assert "Traceback" not in twistd.output
