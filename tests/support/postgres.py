"""
A throw-away PostgreSQL server for the test session.

C{postgres_dsn} (session) runs C{initdb} into a temporary directory and starts
a real server on a free loopback port, its Unix socket kept in that directory;
the server is stopped and the directory removed when the session ends.
C{fresh_postgres_dsn} gives each test an empty schema of its own on that server.

PostgreSQL refuses to run as root, so under root the server is initialised
and run as the C{postgres} system user, which owns the directory.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

SERVER_USER = "postgres"
DATABASE = "mgateway_test"


def server_binaries() -> Path | None:
    """The directory of the newest installed C{initdb} and C{pg_ctl}, if any."""
    debian = sorted(
        (Path(initdb).parent for initdb in glob.glob("/usr/lib/postgresql/*/bin/initdb")),
        key=lambda bin_dir: int(bin_dir.parent.name) if bin_dir.parent.name.isdigit() else 0,
    )
    found = [d for d in debian if (d / "pg_ctl").exists()]
    if found:
        return found[-1]
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl and Path(initdb).parent == Path(pg_ctl).parent:
        return Path(initdb).parent
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One PostgreSQL cluster in C{root}, run as the invoking user or, under root, as postgres."""

    def __init__(self, bin_dir: Path, root: Path, port: int):
        self.bin_dir = bin_dir
        self.root = root
        self.port = port
        self.data = root / "data"
        self.logfile = root / "server.log"
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam(SERVER_USER)
            except KeyError:
                pytest.fail(f"running as root, and no {SERVER_USER!r} user to run PostgreSQL as")
            os.chown(root, account.pw_uid, account.pw_gid)
            self._as_user = ["runuser", "-u", SERVER_USER, "--"]

    def run(self, tool: str, *args: str) -> None:
        command = [*self._as_user, str(self.bin_dir / tool), *args]
        result = subprocess.run(command, cwd=self.root, capture_output=True, text=True)
        if result.returncode != 0:
            log = self.logfile.read_text() if self.logfile.exists() else ""
            pytest.fail(
                f"{' '.join(command)} exited {result.returncode}\n"
                f"{result.stdout}{result.stderr}{log}"
            )

    def start(self) -> None:
        # C locale: the cluster does not depend on the locales this host has.
        self.run(
            "initdb",
            f"--pgdata={self.data}",
            f"--username={SERVER_USER}",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
        )
        # Durability settings are off: the cluster is deleted after the session.
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port}"
            f" -c unix_socket_directories={self.root}"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self.run(
            "pg_ctl",
            "start",
            "--wait",
            f"--pgdata={self.data}",
            f"--log={self.logfile}",
            f"--options={options}",
        )

    def stop(self) -> None:
        self.run("pg_ctl", "stop", "--wait", "--mode=immediate", f"--pgdata={self.data}")

    def dsn(self, dbname: str) -> str:
        return make_conninfo(host="127.0.0.1", port=self.port, user=SERVER_USER, dbname=dbname)


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """The DSN of an empty database on a PostgreSQL server of this session."""
    bin_dir = server_binaries()
    if bin_dir is None:
        pytest.skip(
            "PostgreSQL server binaries (initdb, pg_ctl) are not installed: "
            "no /usr/lib/postgresql/*/bin and none on PATH; install the postgresql package"
        )
    root = Path(tempfile.mkdtemp(prefix="mgateway-postgres-"))
    server = Server(bin_dir, root, free_port())
    try:
        server.start()
        try:
            with psycopg.connect(server.dsn("postgres"), autocommit=True) as connection:
                connection.execute(f"CREATE DATABASE {DATABASE}")
            yield server.dsn(DATABASE)
        finally:
            server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def fresh_postgres_dsn(postgres_dsn: str) -> Iterator[str]:
    """A DSN whose C{search_path} is a new, empty schema, dropped after the test."""
    schema = f"test_{uuid.uuid4().hex}"
    with psycopg.connect(postgres_dsn, autocommit=True) as connection:
        connection.execute(f"CREATE SCHEMA {schema}")
    yield make_conninfo(postgres_dsn, options=f"-c search_path={schema}")
    with psycopg.connect(postgres_dsn, autocommit=True) as connection:
        connection.execute(f"DROP SCHEMA {schema} CASCADE")
