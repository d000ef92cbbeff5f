"""C{twistd asapp-mg} in a child process, as an operator runs it."""

import os
import sys
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol

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
