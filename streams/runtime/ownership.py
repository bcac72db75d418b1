"""Which input partitions, and so which partners, this worker owns.

Why a part of its own: Faust moves partitions between workers under the agent, and what a
worker may export, judge or keep follows from it. From a revocation to the end of the next
recovery the worker vouches for nothing (not ready); a restore still running must be able to
tell that its assignment is gone (the generation); and a recovery may keep only the in-memory
states that outlived the revocation (the survivors). A partner's partition is asked for every
event, so it is remembered, within the partner cap.
"""

from __future__ import annotations

from faust.types import TP

from streams.engine.core import Engine
from streams.ingest.contract import TOPICS
from streams.ingest.topics import partition_for
from streams.runtime.faust_app import App


class Ownership:
    """The partitions this worker holds, whether its state is whole, and each partner's partition."""

    def __init__(self, app: App, engine: Engine, partitions: int, max_partners: int) -> None:
        self.app = app
        self.engine = engine
        self.partitions = partitions
        self.max_partners = max_partners
        self.ready = False
        """True from the end of a recovery to the next revocation: the owned state is whole."""
        self.owned: set[int] = set()
        """The input partitions the last completed recovery rebuilt."""
        self.generation = 0
        """Bumped by each revocation, so that a restore in progress can tell it is stale."""
        self.survivors: set[str] = set()
        """Partners still held when the last revocation finished: the only in-memory states a
        recovery may keep (anything created since came from events outside an assignment)."""
        self.partition_cache: dict[str, int] = {}
        """Partner -> partition, for the partners seen (at most ``max_partners``)."""

    def owned_partitions(self) -> set[int]:
        """Partitions of the input topics this worker holds now."""
        return {tp.partition for tp in self.app.assignor.assigned_actives()
                if tp.topic == TOPICS[0]}

    def owns(self, partner: str) -> bool:
        """True while the partner's partition is assigned to this worker."""
        return self.ready and self.partition_of(partner) in self.owned

    def partition_of(self, partner: str) -> int:
        """The partner's partition (murmur2 of its id), remembered: it is asked per event."""
        cache = self.partition_cache
        part = cache.get(partner)
        if part is None:
            part = partition_for(partner, self.partitions)
            # bounded like the engine's partners: a flood of new ids is computed, not kept
            if len(cache) < self.max_partners:
                cache[partner] = part
        return part

    def revoke(self, revoked: set[TP]) -> None:
        """Partitions revoked: not ready, and the engine keeps only the partners of the rest."""
        self.ready = False  # export nothing until recovery gives us a consistent view
        self.generation += 1  # a restore still running is for an assignment that is gone
        self.app.commit_guard.forget(revoked)
        gone = {tp.partition for tp in revoked if tp.topic == TOPICS[0]}
        self.engine.drop_partners(lambda p: partition_for(p, self.partitions) not in gone)
        self.survivors = set(self.engine.partner_ids())

    def recovered(self, owned: set[int]) -> None:
        """A recovery rebuilt the partners of ``owned``: they are this worker's now."""
        self.owned = owned
        self.ready = True
