"""ASR thread pools for the speech tests: import the fixtures into a test module."""

from __future__ import annotations

import pytest

from mgateway.asr.pool import ASRThreadPool


def _running_pool(size: int):
    service = ASRThreadPool(size)
    service.startService()
    yield service.threadpool
    service.stopService()


@pytest.fixture(scope="module")
def pool():
    """Two threads, as many as the machine has cores."""
    yield from _running_pool(2)


@pytest.fixture(scope="module")
def serial_pool():
    """One thread: jobs, and their results on the reactor, come in submission order."""
    yield from _running_pool(1)
