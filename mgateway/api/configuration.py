# -*- test-case-name: tests.test_configuration_api -*-
"""
The Configuration API: custom vocabulary and redaction entities, for every
call and session of the gateway (they are not per app: one gateway serves
one organisation).

    GET/POST    /configuration/v1/custom-vocabularies
    GET/DELETE  /configuration/v1/custom-vocabularies/{customVocabularyId}
    GET         /configuration/v1/redaction-entities
    GET/PATCH   /configuration/v1/redaction-entities/{entityId}

Lists take C{cursor} and C{limit} (1-100, default 20) and answer
C{nextCursor} and C{prevCursor} (null at either end). A cursor is opaque: the
direction and the id it continues from, base64url.
"""

from __future__ import annotations

import base64
import binascii

from klein import Klein
from werkzeug.exceptions import MethodNotAllowed, NotFound

from mgateway.api.responses import generic_error, json_body
from mgateway.api.rest import RestApi, _json, authenticated_app
from mgateway.calls.errors import ApiError
from mgateway.store.configuration import StoredVocabulary
from mgateway.text.redaction import ENTITIES, REQUIRED
from mgateway.text.settings import POLICY_KEYS, TRANSCRIPT_POLICIES, TextSettings
from mgateway.text.vocabulary import CATEGORIES

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
#: Longest phrase or spoken form, as the direct API's updateVocabulary.
MAX_PHRASE_CHARS = 100
MAX_SOUNDS_LIKE = 20


def _cursor(direction: str, item_id: str) -> str:
    return base64.urlsafe_b64encode(f"{direction}:{item_id}".encode()).decode().rstrip("=")


def _parse_cursor(text: str) -> tuple[str, str]:
    try:
        direction, item_id = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode().split(":", 1)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise generic_error(400, "cursor is not one this API gave") from None
    if direction not in ("next", "prev"):
        raise generic_error(400, "cursor is not one this API gave")
    return direction, item_id


def page(request, ids: list[str]) -> tuple[slice, str | None, str | None]:
    """The slice of C{ids} (sorted) the request's C{cursor} and C{limit} ask for, and the two cursors."""
    limit_text = _arg(request, "limit")
    if limit_text is None:
        limit = DEFAULT_LIMIT
    elif limit_text.isdigit() and 1 <= int(limit_text) <= MAX_LIMIT:
        limit = int(limit_text)
    else:
        raise generic_error(400, f"limit must be an integer from 1 to {MAX_LIMIT}")
    cursor = _arg(request, "cursor")
    start = 0
    if cursor:
        direction, item_id = _parse_cursor(cursor)
        if direction == "next":
            start = sum(1 for i in ids if i <= item_id)
        else:
            start = max(0, sum(1 for i in ids if i < item_id) - limit)
    end = min(len(ids), start + limit)
    next_cursor = _cursor("next", ids[end - 1]) if end < len(ids) else None
    prev_cursor = _cursor("prev", ids[start]) if start > 0 and start < len(ids) else None
    return slice(start, end), next_cursor, prev_cursor


def _arg(request, name: str) -> str | None:
    values = request.args.get(name.encode())
    return values[0].decode("utf-8", "replace") if values else None


class ConfigurationApi:
    """
    @param auth: the L{mgateway.config.AuthConfig}: any app's credentials will do.
    @param store: the L{mgateway.interfaces.IConfigurationStore}.
    """

    app = Klein()

    def __init__(self, *, settings: TextSettings, store, auth, max_body_bytes: int):
        self._settings = settings
        self._store = store
        self._auth = auth
        self._max_body = max_body_bytes

    def _authenticate(self, request) -> str:
        return authenticated_app(self._auth, request)

    def _read_json(self, request):
        return _json(request, self._max_body)

    def resource(self):
        return self.app.resource()

    # The REST API's error bodies, for the same spec (401, 404, 405, 400, 500).
    app.handle_errors(ApiError)(RestApi._api_error)
    app.handle_errors(NotFound)(RestApi._not_found)
    app.handle_errors(MethodNotAllowed)(RestApi._not_allowed)
    app.handle_errors(Exception)(RestApi._unexpected)

    # -- custom vocabulary ------------------------------------------------

    @app.route("/custom-vocabularies", methods=["GET"])
    async def list_vocabularies(self, request):
        self._authenticate(request)
        items = await self._store.vocabularies()
        window, next_cursor, prev_cursor = page(request, [v.vocabulary_id for v in items])
        return json_body(request, 200, {
            "customVocabularies": [v.to_json() for v in items[window]],
            "nextCursor": next_cursor, "prevCursor": prev_cursor,
        })

    @app.route("/custom-vocabularies", methods=["POST"])
    async def create_vocabulary(self, request):
        self._authenticate(request)
        body = self._read_json(request)
        if not isinstance(body, dict):
            raise generic_error(400, "the body must be a JSON object with phrase and soundsLike")
        phrase, sounds_like, category = body.get("phrase"), body.get("soundsLike"), body.get("category")
        if not isinstance(phrase, str) or not phrase.strip():
            raise generic_error(400, "phrase is required: a non-empty string")
        if not isinstance(sounds_like, list) or not all(isinstance(s, str) and s.strip() for s in sounds_like):
            raise generic_error(400, "soundsLike is required: an array of non-empty strings")
        if len(sounds_like) > MAX_SOUNDS_LIKE:
            raise generic_error(400, f"soundsLike holds at most {MAX_SOUNDS_LIKE} spoken forms")
        if any(len(text) > MAX_PHRASE_CHARS for text in [phrase, *sounds_like]):
            raise generic_error(400, f"phrase and spoken forms are at most {MAX_PHRASE_CHARS} characters")
        if category is not None and category not in CATEGORIES:
            raise generic_error(400, f"category must be one of {', '.join(CATEGORIES)}")
        vocabulary = StoredVocabulary.new(phrase, sounds_like, category)
        await self._store.add_vocabulary(vocabulary)
        await self._settings.refresh()
        return json_body(request, 200, vocabulary.to_json())

    @app.route("/custom-vocabularies/<vocabulary_id>", methods=["GET"])
    async def get_vocabulary(self, request, vocabulary_id):
        self._authenticate(request)
        found = [v for v in await self._store.vocabularies() if v.vocabulary_id == vocabulary_id]
        if not found:
            raise generic_error(404, f"no custom vocabulary {vocabulary_id}")
        return json_body(request, 200, found[0].to_json())

    @app.route("/custom-vocabularies/<vocabulary_id>", methods=["DELETE"])
    async def delete_vocabulary(self, request, vocabulary_id):
        self._authenticate(request)
        if not await self._store.delete_vocabulary(vocabulary_id):
            raise generic_error(404, f"no custom vocabulary {vocabulary_id}")
        await self._settings.refresh()
        request.setResponseCode(204)
        return b""

    # -- redaction entities ---------------------------------------------------

    def _entity_json(self, entity) -> dict:
        return {"id": entity.id, "description": entity.description,
                "policies": self._settings.policies(entity.id)}

    @app.route("/redaction-entities", methods=["GET"])
    async def list_entities(self, request):
        self._authenticate(request)
        await self._settings.refresh()
        ordered = sorted(ENTITIES, key=lambda e: e.id)
        window, next_cursor, prev_cursor = page(request, [e.id for e in ordered])
        return json_body(request, 200, {
            "redactionEntities": [self._entity_json(e) for e in ordered[window]],
            "nextCursor": next_cursor, "prevCursor": prev_cursor,
        })

    def _entity(self, entity_id: str):
        found = next((e for e in ENTITIES if e.id == entity_id), None)
        if found is None:
            raise generic_error(404, f"no redaction entity {entity_id}")
        return found

    @app.route("/redaction-entities/<entity_id>", methods=["GET"])
    async def get_entity(self, request, entity_id):
        self._authenticate(request)
        entity = self._entity(entity_id)
        await self._settings.refresh()
        return json_body(request, 200, self._entity_json(entity))

    @app.route("/redaction-entities/<entity_id>", methods=["PATCH"])
    async def patch_entity(self, request, entity_id):
        self._authenticate(request)
        entity = self._entity(entity_id)
        body = self._read_json(request)
        if not isinstance(body, dict) or set(body) != {"policies"} or not isinstance(body["policies"], dict):
            raise generic_error(400, "the body must be {\"policies\": {...}} and nothing else")
        changes = body["policies"]
        unknown = sorted(set(changes) - set(POLICY_KEYS))
        if unknown:
            raise generic_error(400, f"unknown policy {unknown[0]}; known: {', '.join(POLICY_KEYS)}")
        if not all(isinstance(v, bool) for v in changes.values()):
            raise generic_error(400, "each policy is true or false")
        if entity.id in REQUIRED and not all(changes.get(k, True) for k in TRANSCRIPT_POLICIES):
            raise generic_error(400, f"{entity.id} is always redacted in transcripts")
        await self._settings.refresh()
        policies = {**self._settings.policies(entity.id), **changes}
        await self._store.set_redaction_policies(entity.id, policies)
        self._settings.stored_policies(entity.id, policies)
        return json_body(request, 200, self._entity_json(entity))
