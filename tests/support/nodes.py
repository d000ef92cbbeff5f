"""
Several gateway nodes sharing one PostgreSQL: real C{twistd -n asapp-mg}
processes, each with its own data directory, HTTP and SIP ports and
C{[cluster] node_id}, all on the suite's PostgreSQL.
"""

from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path

import attrs
from twisted.internet.defer import ensureDeferred, gatherResults

from tests.support.gateway import RunningGateway, write_config
from tests.support.siprec_peer import free_sip_port
from tests.support.twistd import Twistd, run_twistd

#: The secret the test nodes sign carried requests with.
CLUSTER_SECRET = "cluster-secret-for-tests"
#: Short, so that a killed node is dead within a test.
HEARTBEAT_SECONDS = 0.5
DEAD_AFTER_SECONDS = 3


@attrs.define
class Node(RunningGateway):
    """A node's process, its HTTP port (the inherited helpers) and its SIP UDP port."""

    name: str = ""
    sip_port: int = 0
    twistd: Twistd | None = None

    @property
    def sip_target(self) -> str:
        return f"127.0.0.1:{self.sip_port}"

    def kill(self) -> None:
        """SIGKILL: the node dies without a word to the others."""
        os.kill(self.twistd.transport.pid, signal.SIGKILL)

    async def stop(self) -> None:
        if self.twistd.ended.called:
            return
        os.kill(self.twistd.transport.pid, signal.SIGTERM)
        await self.twistd.ended


def _free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _replace(text: str, old: str, new: str) -> str:
    assert old in text, f"the test config no longer holds {old!r}"
    return text.replace(old, new, 1)


def node_config(directory: Path, name: str, dsn: str, http_port: int, sip_port: int, rtp_base: int) -> Path:
    """The test gateway's config (L{write_config}) as node C{name} of the cluster on C{dsn}."""
    path = write_config(directory, f"""
[store]
backend = "postgresql"
dsn = {json.dumps(dsn)}

[cluster]
node_id = "{name}"
internal_url = "http://127.0.0.1:{http_port}"
secret = "{CLUSTER_SECRET}"
heartbeat_seconds = {HEARTBEAT_SECONDS}
dead_after_seconds = {DEAD_AFTER_SECONDS}
""")
    text = path.read_text()
    text = _replace(text, 'listen = ["tcp:0:interface=127.0.0.1"]\npublic_url',
                    f'listen = ["tcp:{http_port}:interface=127.0.0.1"]\npublic_url')
    text = _replace(text, "udp_port = 0", f"udp_port = {sip_port}")
    text = _replace(text, "rtp_port_min = 41000\nrtp_port_max = 43999",
                    f"rtp_port_min = {rtp_base}\nrtp_port_max = {rtp_base + 998}")
    path.write_text(text)
    return path


async def start_node(directory: Path, name: str, dsn: str, rtp_base: int) -> Node:
    """One node, once it listens and its models are loaded."""
    directory.mkdir(parents=True, exist_ok=True)
    http_port, sip_port = _free_tcp_port(), free_sip_port()
    config = node_config(directory, name, dsn, http_port, sip_port, rtp_base)
    twistd = run_twistd("-n", "--pidfile=", "asapp-mg", "--config", str(config), cwd=directory)
    await twistd.wait_for("languages available: ko-KR")
    return Node(service=None, port=http_port, name=name, sip_port=sip_port, twistd=twistd)


async def start_nodes(directory: Path, dsn: str, names=("a", "b")) -> list[Node]:
    """Several nodes of one cluster, started together (they migrate the schema at once)."""
    return await gatherResults([
        ensureDeferred(start_node(directory / name, name, dsn, 44000 + 1000 * i)) for i, name in enumerate(names)
    ])
