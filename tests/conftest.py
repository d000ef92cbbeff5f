"""Fixtures shared by the whole suite."""

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred

from tests.support.gateway import start_gateway, webhook_section
from tests.support.tlsfiles import make_tls_files
from tests.support.webhook_receiver import start_https_receiver

pytest_plugins = ["tests.support.postgres"]


def wait(coroutine_or_deferred):
    """Run Twisted code to completion from a (session-scoped) synchronous fixture."""
    return pytest_twisted.blockon(ensureDeferred(coroutine_or_deferred))


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory):
    """A throw-away CA and a server certificate for 127.0.0.1 signed by it."""
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def webhook_target(tls_files):
    resource, port, url = wait(
        start_https_receiver(reactor, tls_files.server_key, tls_files.server_cert)
    )
    yield resource, url
    wait(port.stopListening())


@pytest.fixture
def webhook(webhook_target):
    return webhook_target[0]


@pytest.fixture(scope="session")
def gateway(tmp_path_factory, webhook_target, tls_files):
    """
    One gateway for the end-to-end tests: the packaged Korean model, SQLite,
    and the webhook pointed at a real HTTPS receiver trusted through a custom CA.
    """
    _, url = webhook_target
    running = wait(start_gateway(reactor, tmp_path_factory.mktemp("gateway"), webhook_section(url, tls_files)))
    yield running
    wait(running.service.stopService())
