"""
The gateway as an operator runs it: C{twistd asapp-mg} in a child process.
"""

import os
import signal
import socket
import sys
from pathlib import Path

import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol

from tests.support.gateway import write_config

TWISTD = str(Path(sys.executable).with_name("twistd"))


class Twistd(ProcessProtocol):
    """Collects a child twistd's output; fires Deferreds on a log line and on exit."""

    def __init__(self):
        self.output = ""
        self.ended = Deferred()
        self._waiting = []

    def outReceived(self, data):
        self.output += data.decode("utf-8", "replace")
        for text, d in list(self._waiting):
            if text in self.output:
                self._waiting.remove((text, d))
                d.callback(self.output)

    errReceived = outReceived

    def wait_for(self, text):
        d = Deferred()
        self._waiting.append((text, d))
        self.outReceived(b"")
        return d

    def processEnded(self, reason):
        for _, d in self._waiting:
            d.errback(AssertionError(f"twistd ended before printing it:\n{self.output}"))
        self._waiting = []
        self.ended.callback(reason.value.exitCode if reason.value.signal is None
                            else f"killed by signal {reason.value.signal}")


def run_twistd(*args, cwd):
    protocol = Twistd()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    reactor.spawnProcess(protocol, TWISTD, [TWISTD, *args], env=env, path=str(cwd))
    return protocol


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
