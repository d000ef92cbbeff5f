# -*- test-case-name: tests.test_drain -*-
"""
C{GET /health}: whether a balancer should send this node new work.

Ready means the models are loaded and the store answers a real query (one
C{SELECT 1}, given L{PING_TIMEOUT} seconds); a draining node is never ready.
The status code says it for balancers that read only that (HAProxy's
C{httpchk}, Kamailio's HTTP checks): 200 when ready, 503 otherwise. The body
keeps its first fields (C{status}, C{calls}, C{modelsLoaded}) and adds
C{ready}, C{draining}, C{storeReachable} and C{capacity}.
"""

from __future__ import annotations

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

log = Logger()

#: Seconds the store gets to answer before the node counts as not ready.
PING_TIMEOUT = 2.0


@attrs.frozen
class HealthReport:
    calls: int
    models_loaded: bool
    store_reachable: bool
    draining: bool
    capacity: object  # L{mgateway.admission.Capacity}

    @property
    def ready(self) -> bool:
        return self.models_loaded and self.store_reachable and not self.draining

    @property
    def status(self) -> str:
        if self.draining:
            return "draining"
        return "ok" if self.ready else "not ready"

    @property
    def code(self) -> int:
        return 200 if self.ready else 503

    def to_json(self) -> dict:
        return {
            "status": self.status,
            "ready": self.ready,
            "draining": self.draining,
            "calls": self.calls,
            "modelsLoaded": self.models_loaded,
            "storeReachable": self.store_reachable,
            "capacity": self.capacity.to_json(),
        }


class Health:
    """
    @param registry: the call registry (its calls, and its engine's models).
    @param store: the L{mgateway.interfaces.ITranscriptStore}.
    @param admission: the L{mgateway.interfaces.IAdmission}.
    """

    def __init__(self, *, registry, store, admission, clock: IReactorTime):
        self._registry = registry
        self._store = store
        self._admission = admission
        self._clock = clock

    async def report(self) -> HealthReport:
        return HealthReport(
            calls=len(self._registry),
            models_loaded=self._registry.engine.loaded,
            store_reachable=await self._store_reachable(),
            draining=self._admission.draining,
            capacity=self._admission.capacity(),
        )

    async def _store_reachable(self) -> bool:
        try:
            await self._store.ping().addTimeout(PING_TIMEOUT, self._clock)
        except Exception as e:
            log.warn("health: the store is not reachable: {error}", error=str(e) or type(e).__name__)
            return False
        return True
