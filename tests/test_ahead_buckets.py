"""Samples dated ahead of the partner's clock wait in sparse buckets until time reaches them."""

from __future__ import annotations

from typing import Any

import orjson

from streams.config.catalog import load_config
from streams.engine.core import Engine, Outcome
from streams.engine.model import PartnerState
from streams.engine.windows import WindowStore

T0 = 1_788_000_000_000
MINUTE, HOUR, DAY = 60_000, 3_600_000, 86_400_000
HORIZON = 7 * DAY  # survey_coverage: a resolved ticket is decided by an answer or 7 days


def _event(etype: str, event_id: str, ts: int, **fields: Any) -> bytes:
    return orjson.dumps({"event_id": event_id, "type": etype, "partner_id": "acme", "ts": ts,
                         **fields})


def test_a_decision_dated_days_ahead_counts_when_its_time_comes() -> None:
    """Three resolved tickets: X never answered (decided 0 at the end of its horizon, days
    ahead of every event), Y answered within the hour, Z answered after two days (its 0 ahead
    is taken back and it counts 1 at the answer)."""
    catalog, partners = load_config()
    engine = Engine(catalog, partners, clock="event")
    wall = T0 + 30 * DAY

    def feed(topic: str, raw: bytes) -> None:
        assert engine.ingest(topic, raw, wall).outcome == Outcome.ACCEPTED

    x_at, y_at, z_at = T0, T0 + 5 * MINUTE, T0 + 10 * MINUTE
    for name, at in (("X", x_at), ("Y", y_at), ("Z", z_at)):
        feed("tickets", _event("resolved", f"r{name}", at, ticket_id=name))
    st = engine.state["acme"]
    # each decision waits ahead, in a bucket of its own: not in any ring yet
    waiting = {idx * res for ring, res in zip(st.ahead, (MINUTE, HOUR), strict=True)
               for idx in ring}
    assert {x_at + HORIZON - (x_at + HORIZON) % MINUTE, z_at + HORIZON - (z_at + HORIZON) % MINUTE
            } <= waiting, "the test needs the decisions ahead"
    assert all(idx * MINUTE <= T0 + HOUR for idx in st.rings[0])

    feed("surveys", _event("response", "aY", y_at + 30 * MINUTE, ticket_id="Y", kind="csat",
                           score=5))
    feed("surveys", _event("response", "aZ", z_at + 2 * DAY, ticket_id="Z", kind="csat",
                           score=5))
    # Z's 0 ahead was taken back: its bucket holds nothing
    z_idx = (z_at + HORIZON) // MINUTE
    assert z_idx not in st.ahead[0] and z_idx not in st.rings[0]

    def coverage(window: str, at: int) -> tuple[int, float] | None:
        value = engine.evaluate("acme", at).get(("survey_coverage", window))
        return None if value is None else (value.samples, value.value)

    # before X's horizon ends only the answers count: Y and Z, both covered (a window reads
    # its current bucket whole: "before" is the bucket before X's decision's)
    assert coverage("1h", x_at + HORIZON - MINUTE) is None
    assert coverage("30d", x_at + HORIZON - HOUR) == (2, 1.0)
    # X's 0 counts in the minute its horizon ends, and the hour windows from its hour
    assert coverage("1h", x_at + HORIZON + MINUTE) == (1, 0.0)
    assert coverage("30d", x_at + HORIZON + HOUR) == (3, 2 / 3)
    # the spread's sums too: samples 0, 1, 1
    final = engine.evaluate("acme", x_at + HORIZON + HOUR)[("survey_coverage", "30d")]
    assert (final.total, final.squares) == (2.0, 2.0)
    assert not st.ahead[0] and not st.ahead[1]


def test_every_sum_of_a_sample_ahead_reaches_its_bucket() -> None:
    """At the window store: a mean KPI's samples dated ahead (sum and squares not zero, one
    retracted) read as the same samples counted in their bucket."""
    catalog, _ = load_config()
    kpis = catalog.counted
    k = next(i for i, kpi in enumerate(kpis) if kpi.id == "csat")
    store = WindowStore(catalog, kpis, [1] * len(kpis))
    st = store.fill(PartnerState())
    st.last_ms = T0
    at = T0 + 3 * HOUR
    for value, sign in ((4.0, 1), (2.0, 1), (5.0, 1), (5.0, -1)):
        store.add(st, k, at, sign, sign * value, sign * value * value, None, sign)
    assert st.ahead[0] and st.ahead[1] and not any(st.rings), "the test needs them ahead"
    assert store.refresh(st, at - HOUR, [store.index["24h"]]) == [{}]
    (values,) = store.refresh(st, at + HOUR, [store.index["24h"]])
    got = values[("csat", "24h")]
    assert (got.samples, got.total, got.squares, got.value) == (2, 6.0, 20.0, 3.0)
