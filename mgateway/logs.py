# -*- test-case-name: tests.test_drain -*-
"""
JSON log lines (C{logging.json_file}): every event of the process, one JSON
object a line, as Twisted's L{jsonFileLogObserver} writes them (readable back
with L{twisted.logger.eventsFromJSONLogFile}).

The gateway's log calls already carry their call in named fields (C{guid},
a direct stream's C{stream_id}, a stream's C{name}), but not all of them and
not under one name. Each event that names a call the registry holds gets the
call's identity added under fixed keys, C{callId}, C{namespace},
C{conversationId} and C{streamIds} (role: streamId), so that one call's lines
are found with one filter (C{jq 'select(.callId == "...")'}) whichever part
of the gateway wrote them.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

from twisted.application.service import Service
from twisted.logger import globalLogPublisher, jsonFileLogObserver

#: The event fields that name a call or one of its streams.
_CALL_FIELDS = ("guid", "conversation", "conversation_id")
_STREAM_FIELDS = ("stream_id", "name")


def _identity(call) -> dict:
    return {"callId": call.guid, "namespace": call.namespace, "conversationId": call.conversation_id,
            "streamIds": {role: stream.stream_id for role, stream in call.streams.items()}}


class CallIdentities:
    """
    The identity of the call an event names, among the calls the registry
    holds and the last L{REMEMBERED} it held (a call's last lines, "ended"
    and its flush, come once the registry let it go).
    """

    REMEMBERED = 1000

    def __init__(self, registry):
        self._registry = registry
        self._known: OrderedDict[str, dict] = OrderedDict()

    def of(self, event: dict) -> dict:
        names = {event[f] for f in _CALL_FIELDS + _STREAM_FIELDS if isinstance(event.get(f), str)}
        if not names:
            return {}
        for call in self._registry.calls():
            identity = _identity(call)
            if names & {call.guid, call.conversation_id, *identity["streamIds"].values()}:
                self._remember(identity)
                return identity
        for name in names:
            if name in self._known:
                return self._known[name]
        return {}

    def _remember(self, identity: dict) -> None:
        for name in {identity["callId"], identity["conversationId"], *identity["streamIds"].values()}:
            self._known[name] = identity
            self._known.move_to_end(name)
        while len(self._known) > self.REMEMBERED:
            self._known.popitem(last=False)


class _WithCall:
    """An observer that adds the call's identity to an event before handing it on."""

    def __init__(self, observer, registry):
        self._observer = observer
        self._identities = CallIdentities(registry)

    def __call__(self, event: dict) -> None:
        identity = self._identities.of(event)
        self._observer({**event, **identity} if identity else event)


class JsonLog(Service):
    """
    Writes every log event to C{path} as JSON lines (appended), from its
    start to its stop: the first service of the gateway to start and the last
    to stop, so that the whole run is in it.
    """

    name = "json log"

    def __init__(self, path: Path, registry):
        self.path = Path(path)
        self._registry = registry
        self._file = None
        self._observer = None

    def startService(self):
        super().startService()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")
        self._observer = _WithCall(jsonFileLogObserver(self._file), self._registry)
        globalLogPublisher.addObserver(self._observer)

    def stopService(self):
        super().stopService()
        globalLogPublisher.removeObserver(self._observer)
        self._file.close()
