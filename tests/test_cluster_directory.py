"""
The call directory (memory fake, SQLite, PostgreSQL alike), the heartbeat
that ends a dead node's calls, the shared signing key and concurrent schema
migration.
"""

from __future__ import annotations

import psycopg
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import fail, gatherResults
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from mgateway.calls.registry import CallRegistry
from mgateway.calls.requests import StartRequest, StopRequest, TranscribeParams
from mgateway.calls.roles import track_roles
from mgateway.cluster.directory import SQLCallDirectory
from mgateway.cluster.membership import Membership
from mgateway.cluster.records import ENDED, CallRecord
from mgateway.cluster.secrets import SIGNING_KEY, shared_secret
from mgateway.interfaces import ICallDirectory
from mgateway.sip.callid import decode_metadata_ucid
from mgateway.store.postgres import PostgresTranscriptStore
from mgateway.store.schema import MIGRATIONS
from mgateway.store.sqlite import SQLiteTranscriptStore
from mgateway.testing import MemoryCallDirectory, ScriptedSpeechEngine
from mgateway.tokens import TWILIO_AUDIENCE, TokenSigner

SECOND_US = 1_000_000


def record(guid="CA1", node="a", seq=1, state="not started", updated_us=0, legs=("inbound",)):
    return CallRecord("twilio", guid, node, f"http://{node}.internal:8080", legs, state,
                      (("agent", "s-agent"), ("customer", "s-customer")), seq, updated_us)


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def directory(request, tmp_path):
    if request.param == "memory":
        yield MemoryCallDirectory()
        return
    if request.param == "sqlite":
        store = SQLiteTranscriptStore(tmp_path / "t.sqlite3", reactor)
    else:
        store = PostgresTranscriptStore(request.getfixturevalue("fresh_postgres_dsn"), reactor, threads=2)
    yield SQLCallDirectory(store)
    pytest_twisted.blockon(store.close())



def test_directories_provide_the_interface(directory):
    verifyObject(ICallDirectory, directory)


@pytest_twisted.ensureDeferred
async def test_a_published_call_reads_back_with_its_owners_heartbeat(directory):
    await directory.heartbeat("a", "http://a.internal:8080", 5 * SECOND_US)
    await directory.publish(record(legs=("inbound", "outbound")))

    found = await directory.owner("twilio", "CA1")

    assert found == CallRecord("twilio", "CA1", "a", "http://a.internal:8080", ("inbound", "outbound"),
                               "not started", (("agent", "s-agent"), ("customer", "s-customer")), 1, 0,
                               heartbeat_us=5 * SECOND_US)
    assert await directory.owner("twilio", "CA2") is None
    assert await directory.owner("siprec", "CA1") is None


@pytest_twisted.ensureDeferred
async def test_an_older_record_of_the_same_node_arriving_late_is_ignored(directory):
    await directory.publish(record(seq=2, state="started"))
    await directory.publish(record(seq=1, state="not started"))

    assert (await directory.owner("twilio", "CA1")).state == "started"


@pytest_twisted.ensureDeferred
async def test_another_node_attaching_the_call_takes_it_over(directory):
    await directory.publish(record(node="a", seq=9, state="started"))
    await directory.publish(record(node="b", seq=1))

    found = await directory.owner("twilio", "CA1")
    assert (found.node_id, found.address, found.state) == ("b", "http://b.internal:8080", "not started")


@pytest_twisted.ensureDeferred
async def test_a_dead_nodes_calls_end_and_only_its_own(directory):
    await directory.heartbeat("a", "http://a", 0)
    await directory.heartbeat("b", "http://b", 0)
    await directory.publish(record("CA-a", node="a", state="started"))
    await directory.publish(record("CA-b", node="b", state="started"))
    await directory.heartbeat("b", "http://b", 40 * SECOND_US)

    # b sweeps at 40 s with 30 s: a's last beat (0 s) is too old.
    assert await directory.end_dead("b", 40 * SECOND_US, 30 * SECOND_US) == 1

    assert (await directory.owner("twilio", "CA-a")).state == ENDED
    assert (await directory.owner("twilio", "CA-b")).state == "started"
    # Already ended: not counted again.
    assert await directory.end_dead("b", 41 * SECOND_US, 30 * SECOND_US) == 0


@pytest_twisted.ensureDeferred
async def test_a_node_never_ends_its_own_calls_in_the_sweep(directory):
    await directory.heartbeat("a", "http://a", 0)
    await directory.publish(record(node="a", state="started"))

    assert await directory.end_dead("a", 100 * SECOND_US, 30 * SECOND_US) == 0
    assert (await directory.owner("twilio", "CA1")).state == "started"


@pytest_twisted.ensureDeferred
async def test_ended_calls_are_forgotten_once_older_than_the_timeout(directory):
    await directory.heartbeat("a", "http://a", 0)
    await directory.publish(record("old", state=ENDED, updated_us=0))
    await directory.publish(record("recent", state=ENDED, updated_us=20 * SECOND_US))

    await directory.end_dead("a", 40 * SECOND_US, 30 * SECOND_US)

    assert await directory.owner("twilio", "old") is None
    assert (await directory.owner("twilio", "recent")).state == ENDED


@pytest_twisted.ensureDeferred
async def test_a_restarted_node_ends_the_calls_of_its_earlier_run(directory):
    await directory.publish(record("CA-a", node="a", state="started"))
    await directory.publish(record("CA-b", node="b", state="started"))

    await directory.end_node("a", 7)

    assert (await directory.owner("twilio", "CA-a")).state == ENDED
    assert (await directory.owner("twilio", "CA-b")).state == "started"


# -- the registry's calls in the directory, and the heartbeat ------------------


def node(directory, clock, node_id="a"):
    membership = Membership(directory, node_id, f"http://{node_id}", clock,
                            heartbeat_seconds=5, dead_after_seconds=30)
    registry = CallRegistry(ScriptedSpeechEngine(), {"twilio": ()}, clock, {"twilio": track_roles},
                            on_change=membership.changed)
    return membership, registry


@pytest_twisted.ensureDeferred
async def test_attach_start_stop_and_hang_up_are_recorded_in_order():
    directory, clock = MemoryCallDirectory(), Clock()
    membership, registry = node(directory, clock)
    await membership.start()

    registry.attach("twilio", "CA1", ["inbound"])
    first = await directory.owner("twilio", "CA1")
    registry.attach("twilio", "CA1", ["outbound"])
    streams = {role: s.stream_id for role, s in registry.find("twilio", "CA1").streams.items()}
    assert (first.node_id, first.address, first.legs, first.state) == ("a", "http://a", ("inbound",), "not started")
    assert dict((await directory.owner("twilio", "CA1")).stream_ids) == streams

    await registry.start(StartRequest("twilio", "CA1", "c", "g", TranscribeParams("en-US")))
    started = await directory.owner("twilio", "CA1")
    assert (started.legs, started.state) == (("inbound", "outbound"), "started")
    await registry.stop(StopRequest("twilio", "CA1"))
    assert (await directory.owner("twilio", "CA1")).state == "stopped"
    for feed in list(registry.find("twilio", "CA1").feeds):
        await feed.hang_up()
    assert (await directory.owner("twilio", "CA1")).state == ENDED



@pytest_twisted.ensureDeferred
async def test_a_node_that_stops_beating_has_its_calls_ended_by_the_others_after_the_timeout():
    directory, clock = MemoryCallDirectory(), Clock()
    a, registry_a = node(directory, clock, "a")
    b, registry_b = node(directory, clock, "b")
    await a.start()
    await b.start()
    registry_a.attach("twilio", "CA-a", ["inbound"])
    registry_b.attach("twilio", "CA-b", ["inbound"])

    a.stop()  # a dies: no more beats
    for _ in range(5):  # 25 s: not yet dead
        clock.advance(5)
    assert (await directory.owner("twilio", "CA-a")).state == "not started"
    found = await directory.owner("twilio", "CA-a")
    assert found.alive(b.now_us(), b.dead_after_us)
    for _ in range(2):  # 35 s
        clock.advance(5)

    found = await directory.owner("twilio", "CA-a")
    assert found.state == ENDED and not found.alive(b.now_us(), b.dead_after_us)
    own = await directory.owner("twilio", "CA-b")
    assert own.state == "not started" and own.alive(b.now_us(), b.dead_after_us)
    b.stop()


@pytest_twisted.ensureDeferred
async def test_a_heartbeat_the_database_refuses_is_logged_and_the_next_one_tries_again():
    class Away(MemoryCallDirectory):
        down = True

        def heartbeat(self, *args):
            if self.down:
                return fail(ConnectionError("database away"))
            return super().heartbeat(*args)

    directory, clock = Away(), Clock()
    membership = Membership(directory, "a", "http://a", clock, 5, 30)
    await membership.start()
    assert directory.nodes == {}
    directory.down = False
    clock.advance(5)
    assert directory.nodes == {"a": ("http://a", 5 * SECOND_US)}
    membership.stop()


# -- shared between the nodes of one PostgreSQL -------------------------------


@pytest_twisted.ensureDeferred
async def test_nodes_starting_together_migrate_the_schema_once(fresh_postgres_dsn):
    stores = [PostgresTranscriptStore(fresh_postgres_dsn, reactor, threads=1) for _ in range(4)]
    try:
        await gatherResults([store.start() for store in stores])
    finally:
        await gatherResults([store.close() for store in stores])
    with psycopg.connect(fresh_postgres_dsn) as connection:
        versions = [row[0] for row in connection.execute("SELECT version FROM schema_version ORDER BY version")]
    assert versions == list(range(1, len(MIGRATIONS) + 1))


@pytest_twisted.ensureDeferred
async def test_a_token_issued_by_one_node_verifies_on_another(fresh_postgres_dsn):
    stores = [PostgresTranscriptStore(fresh_postgres_dsn, reactor, threads=1) for _ in range(2)]
    try:
        keys = await gatherResults([shared_secret(store, SIGNING_KEY) for store in stores])
        again = await shared_secret(stores[0], SIGNING_KEY)
    finally:
        await gatherResults([store.close() for store in stores])
    assert keys[0] == keys[1] == again and len(keys[0]) == 64
    clock = Clock()
    issuer, verifier = (TokenSigner(key, 60, clock) for key in keys)
    assert verifier.verify(issuer.issue(TWILIO_AUDIENCE, "app"), TWILIO_AUDIENCE)["sub"] == "app"


def test_the_registry_holds_a_call_under_each_form_of_its_guid():
    hex_ucid = "00FA080001000237A5B1C2D3"
    decimal = decode_metadata_ucid(hex_ucid)
    registry = CallRegistry(ScriptedSpeechEngine(), {"siprec": ()}, Clock(), {"siprec": track_roles},
                            guid_forms={"siprec": decode_metadata_ucid})
    registry.attach("siprec", decimal, ["0"])

    assert registry.guids("siprec", hex_ucid) == (hex_ucid, decimal)
    assert registry.guids("siprec", decimal) == (decimal,)
    assert registry.holds("siprec", hex_ucid) and registry.holds("siprec", decimal)
    assert not registry.holds("siprec", "12345") and not registry.holds("twilio", decimal)
