# -*- test-case-name: tests.test_configuration_api -*-
"""
The gateway-wide text settings the Configuration API changes: custom
vocabulary for every call and session, and the redaction policy of each
entity. Kept in the store (so every node sharing it sees them), read from it
at start-up and every C{refresh_seconds}; a change made through this node's
API applies here at once.
"""

from __future__ import annotations

from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from mgateway.interfaces import IConfigurationStore
from mgateway.text.redaction import ENTITIES, REQUIRED
from mgateway.text.vocabulary import Phrase

log = Logger()

POLICY_KEYS = ("customerImmediate", "customerDelayed", "agentImmediate", "autoTranscribe", "voice")
#: The policies that decide whether transcripts of this gateway are redacted.
TRANSCRIPT_POLICIES = ("autoTranscribe", "voice")


class TextSettings(TimerService):
    """
    @param configured: the entities the config file switches on (defaults included).
    """

    def __init__(self, store: IConfigurationStore, clock: IReactorTime,
                 configured: frozenset[str], refresh_seconds: float):
        super().__init__(refresh_seconds, self.refresh)
        self.clock = clock
        self._store = store
        self._configured = configured
        self._phrases: tuple[Phrase, ...] = ()
        self._stored_policies: dict[str, dict] = {}

    # -- what the text stage reads, at every utterance -----------------------

    def vocabulary(self) -> tuple[Phrase, ...]:
        return self._phrases

    def entities(self) -> frozenset[str]:
        on = {
            e.id for e in ENTITIES
            if any(self.policies(e.id)[key] for key in TRANSCRIPT_POLICIES)
        }
        return frozenset(on | REQUIRED)

    def policies(self, entity_id: str) -> dict:
        """An entity's policies: as set through the API, else from the config file."""
        on = entity_id in self._configured
        defaults = {key: on for key in TRANSCRIPT_POLICIES}
        defaults.update({key: True for key in POLICY_KEYS if key not in TRANSCRIPT_POLICIES})
        return {**defaults, **self._stored_policies.get(entity_id, {})}

    # -- changes through this node's API -------------------------------------

    def stored_policies(self, entity_id: str, policies: dict) -> None:
        self._stored_policies[entity_id] = dict(policies)

    def refresh(self) -> Deferred:
        """Read the vocabulary and the policies from the store."""
        d = gatherResults([self._store.vocabularies(), self._store.redaction_policies()], consumeErrors=True)

        def loaded(results):
            vocabularies, policies = results
            self._phrases = tuple(Phrase(v.phrase, v.sounds_like, v.category) for v in vocabularies)
            self._stored_policies = policies

        def failed(failure):
            log.failure("reading the custom vocabulary and redaction policies failed", failure)

        return d.addCallbacks(loaded, failed)

