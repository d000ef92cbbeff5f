"""
The Configuration API end to end (custom vocabulary, redaction entities) on
the real gateway, its tables in SQLite and PostgreSQL, a change made on one
node seen by another sharing the database, and the schema's version 4 (what
a request allowed beyond the text, the Configuration API's tables).
"""

from __future__ import annotations

import json

import attrs
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

import treq

from mgateway.interfaces import IConfigurationStore
from mgateway.store.configuration import StoredVocabulary
from mgateway.store.schema import COLUMNS, MIGRATIONS, to_row
from mgateway.text.redaction import ENTITY_IDS, default_enabled
from mgateway.text.settings import TextSettings
from tests.support.audio import until
from tests.support.gateway import AUTH
from tests.test_store import backend, database, message, store  # noqa: F401 (fixtures)
from tests.test_text_end_to_end import START, scripted, stream

VOCABULARIES = "/configuration/v1/custom-vocabularies"
ENTITIES = "/configuration/v1/redaction-entities"


async def call(gateway, method: str, path: str, body=None, headers=AUTH, **params):
    data = json.dumps(body).encode() if body is not None else None
    response = await treq.request(method, gateway.base + path, data=data, headers=headers, params=params)
    text = await response.text()
    return response.code, (json.loads(text) if text else None)


@pytest_twisted.ensureDeferred
async def test_custom_vocabulary_create_get_list_delete(gateway):
    created = []
    try:
        for n in range(5):
            code, item = await call(gateway, "POST", VOCABULARIES,
                                    {"phrase": f"Acme{n}", "soundsLike": [f"acme {n}"]})
            assert code == 200, item
            assert item == {"id": item["id"], "phrase": f"Acme{n}", "soundsLike": [f"acme {n}"]}
            created.append(item)
        assert await call(gateway, "GET", f"{VOCABULARIES}/{created[2]['id']}") == (200, created[2])

        # Pages of two, forwards then back.
        pages, cursor = [], None
        while True:
            code, listed = await call(gateway, "GET", VOCABULARIES, limit="2", **({"cursor": cursor} if cursor else {}))
            assert code == 200, listed
            pages.append(listed)
            cursor = listed["nextCursor"]
            if cursor is None:
                break
        assert [i for p in pages for i in p["customVocabularies"]] == created
        assert pages[0]["prevCursor"] is None and len(pages) == 3
        code, back = await call(gateway, "GET", VOCABULARIES, limit="2", cursor=pages[2]["prevCursor"])
        assert back["customVocabularies"] == pages[1]["customVocabularies"]
        code, default = await call(gateway, "GET", VOCABULARIES)
        assert default["customVocabularies"] == created and default["nextCursor"] is None
    finally:
        for item in created:
            assert (await call(gateway, "DELETE", f"{VOCABULARIES}/{item['id']}"))[0] == 204
    assert (await call(gateway, "GET", f"{VOCABULARIES}/{created[0]['id']}"))[0] == 404
    assert (await call(gateway, "DELETE", f"{VOCABULARIES}/{created[0]['id']}"))[0] == 404


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("body", [
    {"phrase": "x"},
    {"soundsLike": ["x"]},
    {"phrase": "", "soundsLike": ["x"]},
    {"phrase": "x", "soundsLike": "x"},
    {"phrase": "x", "soundsLike": [""]},
    {"phrase": "x", "soundsLike": ["x"], "category": "planet"},
    {"phrase": "x" * 101, "soundsLike": ["x"]},
    [],
])
async def test_bad_vocabulary_is_400(gateway, body):
    code, answer = await call(gateway, "POST", VOCABULARIES, body)
    assert (code, answer["error"]["code"]) == (400, "400-01"), answer


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("method, path, params", [
    ("GET", VOCABULARIES, {}), ("GET", VOCABULARIES, {"limit": "0"}), ("GET", VOCABULARIES, {"limit": "101"}),
    ("GET", VOCABULARIES, {"cursor": "not-ours"}), ("GET", ENTITIES, {}), ("GET", f"{ENTITIES}/PIN", {}),
])
async def test_bad_queries_and_missing_credentials(gateway, method, path, params):
    code, answer = await call(gateway, method, path, headers={}, **params)
    assert (code, answer["error"]["code"]) == (401, "401-01")
    if params:
        code, answer = await call(gateway, method, path, **params)
        assert (code, answer["error"]["code"]) == (400, "400-01"), answer


@pytest_twisted.ensureDeferred
async def test_the_gateways_vocabulary_applies_to_every_stream(gateway, monkeypatch):
    code, item = await call(gateway, "POST", VOCABULARIES,
                            {"phrase": "ACME", "soundsLike": ["a c m e"], "category": "company"})
    try:
        scripted(monkeypatch, gateway, ["a c m e is great"])
        (transcript,), _, _ = await stream(gateway, START, "config-vocab-1")
        assert transcript["utterance"][0]["text"] == "ACME is great."
    finally:
        await call(gateway, "DELETE", f"{VOCABULARIES}/{item['id']}")


@pytest_twisted.ensureDeferred
async def test_redaction_entities_list_get_and_patch(gateway, monkeypatch):
    code, listed = await call(gateway, "GET", ENTITIES, limit="100")
    assert code == 200
    entities = {e["id"]: e for e in listed["redactionEntities"]}
    assert set(entities) == set(ENTITY_IDS) and listed["nextCursor"] is None
    assert entities["EMAIL"]["policies"]["voice"] is False
    assert entities["PIN"]["policies"] == {"customerImmediate": True, "customerDelayed": True,
                                           "agentImmediate": True, "autoTranscribe": True, "voice": True}
    assert await call(gateway, "GET", f"{ENTITIES}/PIN") == (200, entities["PIN"])
    assert (await call(gateway, "GET", f"{ENTITIES}/SHOE_SIZE"))[0] == 404

    off = {"policies": {"voice": False, "autoTranscribe": False}}
    try:
        code, patched = await call(gateway, "PATCH", f"{ENTITIES}/PIN", off)
        assert code == 200 and patched["policies"]["voice"] is False, patched
        assert (await call(gateway, "GET", f"{ENTITIES}/PIN"))[1] == patched
        scripted(monkeypatch, gateway, ["my pin is one two three four"])
        (transcript,), _, _ = await stream(gateway, START, "config-pin-1")
        assert transcript["utterance"][0]["text"] == "My pin is 1234."
    finally:
        on = {"policies": {"voice": True, "autoTranscribe": True}}
        assert (await call(gateway, "PATCH", f"{ENTITIES}/PIN", on))[0] == 200


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("entity, body", [
    ("CREDIT_CARD_NUMBER", {"policies": {"voice": False}}),
    ("PIN", {"policies": {"voice": "no"}}),
    ("PIN", {"policies": {"colour": True}}),
    ("PIN", {"policies": {"voice": True}, "id": "PIN"}),
    ("PIN", {"voice": True}),
])
async def test_bad_patches_are_400(gateway, entity, body):
    code, answer = await call(gateway, "PATCH", f"{ENTITIES}/{entity}", body)
    assert (code, answer["error"]["code"]) == (400, "400-01"), answer


# -- the tables ------------------------------------------------------------------

def test_stores_provide_the_configuration_interface(backend):  # noqa: F811
    verifyObject(IConfigurationStore, backend.open())


@pytest_twisted.ensureDeferred
async def test_a_change_on_one_node_is_seen_by_another(backend):  # noqa: F811
    writer, reader = backend.open(), backend.open()
    await writer.start()
    await reader.start()
    try:
        clock = Clock()
        seen = TextSettings(reader, clock, default_enabled(), refresh_seconds=60)
        await seen.refresh()
        vocabulary = StoredVocabulary.new("ACME", ["a c m e"], "company")
        await writer.add_vocabulary(vocabulary)
        await writer.set_redaction_policies("PIN", {"voice": False, "autoTranscribe": False})
        assert "PIN" in seen.entities() and seen.vocabulary() == (), "not read yet"
        seen.startService()
        await until(reactor, lambda: seen.vocabulary() != ())
        assert "PIN" not in seen.entities()
        assert [p.phrase for p in seen.vocabulary()] == ["ACME"]
        assert await reader.vocabularies() == [vocabulary]
        # The next change is read on the next refresh.
        await writer.set_redaction_policies("PIN", {"voice": True})
        assert await reader.redaction_policies() == {"PIN": {"voice": True}}
        clock.advance(60)
        await until(reactor, lambda: "PIN" in seen.entities())
        assert await writer.delete_vocabulary(vocabulary.vocabulary_id)
        assert not await writer.delete_vocabulary(vocabulary.vocabulary_id)
        await seen.stopService()
    finally:
        await writer.close()
        await reader.close()


@pytest_twisted.ensureDeferred
async def test_unknown_paths_and_methods_get_the_spec_error_body(gateway):
    code, answer = await call(gateway, "GET", "/configuration/v1/nothing-here")
    assert (code, answer["error"]["code"]) == (404, "404-01")
    code, answer = await call(gateway, "PUT", VOCABULARIES, {})
    assert (code, answer["error"]["code"]) == (405, "405-01")


@pytest_twisted.ensureDeferred
async def test_unredacted_text_and_tokens_read_back_as_stored(store):  # noqa: F811
    stored = attrs.evolve(message(), text="My pin is ####.", unredacted_text="My pin is 1234.",
                          tokens_json='[{"content": "My", "start": 0, "end": 300}]')
    await store.add(stored)
    (read,) = await store.messages("CONV1", 10)
    assert read == stored
    assert read.to_json()["tokens"] == [{"content": "My", "start": 0, "end": 300}]
    assert read.to_json()["unredactedText"] == "My pin is 1234."


#: The schema version before the one that added the columns and tables above.
BEFORE_TEXT = 3


@pytest_twisted.ensureDeferred
async def test_a_database_of_the_version_before_is_migrated_keeping_its_messages(database):  # noqa: F811
    upgraded = database.open()
    if hasattr(upgraded, "path"):  # SQLite: the file's directory is made by the store
        upgraded.path.parent.mkdir(parents=True, exist_ok=True)
    database.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for statements in MIGRATIONS[:BEFORE_TEXT]:
        for statement in statements:
            database.execute(statement)
    database.execute(f"INSERT INTO schema_version (version) VALUES ({BEFORE_TEXT})")
    old = attrs.evolve(message(), language="en-US")
    kept = COLUMNS.index("unredacted_text")  # the columns of that version
    columns = ", ".join(COLUMNS[:kept])
    values = ", ".join(repr(v) if isinstance(v, str) else str(v) for v in to_row(old)[:kept])
    database.execute(f"INSERT INTO messages ({columns}) VALUES ({values.replace('None', 'NULL')})")
    await upgraded.start()
    try:
        assert await upgraded.messages("CONV1", 10) == [old]
        assert await upgraded.vocabularies() == []
        assert await upgraded.redaction_policies() == {}
    finally:
        await upgraded.close()
