"""The membership fence's answer outside a batch (the snapshot writer asks it)."""

from __future__ import annotations

import asyncio

from streams.runtime.fence import MembershipFence


class _Coordinator:
    member_id = "m-1"
    generation = 3

    def __init__(self) -> None:
        self.answer = True

    async def _do_heartbeat(self) -> bool:
        return self.answer


def test_membership_is_proven_by_a_join_or_an_answered_heartbeat_within_the_lease() -> None:
    fence = MembershipFence(session_timeout_s=10.0)
    assert not fence.proven()  # never joined
    coordinator = _Coordinator()
    fence.attach(coordinator)  # a join just succeeded
    assert fence.proven()
    fence._last_ok -= 5.0  # half the session without an answered heartbeat: the lease is out
    assert not fence.proven()
    assert asyncio.run(coordinator._do_heartbeat())  # the fence's wrapper: an answer renews it
    assert fence.proven()
    fence._last_ok -= 5.0
    coordinator.answer = False
    assert not asyncio.run(coordinator._do_heartbeat())  # unanswered: still unproven
    assert not fence.proven()
    coordinator.answer = True
    asyncio.run(coordinator._do_heartbeat())
    coordinator.member_id = ""  # expelled: aiokafka resets the member id
    assert not fence.proven()
