# -*- test-case-name: tests.test_configuration_api -*-
"""
The Configuration API's tables (custom vocabulary, redaction policies), in the
same database as the transcripts so that every node sharing it sees them.

L{ConfigurationTables} is mixed into L{mgateway.store.schema.PooledTranscriptStore}:
its statements run on the store's thread pool, in the store's dialect.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import attrs
from ulid import ULID
from zope.interface import implementer

from mgateway.interfaces import IConfigurationStore


@attrs.frozen
class StoredVocabulary:
    vocabulary_id: str
    phrase: str
    sounds_like: tuple[str, ...]
    category: str | None = None

    @classmethod
    def new(cls, phrase: str, sounds_like, category: str | None = None) -> StoredVocabulary:
        return cls(str(ULID.from_datetime(datetime.now(timezone.utc))), phrase, tuple(sounds_like), category)

    def to_json(self) -> dict:
        item = {"id": self.vocabulary_id, "phrase": self.phrase, "soundsLike": list(self.sounds_like)}
        if self.category is not None:
            item["category"] = self.category
        return item


def _micros_now() -> int:
    return int(datetime.now(timezone.utc).timestamp() * 1_000_000)


@implementer(IConfigurationStore)
class ConfigurationTables:
    """Statements on the Configuration API's tables (needs C{_run}, C{_execute}, C{_connection}, C{_dialect})."""

    def vocabularies(self):
        def select():
            cursor = self._connection().cursor()
            cursor.execute(
                "SELECT vocabulary_id, phrase, sounds_like, category FROM custom_vocabularies"
                " ORDER BY vocabulary_id"
            )
            return [StoredVocabulary(r[0], r[1], tuple(json.loads(r[2])), r[3]) for r in cursor.fetchall()]

        return self._run(select)

    def add_vocabulary(self, vocabulary: StoredVocabulary):
        p = self._dialect.param

        def insert():
            self._execute(
                "INSERT INTO custom_vocabularies (vocabulary_id, phrase, sounds_like, category, created_us)"
                f" VALUES ({p}, {p}, {p}, {p}, {p})",
                (vocabulary.vocabulary_id, vocabulary.phrase, json.dumps(list(vocabulary.sounds_like)),
                 vocabulary.category, _micros_now()),
            )

        return self._run(insert)

    def delete_vocabulary(self, vocabulary_id: str):
        p = self._dialect.param
        return self._run(lambda: self._execute(
            f"DELETE FROM custom_vocabularies WHERE vocabulary_id = {p}", (vocabulary_id,)) > 0)

    def redaction_policies(self):
        def select():
            cursor = self._connection().cursor()
            cursor.execute("SELECT entity_id, policies FROM redaction_policies")
            return {r[0]: json.loads(r[1]) for r in cursor.fetchall()}

        return self._run(select)

    def set_redaction_policies(self, entity_id: str, policies: dict):
        p = self._dialect.param

        def upsert():
            params = (entity_id, json.dumps(policies, sort_keys=True), _micros_now())
            self._execute(
                "INSERT INTO redaction_policies (entity_id, policies, updated_us)"
                f" VALUES ({p}, {p}, {p}) ON CONFLICT (entity_id) DO UPDATE"
                " SET policies = excluded.policies, updated_us = excluded.updated_us",
                params,
            )

        return self._run(upsert)
