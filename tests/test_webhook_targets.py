"""
Several webhook targets and the record of what they missed: the
C{webhook_failures} table on SQLite and PostgreSQL (an additive schema
change), two real HTTPS targets of which one is slow, and the whole gateway
recording a failing target's misses and listing them over REST.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import attrs
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from zope.interface import implementer
from zope.interface.verify import verifyObject

from mgateway.config import WebhookConfig
from mgateway.egress.failures import failure_recorder
from mgateway.egress.targets import make_webhook_router
from mgateway.interfaces import IWebhookFailureLog
from mgateway.store.failure import WebhookFailure
from mgateway.store.schema import MIGRATIONS
from tests.support.audio import chunks, pace, read_pcm
from tests.support.gateway import API_ID, start_gateway
from tests.test_store import backend, database, store  # noqa: F401 (fixtures)
from tests.test_webhook import GUID, event, receiver  # noqa: F401 (fixture)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def failure(conversation="conv-1", at=T0, **fields) -> WebhookFailure:
    values = dict(conversation_id=conversation, stream_id="stream-1", message_id="01HX0",
                  start_ms=400, end_ms=3968,
                  target="default", status=503, error="HTTP 503", reason="", at=at)
    return WebhookFailure(**(values | fields))


def test_stores_provide_the_failure_log_interface(backend):  # noqa: F811
    verifyObject(IWebhookFailureLog, backend.open())


@pytest_twisted.ensureDeferred
async def test_failures_read_back_per_conversation_newest_first_and_are_purged(store):  # noqa: F811
    recorded = [failure(at=T0 + timedelta(seconds=n), start_ms=n * 1000) for n in range(3)]
    other = failure("conv-2", status=None, error="timeout", reason="5.0s", target="twilio")
    for f in recorded + [other]:
        await store.record(f)

    assert await store.webhook_failures("conv-1", 10) == recorded[::-1]
    assert await store.webhook_failures("conv-1", 2) == recorded[:0:-1]
    assert await store.webhook_failures("conv-2", 10) == [other]
    await store.purge(T0 + timedelta(seconds=1))
    assert await store.webhook_failures("conv-1", 10) == recorded[:0:-1]


@pytest_twisted.ensureDeferred
async def test_a_database_of_the_first_schema_gains_the_failure_table_and_keeps_its_messages(
        database):  # noqa: F811
    first = database.open()
    await first.start()
    await first.close()
    # Back to what a gateway of the first schema left: its one table, version 1.
    for table in ("shared_secrets", "cluster_calls", "cluster_nodes", "redaction_policies", "custom_vocabularies",
                  "webhook_failures", "export_claims", "messages", "schema_version"):
        database.execute(f"DROP TABLE {table}")
    database.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for statement in MIGRATIONS[0]:
        database.execute(statement)
    database.execute("INSERT INTO schema_version (version) VALUES (1)")
    database.execute("INSERT INTO messages VALUES ('01HX', 'siprec', 'conv-1', 's', 'customer', "
                     "'c', 'kept', 0, 10, 1, 1)")
    upgraded = database.open()
    await upgraded.start()
    await upgraded.record(failure())

    assert [m.text for m in await upgraded.messages("conv-1", 10)] == ["kept"]
    assert await upgraded.webhook_failures("conv-1", 10) == [failure()]
    await upgraded.close()


def target(url, name, namespaces=(), **options) -> WebhookConfig:
    values = dict(url=url, auth="none", secret_name="X", secret="", secret_in="header",
                  timeout_seconds=10, ca_file=None, concurrency=2, queue_size=64, name=name,
                  namespaces=tuple(namespaces))
    return WebhookConfig(**(values | options))


def in_order(receiver, path):
    """Every utterance of streams a and b arrived at C{path}, each stream's in order."""
    texts = [p.text for p in receiver.received if p.path == path]
    for stream in "ab":
        assert [t for t in texts if t[0] == stream] == [f"{stream} {n}" for n in range(4)], texts


@pytest_twisted.ensureDeferred
async def test_a_slow_target_holds_up_only_itself_and_keeps_each_stream_in_order(receiver, tls_files):
    receiver.answer = lambda received: None if received.path == "/slow" else 200
    failures = []
    first = target(f"{receiver.url}/fast", "default", ca_file=tls_files.ca_cert)
    config = attrs.evolve(first, targets=(target(f"{receiver.url}/slow", "slow",
                                                 ca_file=tls_files.ca_cert),))
    router = make_webhook_router(config, reactor, on_failure=failures.append)
    events = [event(text=f"{stream} {n}", stream_id=stream) for n in range(4) for stream in "ab"]
    for e in events:
        router.deliver(e)
    fast, slow = (route.sink for route in router.routes)

    assert await fast.drain(20)
    in_order(receiver, "/fast")
    # Two streams, two POSTs in flight on two connections: either may arrive first.
    assert sorted(p.text for p in receiver.received if p.path == "/slow") == ["a 0", "b 0"], \
        "one in flight per stream on the slow target"
    assert slow.stats.queued == 6

    receiver.release()
    assert await router.drain(20)
    in_order(receiver, "/slow")
    assert failures == []
    await router.close()


@pytest_twisted.ensureDeferred
async def test_targets_take_only_their_namespaces(receiver, tls_files):
    config = attrs.evolve(
        target(f"{receiver.url}/siprec", "default", ["siprec"], ca_file=tls_files.ca_cert),
        targets=(target(f"{receiver.url}/twilio", "twilio", ["twilio"], ca_file=tls_files.ca_cert),
                 target(f"{receiver.url}/all", "all", ca_file=tls_files.ca_cert)))
    router = make_webhook_router(config, reactor, on_failure=pytest.fail)
    siprec = event(text="from siprec")
    router.deliver(siprec)
    router.deliver(attrs.evolve(siprec, namespace="twilio", utterance=attrs.evolve(
        siprec.utterance, text="from twilio")))
    assert await router.drain(20)
    assert sorted((p.path, p.text) for p in receiver.received) == [
        ("/all", "from siprec"), ("/all", "from twilio"), ("/siprec", "from siprec"),
        ("/twilio", "from twilio")]
    await router.close()


def targets_config(receiver, tls_files, *targets) -> str:
    """[webhook], then [[webhook.targets]]: each (name, path, more TOML), trusting the test CA."""
    tables = []
    for n, (name, path, more) in enumerate(targets):
        header = "[webhook]" if n == 0 else f'[[webhook.targets]]\nname = "{name}"'
        tables.append(f'{header}\nurl = "{receiver.url}{path}"\nca_file = "{tls_files.ca_cert}"\n'
                      f"{more}\n")
    return "\n".join(tables)


@pytest_twisted.ensureDeferred
async def test_the_gateway_records_what_a_failing_target_missed_and_lists_it(receiver, tls_files,
                                                                           tmp_path):
    receiver.answer = lambda received: 503 if received.path == "/failing" else 200
    running = await start_gateway(reactor, tmp_path, targets_config(
        receiver, tls_files, ("default", "/healthy", 'namespaces = ["siprec"]'),
        ("failing", "/failing", "")))
    try:
        running.service.registry.publish(event(text="missed by one target"))
        assert await running.service.webhook.drain(20)
        response = await running.get("/mg-autotranscribe/v1/webhook-failures", externalId=GUID)
        assert response.code == 200
        [item] = (await response.json())["items"]
        assert {k: item[k] for k in ("externalConversationId", "streamId", "start", "end",
                                     "target", "status", "error")} == {
            "externalConversationId": GUID, "streamId": event().stream_id, "start": 400,
            "end": 3968, "target": "failing", "status": 503, "error": "HTTP 503"}
        stored = await running.service.store.messages(GUID, 10)
        assert [m.text for m in stored] == ["missed by one target"], "the after-call endpoint has it"
        assert item["messageId"] == stored[0].message_id
        assert (await running.get("/mg-autotranscribe/v1/webhook-failures")).code == 400
    finally:
        await running.service.stopService()


@pytest_twisted.ensureDeferred
async def test_targets_take_only_the_calls_of_their_apps(receiver, tls_files):
    config = attrs.evolve(
        target(f"{receiver.url}/a", "default", apps=("app-a",), ca_file=tls_files.ca_cert),
        targets=(target(f"{receiver.url}/b", "b", apps=("app-b",), ca_file=tls_files.ca_cert),))
    router = make_webhook_router(config, reactor, on_failure=pytest.fail)
    for app in ("app-a", "app-b", None):
        router.deliver(attrs.evolve(event(text=f"of {app}"), app=app))
    assert await router.drain(20)
    assert sorted((p.path, p.text) for p in receiver.received) == [("/a", "of app-a"),
                                                                   ("/b", "of app-b")]
    await router.close()


@pytest_twisted.ensureDeferred
async def test_a_call_started_by_an_app_is_posted_to_that_apps_target_only(receiver, tls_files,
                                                                          tmp_path):
    running = await start_gateway(reactor, tmp_path, targets_config(
        receiver, tls_files, ("default", "/test-app", f'apps = ["{API_ID}"]'),
        ("other-app", "/other-app", 'apps = ["other-app"]'),
    ) + '[[auth.apps]]\napi_id = "other-app"\napi_secret = "other-secret"\n')
    try:
        guid = "00002542391662063156"
        media = running.service.registry.attach("siprec", guid, ["0", "1"])
        response = await running.post("/mg-autotranscribe/v1/start-streaming", {
            "namespace": "siprec", "guid": guid, "customerId": "c", "agentId": "a"})
        assert response.code == 200, await response.text()
        await pace(reactor, chunks(read_pcm("single.wav")), lambda chunk: media.audio("0", chunk))
        await media.hang_up()
        await receiver.wait_for(1).addTimeout(30, reactor)
        assert await running.service.webhook.drain(20)
        paths = {post.path for post in receiver.received}
        assert paths == {"/test-app"}, paths
    finally:
        await running.service.stopService()


@implementer(IWebhookFailureLog)
class StallingFailureLog:
    """Each C{record} waits until the test fires it."""

    def __init__(self):
        self.writing = []

    def record(self, failure):
        d = Deferred()
        self.writing.append((failure, d))
        return d

    def webhook_failures(self, conversation_id, limit):
        raise NotImplementedError


def test_a_stalled_failure_log_holds_a_bounded_number_of_records_and_logs_the_rest():
    failure_log, logged = StallingFailureLog(), []
    record = failure_recorder(failure_log, Clock(), queue_size=2)
    globalLogPublisher.addObserver(logged.append)
    try:
        for n in range(6):
            record(failure(f"conv-{n}"))
        failure_log.writing.pop(0)[1].errback(OSError("disk full"))
    finally:
        globalLogPublisher.removeObserver(logged.append)

    mine = [e for e in logged if e.get("log_namespace") == "mgateway.egress.failures"]
    assert [e["guid"] for e in mine] == ["conv-2", "conv-3", "conv-0"], "two dropped, one failed"
    assert mine[-1]["log_failure"].check(OSError)
    assert [f.conversation_id for f, _ in failure_log.writing] == ["conv-1", "conv-4"]
