"""
The gateway's service tree: children start in order, each once the one
before it is ready, and stop in reverse, each once the one after it stopped.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, fail
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactor

from mgateway.config import load_config
from mgateway.lifecycle import InOrder, Listener, Step
from mgateway.service import make_service
from tests.support.gateway import write_config


class Script:
    """Steps whose starts and stops the test fires by hand, in a shared log."""

    def __init__(self):
        self.log = []
        self.pending = {}

    def step(self, name: str) -> Step:
        return Step(name, start=lambda: self._wait(f"start {name}"), stop=lambda: self._wait(f"stop {name}"))

    def _wait(self, what: str) -> Deferred:
        self.log.append(what)
        self.pending[what] = Deferred()
        return self.pending[what]

    def fire(self, what: str) -> None:
        self.pending.pop(what).callback(None)


def tree(script: Script, *names: str) -> InOrder:
    parent = InOrder()
    for name in names:
        script.step(name).setServiceParent(parent)
    return parent


def test_each_child_starts_once_the_one_before_it_is_ready():
    script = Script()
    parent = tree(script, "a", "b", "c")
    parent.startService()
    assert script.log == ["start a"]
    script.fire("start a")
    assert script.log == ["start a", "start b"]
    script.fire("start b")
    script.fire("start c")
    assert parent.ready.called


def test_each_child_stops_once_the_one_after_it_stopped():
    script = Script()
    parent = tree(script, "a", "b", "c")
    parent.startService()
    for name in "abc":
        script.fire(f"start {name}")
    script.log.clear()
    stopped = parent.stopService()
    assert script.log == ["stop c"]
    script.fire("stop c")
    assert script.log == ["stop c", "stop b"]
    script.fire("stop b")
    assert not stopped.called
    script.fire("stop a")
    assert stopped.called


def test_a_child_that_cannot_start_fails_ready_and_the_later_ones_never_start():
    parent = InOrder()
    Step("broken", start=lambda: fail(OSError("port taken"))).setServiceParent(parent)
    later = Step("later")
    later.setServiceParent(parent)
    parent.startService()
    failures = []
    parent.ready.addErrback(failures.append)
    assert failures[0].check(OSError)
    assert not later.running
    assert parent.stopService().called, "stopping stops only what started"


def test_a_stop_while_starting_starts_nothing_more_and_stops_what_started():
    script = Script()
    parent = tree(script, "a", "b")
    parent.startService()
    stopped = parent.stopService()
    assert script.log == ["start a", "stop a"]
    script.fire("stop a")
    script.fire("start a")
    assert script.log == ["start a", "stop a"], "b never starts"
    assert stopped.called


def test_privileged_start_opens_nothing_ahead_of_the_order():
    reactor = MemoryReactor()
    parent = InOrder()
    Listener("tcp:8080", TCP4ServerEndpoint(reactor, 8080), Factory()).setServiceParent(parent)
    parent.privilegedStartService()
    assert reactor.tcpServers == []
    parent.startService()
    assert [server[0] for server in reactor.tcpServers] == [8080]


def test_the_gateways_children_are_built_in_start_order_and_building_touches_no_file(tmp_path):
    config = load_config(write_config(tmp_path))
    gateway = make_service(config, MemoryReactor())
    assert [child.name for child in gateway] == [
        "asr threads", "store", "retention", "text settings", "recordings", "store sink", "calls", "exports",
        "token key",
        "tcp:0:interface=127.0.0.1", "siprec", "models",
    ]
    assert not config.gateway.data_dir.exists()
