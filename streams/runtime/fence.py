"""Writes only while this worker provably still owns its partitions: a zombie writes nothing.

Why: a worker paused (SIGSTOP, a long GC, a VM freeze) past its session timeout is dropped from
the consumer group and its partitions go to another worker. When it resumes, its agent may
process the batch it held before it learns that: Faust's revocation waits for that batch, and
its commit is refused (the group generation moved on), but its changelog writes are not --
measured: 22 journal records from the resumed worker landed amid the new owner's. Faust's
transactions would fence them, but the embedded broker's transactional producer does not work
with aiokafka (InitProducerId fails), and Faust's exactly-once has open duplicate bugs.

So before a batch is applied, the worker checks that its membership is current: the group
coordinator still knows it (a member id, the generation the events were fetched in), and a
heartbeat succeeded within half the session timeout. Past that it cannot prove it is still a
member, so the batch waits for the next heartbeat's answer: a success releases it, an expulsion
drops it unapplied (its events are not acknowledged; the new owner reads them again).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Sequence
from typing import Any

log = logging.getLogger("partnerpulse")

POLL_S = 0.05
"""How often a held batch looks at the membership again."""


class Membership(enum.Enum):
    OK = "ok"
    HOLD = "hold"
    FENCED = "fenced"


class MembershipFence:
    """Admits a batch only while this consumer's group membership is proven current."""

    def __init__(self, session_timeout_s: float) -> None:
        self.lease_s = session_timeout_s / 2
        """A heartbeat answered this recently proves membership: the coordinator expels a member
        only after a whole session timeout without one."""
        self._coordinator: Any = None
        self._last_ok = float("-inf")
        """Monotonic time the last successful heartbeat was *sent* (the conservative end)."""
        self.held_batches = 0
        self.dropped_batches = 0
        self.dropped_events = 0

    def attach(self, coordinator: Any) -> None:
        """Watch aiokafka's group coordinator; called on every assignment, in the consumer's
        thread (the coordinator exists by then, and a join has just succeeded)."""
        self._last_ok = time.monotonic()
        if self._coordinator is coordinator:
            return
        self._coordinator = coordinator
        inner = coordinator._do_heartbeat  # aiokafka's heartbeat routine looks it up per beat

        async def do_heartbeat() -> bool:
            sent = time.monotonic()
            ok = bool(await inner())  # True on success and on RebalanceInProgress (still a member)
            if ok:
                self._last_ok = sent
            return ok

        coordinator._do_heartbeat = do_heartbeat

    def state(self, generations: set[int]) -> Membership:
        """Whether events fetched in ``generations`` may be applied now."""
        coordinator = self._coordinator
        if coordinator is None:
            return Membership.HOLD
        if coordinator.member_id == "" or generations != {coordinator.generation}:
            return Membership.FENCED  # expelled (aiokafka reset the generation), or stale events
        if time.monotonic() - self._last_ok >= self.lease_s:
            return Membership.HOLD
        return Membership.OK

    def proven(self) -> bool:
        """Whether this worker is provably still a member of its group now (a write made now,
        outside a batch, is not a zombie's)."""
        coordinator = self._coordinator
        return (coordinator is not None and coordinator.member_id != ""
                and time.monotonic() - self._last_ok < self.lease_s)

    async def admit(self, events: Sequence[Any]) -> bool:
        """Wait until the batch may be applied (True), or until it must be dropped (False)."""
        generations = {event.message.generation_id for event in events}
        held_since: float | None = None
        while True:
            state = self.state(generations)
            if state is Membership.OK:
                if held_since is not None:
                    log.warning("batch of %d events released after %.2fs: membership confirmed",
                                len(events), time.monotonic() - held_since)
                return True
            if state is Membership.FENCED:
                self.dropped_batches += 1
                self.dropped_events += len(events)
                log.error("dropped a batch of %d events unapplied: this worker is no longer a "
                          "member of group generation %s (its partitions belong to another "
                          "worker, which reads them again)", len(events), sorted(generations))
                return False
            if held_since is None:
                held_since = time.monotonic()
                self.held_batches += 1
                log.warning("holding a batch of %d events: no heartbeat answered for %.1fs, "
                            "membership unproven", len(events), time.monotonic() - self._last_ok)
            await asyncio.sleep(POLL_S)
