"""Open items counted by age stage as tickets open, close and are forgotten, read in between."""

from __future__ import annotations

import random

import orjson

from streams.config.catalog import load_config
from streams.engine.core import OPEN_ITEM_STAGES, Engine, Outcome

T0 = 1_788_000_000_000
MINUTE, DAY = 60_000, 86_400_000


def test_each_read_counts_the_tickets_waiting_at_that_moment() -> None:
    """Down-hard tickets opened (some a day late), contacted or not, a read of the counts by
    stage and of the oldest after every event, and at last a sweep that forgets the oldest:
    each read against the tickets the test knows are waiting."""
    catalog, partners = load_config()
    engine = Engine(catalog, partners, clock="event")
    kpi = next(k for k in catalog.counted if k.id == "ots_down_hard")
    target_ms = round(partners.target("acme", kpi) * 1000)
    rng = random.Random(7)
    waiting: dict[str, int] = {}
    now = T0
    serial = 0

    def feed(etype: str, ticket: str, ts: int, topic: str = "tickets") -> None:
        nonlocal serial
        serial += 1
        raw = orjson.dumps({"event_id": f"e{serial}", "type": etype, "partner_id": "acme",
                            "ticket_id": ticket, "call_id": ticket, "severity": "down_hard",
                            "ts": ts})
        assert engine.ingest(topic, raw, ts + DAY).outcome == Outcome.ACCEPTED

    def check(at: int) -> None:
        counts = engine.open_items("acme", at)
        for stage in OPEN_ITEM_STAGES:
            expected = sum(1 for opened in waiting.values() if at - opened >= stage * target_ms)
            assert counts[("ots_down_hard", stage)] == expected, (stage, at)
        oldest = engine.oldest_open("acme", at).get("ots_down_hard")
        assert oldest == (at - min(waiting.values()) if waiting else None)

    for i in range(300):
        now += rng.randrange(MINUTE, 40 * MINUTE)
        if waiting and rng.random() < 0.4:
            ticket = rng.choice(sorted(waiting))
            feed("contacted", ticket, now)
            del waiting[ticket]
        else:
            opened = now - rng.choice((0, 0, 0, rng.randrange(DAY)))  # some arrive late
            feed("opened", f"T{i}", opened)
            waiting[f"T{i}"] = opened
        check(now)
        check(now + rng.randrange(3 * target_ms))  # later reads, nothing new
    assert len(waiting) > 20, "the test needs tickets waiting"
    # A call two days past the entity retention of the first tickets: it moves the partner's
    # clock, and its hourly sweep forgets the tickets without an event for the retention
    # (90 days); those opened later wait on
    retention = catalog.entity_retention_ms
    at = T0 + 2 * DAY + retention
    feed("queued", "C1", at, topic="calls")
    before = len(waiting)
    waiting = {t: opened for t, opened in waiting.items() if opened >= at - retention}
    assert 0 < len(waiting) < before, "the test needs some tickets forgotten, some not"
    check(at)
    feed("opened", "last", at + MINUTE)
    waiting["last"] = at + MINUTE
    check(at + MINUTE)
    check(at + 3 * target_ms)
