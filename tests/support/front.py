"""
Kamailio and HAProxy, from Debian's packages, in front of gateway nodes
started in this process: their configurations are the shipped files of
etc/kamailio and etc/haproxy with this test's addresses put in, and each runs
in the foreground in the test's directory.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol

from mgateway.config import load_config
from mgateway.service import make_service
from tests.support.gateway import RunningGateway, write_config
from tests.support.twistd import Twistd as WatchedProcess

ETC = Path(__file__).resolve().parents[2] / "etc"
KAMAILIO = shutil.which("kamailio") or "/usr/sbin/kamailio"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
#: Every node signs streaming URLs with this key ([auth] token_secret).
SHARED_TOKEN_SECRET = "one-key-for-every-node-in-front-tests"


def render(template: Path, target: Path, replacements: dict[str, str]) -> Path:
    """C{template} with each key replaced by its value, written to C{target}."""
    text = template.read_text()
    for old, new in replacements.items():
        assert old in text, f"{template.name} no longer holds {old!r}"
        text = text.replace(old, new)
    target.write_text(text)
    return target


async def start_node(reactor, directory: Path, sip_address: str, public_url: str = "") -> RunningGateway:
    """
    A gateway node: SIP and RTP on C{sip_address} (its own, as a node behind
    Kamailio advertises in its Contact and SDP), HTTP on a free loopback
    port, streaming URLs signed with L{SHARED_TOKEN_SECRET} and pointing at
    C{public_url}, no spare recognisers.
    """
    path = render(write_config(directory), directory / "node.toml", {
        'udp_interface = "127.0.0.1"': f'udp_interface = "{sip_address}"',
        'rtp_interface = "127.0.0.1"': f'rtp_interface = "{sip_address}"',
        'public_url = ""': f'public_url = "{public_url}"',
        "[[auth.apps]]": f'[auth]\ntoken_secret = "{SHARED_TOKEN_SECRET}"\n\n[[auth.apps]]',
        "warm_recognizers = 2": "warm_recognizers = 0",
    })
    service = make_service(load_config(path), reactor)
    service.startService()
    ports = await service.listening
    return RunningGateway(service, ports[0].getHost().port)


def sip_port(node: RunningGateway) -> int:
    return node.service.siprec.udp.getHost().port


def run(reactor, argv: list[str], cwd: Path) -> WatchedProcess:
    process = WatchedProcess()
    reactor.spawnProcess(process, argv[0], argv, env=dict(os.environ), path=str(cwd))
    return process


def start_kamailio(reactor, directory: Path, address: str, port: int, nodes: list[str]) -> WatchedProcess:
    """
    Kamailio on C{address}:C{port} (UDP and TCP) dispatching to C{nodes}
    (C{host:port} SIP addresses), logging to stderr, in the foreground.
    """
    listing = render(ETC / "kamailio" / "dispatcher.list", directory / "dispatcher.list", {
        "1 sip:10.0.0.11:5070 0\n1 sip:10.0.0.12:5070 0\n": "".join(f"1 sip:{n} 0\n" for n in nodes),
    })
    config = render(ETC / "kamailio" / "kamailio.cfg", directory / "kamailio.cfg", {
        "10.0.0.10:5060": f"{address}:{port}",
        "/etc/kamailio/dispatcher.list": str(listing),
    })
    return run(reactor, [KAMAILIO, "-f", str(config), "-DD", "-E", "-m", "64", "-M", "8"], directory)


def start_haproxy(reactor, directory: Path, port: int, nodes: list[str]) -> tuple[WatchedProcess, Path]:
    """
    HAProxy on 127.0.0.1:C{port} in front of the two C{nodes} (C{host:port}
    HTTP addresses), in the foreground: the process and its stats socket.
    """
    stats = directory / "haproxy.sock"
    config = render(ETC / "haproxy" / "haproxy.cfg", directory / "haproxy.cfg", {
        "bind 10.0.0.10:8080": f"bind 127.0.0.1:{port}",
        "10.0.0.11:8080": nodes[0],
        "10.0.0.12:8080": nodes[1],
        "/run/haproxy/admin.sock": str(stats),
    })
    return run(reactor, [HAPROXY, "-db", "-f", str(config)], directory), stats


class _Answer(Protocol):
    def __init__(self, command: bytes):
        self.command = command
        self.received = b""
        self.done = Deferred()

    def connectionMade(self):
        self.transport.write(self.command + b"\n")

    def dataReceived(self, data):
        self.received += data

    def connectionLost(self, reason):
        self.done.callback(self.received.decode())


async def haproxy_command(reactor, stats: Path, command: str) -> str:
    """One command on HAProxy's stats socket (the runtime API), its answer."""
    answer = _Answer(command.encode())
    await connectProtocol(UNIXClientEndpoint(reactor, str(stats)), answer)
    return await answer.done


async def server_states(reactor, stats: Path, backend: str) -> dict[str, str]:
    """C{{server: status}} of one backend ("UP", "DOWN", ...), from C{show stat}."""
    lines = (await haproxy_command(reactor, stats, "show stat")).lstrip("# ").splitlines()
    fields = lines[0].split(",")
    rows = [dict(zip(fields, line.split(","))) for line in lines[1:] if line]
    return {row["svname"]: row["status"] for row in rows
            if row["pxname"] == backend and row["svname"] not in ("FRONTEND", "BACKEND")}
