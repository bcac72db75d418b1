"""The engine against the independent reference, with explicit timestamps and no broker."""

from __future__ import annotations

import dataclasses
import gc
import math
import random
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest
import yaml

from streams.config.catalog import ConfigError, load_catalog, load_config
from streams.engine.core import Engine, Outcome, attainment
from streams.engine.dedup import MERGE_AT
from streams.engine.journal import decode_record as _decode_record
from tests import reference
from tests.harness import drain_into
from tests.streams_gen import DAY, HOUR, _ms, random_events

T0 = 1_788_000_000_000  # 2026-08-29, a fixed instant: no test depends on the real clock
WALL = T0 + 120 * DAY  # a wall clock after every generated event (the future check)
PARTNERS = ["acme", "bluefiber", "cedar-networks"]



def _month_record(key: bytes) -> bool:
    """A month's snapshot ('#month:') or closed month ('#closed:') in the journal, not an event:
    their keys are partner, separator, '#'; an event's is partner, separator, hex."""
    return b"\x1f#" in key

def _engine(clock: str = "event") -> Engine:
    catalog, partners = load_config()
    return Engine(catalog, partners, clock=clock)


def _feed(engine: Engine, events: list[tuple[str, dict]]) -> list[Outcome]:
    return [engine.ingest(t, orjson.dumps(e), WALL).outcome for t, e in events]


def _split(kpi: str) -> tuple[str, str | None]:
    """The engine names a per-channel value 'kpi@channel'."""
    base, _, channel = kpi.partition("@")
    return base, channel or None


def _assert_same(got: dict[Any, Any], expected: dict[Any, reference.KpiResult]) -> int:
    assert set(got) == set(expected), sorted(set(got) ^ set(expected))[:10]
    for key, ref in expected.items():
        value = got[key]
        assert value.samples == ref.samples, key
        tolerance = 0.01 if key[1].endswith("_p90") else 1e-9
        assert math.isclose(value.value, ref.value, rel_tol=tolerance, abs_tol=1e-9), (
            key, value, ref)
    return len(expected)


def _assert_matches(engine: Engine, events: list[tuple[str, dict]], now: int | None) -> int:
    """The engine's values equal the reference's, the per-channel values included."""
    now_ms = now if now is not None else engine.now(WALL)
    got: dict[tuple[str, ...], Any] = {}
    for p in engine.partner_ids():
        for (k, w), v in engine.evaluate(p, now_ms).items():
            base, channel = _split(k)
            got[(p, base, w) if channel is None else (p, base, w, channel)] = v
    expected: dict[tuple[str, ...], reference.KpiResult] = {
        **reference.compute(events, now), **reference.compute_channels(events, now)}
    return _assert_same(got, expected)


@pytest.mark.parametrize("seed", [1, 2])
def test_every_kpi_and_window_matches_reference(seed: int) -> None:
    # 40 days of history, then a dense last two hours so the 1h window has plenty too
    events = random_events(seed, PARTNERS, T0, 40 * DAY)
    events += random_events(seed, PARTNERS, T0 + 40 * DAY, 2 * HOUR, prefix="burst-")
    end = T0 + 40 * DAY + 2 * HOUR  # cut the lifecycles there: the clock stops at the burst
    events = [(t, e) for t, e in events if _ms(e["ts"]) <= end]
    engine = _engine()
    outcomes = _feed(engine, events)
    assert Outcome.DUPLICATE in outcomes
    checked = _assert_matches(engine, events, None)
    # every default KPI is exercised in every window (installs take days, so the order
    # KPIs may miss the 1h window) for at least one partner
    kpis_windows = {(k, w) for (_, k, w) in reference.compute(events)}
    assert {(k, w) for k in reference.DEFAULT_KPIS for w in ("24h", "7d", "30d")} <= kpis_windows
    assert len(kpis_windows) >= 16 * 4 - 2
    assert checked >= 3 * 60  # three partners


def test_values_at_later_instants_slide_out_of_windows() -> None:
    events = random_events(4, PARTNERS, T0, 3 * DAY)
    engine = _engine()
    _feed(engine, events)
    end = engine.now(WALL)
    for later in (end + 30 * 60_000, end + 23 * HOUR, end + 6 * DAY, end + 29 * DAY):
        _assert_matches(engine, events, later)
    # a start counted when decided (survey_coverage: 7 days) may be dated up to its horizon after
    # the last event: 31 days after it, its sample is still in the 30d window; 38 days, gone
    _assert_matches(engine, events, end + 31 * DAY)
    later = end + 38 * DAY
    assert all(not engine.evaluate(p, later) for p in engine.partner_ids())


def test_arrival_order_does_not_matter() -> None:
    events = random_events(5, PARTNERS, T0, 10 * DAY)
    shuffled = events[:]
    random.Random(9).shuffle(shuffled)
    a, b = _engine(), _engine()
    _feed(a, events)
    _feed(b, shuffled)
    now = max(a.now(WALL), b.now(WALL))
    for partner in PARTNERS:
        ea, eb = a.evaluate(partner, now), b.evaluate(partner, now)
        assert set(ea) == set(eb)
        for key in ea:
            assert math.isclose(ea[key].value, eb[key].value, rel_tol=1e-9), key
            assert ea[key].samples == eb[key].samples


def test_late_events_are_counted_and_dropped() -> None:
    engine = _engine()
    base = {"partner_id": "acme", "ticket_id": "t1", "severity": "down_hard"}
    fresh = {"event_id": "a", "type": "opened", "ts": T0 + 40 * DAY, **base}
    stale = {"event_id": "b", "type": "opened", "ts": T0, **base, "ticket_id": "t2"}
    assert _feed(engine, [("tickets", fresh), ("tickets", stale)]) == [
        Outcome.ACCEPTED, Outcome.LATE]
    assert engine.counts[("tickets", Outcome.LATE)] == 1
    _assert_matches(engine, [("tickets", fresh), ("tickets", stale)], None)


def test_duplicates_never_change_a_kpi_even_after_restore() -> None:
    events = random_events(6, PARTNERS, T0, 5 * DAY)
    engine = _engine()
    _feed(engine, events)
    journal = {k: v for k, v in engine.drain() if v is not None}
    restored = _engine()
    events_kept = [k for k in journal if not _month_record(k)]
    assert restored.restore(journal.items()) == len(events_kept)
    now = engine.now(WALL)
    assert restored.now(WALL) == now
    for partner in PARTNERS:
        ours, theirs = restored.evaluate(partner, now), engine.evaluate(partner, now)
        assert set(ours) == set(theirs)
        for key, value in ours.items():
            assert value.samples == theirs[key].samples
            assert math.isclose(value.value, theirs[key].value, rel_tol=1e-9), key
    # the whole stream delivered again after the restore is all duplicates
    outcomes = _feed(restored, events)
    assert set(outcomes) == {Outcome.DUPLICATE}
    _assert_matches(restored, events, None)


@pytest.mark.parametrize("resolution", ["1h", "6h"])
def test_journal_deletes_events_past_retention(resolution: str, tmp_path: Path) -> None:
    """An event's record is deleted once it is past the 90-day retention (within the day
    the sweep allows), whatever the resolution of the longest window: ids are kept by hour."""
    config = tmp_path / "config"
    shutil.copytree(Path(__file__).resolve().parent.parent / "config", config)
    kpis = yaml.safe_load((config / "kpis.yaml").read_text())
    kpis["windows"]["30d"]["resolution"] = resolution
    (config / "kpis.yaml").write_text(yaml.safe_dump(kpis, sort_keys=False))
    catalog, partners = load_config(config)
    assert catalog.windows["30d"].resolution_ms == {"1h": HOUR, "6h": 6 * HOUR}[resolution]
    engine = Engine(catalog, partners, clock="event")
    first = {"event_id": "a", "type": "queued", "partner_id": "acme", "call_id": "c", "ts": T0}
    later = {**first, "event_id": "b", "call_id": "d", "ts": T0 + 91 * DAY}
    _feed(engine, [("calls", first)])
    [(key, record)] = [(k, v) for k, v in engine.drain() if not _month_record(k)]
    assert key.startswith(b"acme\x1f") and record is not None
    _feed(engine, [("calls", later)])
    writes = engine.drain()
    # a's record is deleted by the key it was written under; b's record is written
    assert (key, None) in writes
    assert [_decode_record(v)[1].event.event_id for k, v in writes
            if v is not None and not _month_record(k)] == ["b"]


def test_packed_ids_tell_an_id_from_ids_that_contain_it() -> None:
    """Ids held packed (their hashes in a sorted array): an id contained in
    another id of the same hour (``c-1`` in ``c-12``, ``x-c-1``) is not a duplicate, the same id
    is, and when the hour ages out a tombstone goes to the journal for every one of its ids."""
    engine = _engine()
    hour = T0 - T0 % HOUR

    def call(event_id: str, ts: int) -> tuple[str, dict]:
        return ("calls", {"event_id": event_id, "type": "queued", "partner_id": "acme",
                          "call_id": event_id, "ts": ts})

    first = ["c-12", "x-c-1", "c-1x", "c-10"]
    assert _feed(engine, [call(e, hour + i) for i, e in enumerate(first)]) == [Outcome.ACCEPTED] * 4
    # enough later ids to merge the first ones into the packed, sorted arrays
    filler = [f"f{i}" for i in range(MERGE_AT)]
    assert _feed(engine, [call(e, hour + 3 * HOUR) for e in filler]) == [Outcome.ACCEPTED] * MERGE_AT
    assert engine.state["acme"].seen.packed() >= len(first)
    outcomes = _feed(engine, [call("c-1", hour + 10), call("c-12", hour + 11),
                              call("x-c-1", hour + 12), call("c-1", hour + 13)])
    assert outcomes == [Outcome.ACCEPTED, Outcome.DUPLICATE, Outcome.DUPLICATE, Outcome.DUPLICATE]
    # every record written so far, by the event id inside it
    written = {_decode_record(v)[1].event.event_id: k for k, v in engine.drain()
               if v is not None and not _month_record(k)}
    assert set(written) == {*first, *filler, "c-1"}
    _feed(engine, [call("much-later", hour + 91 * DAY)])
    deleted = {k for k, v in engine.drain() if v is None}
    assert {written[e] for e in [*first, "c-1"]} <= deleted


def _assert_months_match(engine: Engine, events: list[tuple[str, dict]], zone: str = "UTC",
                         expected: dict[tuple[str, str, str], reference.KpiResult] | None = None,
                         ) -> int:
    if expected is None:
        expected = {**reference.compute_months(events, zone),
                    **reference.compute_channel_months(events, zone)}
    got: dict[tuple[str, ...], Any] = {}
    for p in engine.partner_ids():
        for m in engine.months_held(p):
            for k, v in engine.evaluate_month(p, m).items():
                base, channel = _split(k)
                got[(p, base, m) if channel is None else (p, base, m, channel)] = v
    return _assert_same(got, expected)


@pytest.mark.parametrize("zone", ["UTC", "Pacific/Auckland"])
def test_calendar_months_match_reference(zone: str) -> None:
    # 40 days from 2026-08-29: three calendar months, the middle one whole
    events = random_events(3, PARTNERS, T0, 40 * DAY)
    catalog, partners = load_config()
    engine = Engine(dataclasses.replace(catalog, report_timezone=zone), partners, clock="event")
    _feed(engine, events)
    checked = _assert_months_match(engine, events, zone)
    months = {m for p in engine.partner_ids() for m in engine.months_held(p)}
    assert months == {"2026-08", "2026-09", "2026-10"}, months
    assert checked > 3 * len(reference.DEFAULT_KPIS)


def test_months_survive_restore_after_their_events_left_the_journal() -> None:
    # 130 days: the events of August and September leave the journal (90 days), their months
    # live on in snapshot records; October's samples also need September events (an order
    # scheduled in September and installed in October). A restore must give every month the
    # same numbers, and a second delivery of the whole stream must change nothing.
    # (in 26-day chunks: the generator re-sends events at random places, and a re-send from far
    # ahead would make the rest of a longer span late)
    events = [e for i in range(5) for e in random_events(
        4 + i, PARTNERS[:3], T0 + i * 26 * DAY, 26 * DAY, n_tickets=30, n_calls=30, n_orders=20,
        n_surveys=20, prefix=f"c{i}-")]
    engine = _engine()
    for topic, event in events:  # a wall clock after the last event: nothing is "future"
        engine.ingest(topic, orjson.dumps(event), T0 + 200 * DAY)
    journal = drain_into(engine)
    oldest = min(msgspec.msgpack.decode(v)[1] for k, v in journal.items() if not _month_record(k))
    assert oldest > datetime(2026, 10, 1, tzinfo=UTC).timestamp() * 1000  # Aug, Sep gone
    snapshots = {k.split(b"#month:")[1].decode() for k in journal if b"#month:" in k}
    assert {"2026-08", "2026-09", "2026-10"} <= snapshots, snapshots
    expected = {**reference.compute_months(events), **reference.compute_channel_months(events)}
    checked = _assert_months_match(engine, events, expected=expected)
    restored = _engine()
    restored.restore(journal.items())
    assert _assert_months_match(restored, events, expected=expected) == checked
    outcomes = [restored.ingest(t, orjson.dumps(e), T0 + 200 * DAY).outcome for t, e in events]
    assert Outcome.ACCEPTED not in outcomes
    assert _assert_months_match(restored, events, expected=expected) == checked


def test_months_past_the_report_horizon_are_forgotten() -> None:
    catalog, partners = load_config()
    engine = Engine(catalog, partners, clock="event")
    base = {"type": "response", "partner_id": "acme", "kind": "csat", "score": 5}
    month_starts = [datetime(2024 + (7 + i) // 12, (7 + i) % 12 + 1, 2, tzinfo=UTC)
                    for i in range(29)]  # 2024-08 .. 2026-12
    _feed(engine, [("surveys", {**base, "event_id": f"e{i}", "ts": int(t.timestamp() * 1000)})
                   for i, t in enumerate(month_starts)])
    # the current month (2026-12) and the 25 before it: a year and the year before, whole
    assert engine.months_held("acme")[0] == "2024-11"
    assert len(engine.months_held("acme")) == 26


def test_rejections_carry_reasons() -> None:
    engine = _engine()
    result = engine.ingest("tickets", b'{"event_id":"x","type":"opened"}', WALL)
    assert result.outcome is Outcome.REJECTED
    assert "partner_id" in result.reason or "required" in result.reason


def test_attainment_direction_and_cap() -> None:
    catalog, _ = load_config()
    asa, csat = catalog.kpi("asa"), catalog.kpi("csat")
    assert attainment(asa, 30.0, 60.0) == pytest.approx(2.0)
    assert attainment(asa, 120.0, 60.0) == pytest.approx(0.5)
    assert attainment(asa, 0.0, 60.0) == 10.0
    assert attainment(csat, 4.62, 4.2) == pytest.approx(1.1)


def test_bad_catalog_names_file_and_line(tmp_path: Path) -> None:
    text = (Path(__file__).parent.parent / "config" / "kpis.yaml").read_text()
    bad = text.replace("    target: 60\n", "    target: sixty\n", 1)
    path = tmp_path / "kpis.yaml"
    path.write_text(bad)
    line = bad.splitlines().index("    target: sixty") + 1
    with pytest.raises(ConfigError, match=rf"kpis.yaml:{line}: .*target"):
        load_catalog(path)
    path.write_text(text.replace("type: contacted", "type: contact", 1))
    with pytest.raises(ConfigError, match=r"kpis.yaml:\d+: .*no event type 'contact'"):
        load_catalog(path)


def test_open_items_age_against_the_ots_target() -> None:
    engine = _engine()
    now = T0 + 10 * HOUR
    target_s = 9000  # ots_down_hard for the default (authorized) tier, from partners.yaml
    ages_s = {"a": 1000, "b": 4600, "c": 7000, "d": 9100, "e": 20000, "f": 8000}
    events = []
    for tid, age in ages_s.items():
        events.append(("tickets", {"event_id": f"o-{tid}", "type": "opened", "partner_id": "acme",
                                   "ticket_id": tid, "severity": "down_hard",
                                   "ts": now - age * 1000}))
    # f got its first contact: no longer open; an opened service_affecting ticket is another KPI
    events.append(("tickets", {"event_id": "c-f", "type": "contacted", "partner_id": "acme",
                               "ticket_id": "f", "ts": now - 100}))
    events.append(("tickets", {"event_id": "o-g", "type": "opened", "partner_id": "acme",
                               "ticket_id": "g", "severity": "service_affecting",
                               "ts": now - 3_000_000}))
    _feed(engine, events)
    items = engine.open_items("acme", now)
    waiting = [age for tid, age in ages_s.items() if tid != "f"]
    for stage in (0.5, 0.75, 1.0):
        assert items[("ots_down_hard", stage)] == sum(1 for a in waiting if a >= stage * target_s)
    assert items[("ots_service_affecting", 0.5)] == 0  # 3000 s < 50% of 7200 s
    assert items[("ots_service_affecting", 0.5)] == sum(1 for a in [3000] if a >= 0.5 * 7200)


def test_open_detractors_age_against_the_follow_up_horizon() -> None:
    """A poor CSAT answer on a ticket waits until a follow_up of that ticket comes after it (one
    before the answer does not count; one after the 24 h horizon still closes it, late); its age
    runs from the earliest poor answer. Events come in a shuffled order, the follow-ups first."""
    engine = _engine()
    now = T0 + 3 * DAY
    horizon_s = 24 * 3600
    # ticket -> (age of its poor answer in s, follow-up offset from the answer in s or None)
    cases = {"a": (3600, None), "b": (13 * 3600, None), "c": (19 * 3600, None),
             "d": (30 * 3600, None), "e": (30 * 3600, 3600), "f": (50 * 3600, 26 * 3600),
             "g": (20 * 3600, -600), "h": (2 * 3600, None)}
    events: list[tuple[str, dict[str, Any]]] = []
    for tid, (age, follow) in cases.items():
        score = 5 if tid == "h" else 2  # h answered well: no detractor
        events.append(("surveys", {"event_id": f"s-{tid}", "type": "response",
                                   "partner_id": "acme", "ticket_id": tid, "kind": "csat",
                                   "score": score, "ts": now - age * 1000}))
        if follow is not None:
            events.insert(0, ("tickets", {"event_id": f"f-{tid}", "type": "follow_up",
                                          "partner_id": "acme", "ticket_id": tid,
                                          "ts": now - (age - follow) * 1000}))
    _feed(engine, events)
    items = engine.open_items("acme", now)
    waiting = [age for tid, (age, follow) in cases.items()
               if tid != "h" and (follow is None or follow <= 0)]
    assert len(waiting) == 5  # a, b, c, d and g (followed up before its answer)
    for stage in (0.5, 0.75, 1.0):
        assert items[("detractor_follow_up", stage)] == sum(
            1 for a in waiting if a >= stage * horizon_s), stage
    # a follow-up for the oldest waiting one closes it
    _feed(engine, [("tickets", {"event_id": "f-d", "type": "follow_up", "partner_id": "acme",
                                "ticket_id": "d", "ts": now - 1000})])
    assert engine.open_items("acme", now)[("detractor_follow_up", 1.0)] == sum(
        1 for a in waiting if a >= horizon_s) - 1


def test_a_fast_partner_does_not_make_a_slow_partners_events_late() -> None:
    # two partitions read at different paces: 'fast' is 40 days ahead of 'slow'
    engine = _engine()
    fast = {"event_id": "f", "type": "queued", "partner_id": "fast", "call_id": "c", "ts": T0 + 40 * DAY}
    slow = {"event_id": "s", "type": "queued", "partner_id": "slow", "call_id": "c", "ts": T0}
    stale = {**slow, "event_id": "s2", "call_id": "d", "ts": T0 - 31 * DAY}
    assert _feed(engine, [("calls", fast), ("calls", slow), ("calls", stale)]) == [
        Outcome.ACCEPTED, Outcome.ACCEPTED, Outcome.LATE]  # only 31 days behind its own partner


def test_a_restamped_redelivery_is_a_duplicate_before_and_after_a_restore() -> None:
    """The same event_id with a ts in another hour is the same event: a duplicate in the live
    engine and in one rebuilt from the journal; the windows equal the reference's, which keeps
    the first delivery of each id."""
    def ticket(event_id: str, ts: int) -> tuple[str, dict]:
        return ("tickets", {"event_id": event_id, "type": "opened", "partner_id": "acme",
                            "ticket_id": event_id, "severity": "down_hard", "ts": ts})

    first = [ticket(f"t{i}", T0 - i * HOUR) for i in range(6)]
    restamped = [ticket(f"t{i}", T0 - i * HOUR + (i + 1) * HOUR // 2) for i in range(6)]
    engine = _engine()
    assert _feed(engine, first) == [Outcome.ACCEPTED] * 6
    assert _feed(engine, restamped) == [Outcome.DUPLICATE] * 6
    _assert_matches(engine, first + restamped, None)
    rebuilt = _engine()
    rebuilt.restore([(k, v) for k, v in engine.drain() if v is not None])
    assert _feed(rebuilt, restamped) == [Outcome.DUPLICATE] * 6
    _assert_matches(rebuilt, first + restamped, None)


def test_a_partner_far_behind_the_worker_keeps_its_ids_while_its_events_are_accepted() -> None:
    """On the event clock lateness is judged by the partner's own newest event, and so is the
    eviction of its ids: another partner 100 days ahead on the same worker must not make an
    id forgotten while a redelivery of it is still accepted."""
    def call(partner: str, event_id: str, ts: int) -> tuple[str, dict]:
        return ("calls", {"event_id": event_id, "type": "queued", "partner_id": partner,
                          "call_id": event_id, "ts": ts})

    engine = _engine("event")
    events = [call("slow", "s1", T0), call("fast", "f1", T0 + 100 * DAY),
              call("slow", "s2", T0 + 2 * HOUR)]  # the slow partner's hourly eviction runs here
    assert _feed(engine, events) == [Outcome.ACCEPTED] * 3
    assert _feed(engine, [call("slow", "s1", T0)]) == [Outcome.DUPLICATE]


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS line")


def test_a_million_new_partner_ids_stay_within_the_partner_cap() -> None:
    """With the open partner list, a flood of distinct partner ids creates state for the first
    ``max_partners`` only: the rest are rejected with a reason naming the cap and counted, and
    memory stays flat however many arrive."""
    catalog, partners = load_config()
    cap, flood = 1_000, 1_000_000
    engine = Engine(catalog, partners, clock="event", journal=False, max_partners=cap)
    template = orjson.dumps({"event_id": "e", "type": "queued", "partner_id": "P", "call_id": "c",
                             "ts": T0}).replace(b'"P"', b'"%s"')
    gc.collect()
    base = _rss_kib()
    reasons: set[str] = set()
    for start in range(0, flood, 100_000):
        for i in range(start, start + 100_000):
            result = engine.ingest("calls", template % f"flood-{i}".encode(), WALL)
            if result.outcome is Outcome.REJECTED and len(reasons) < 2:
                reasons.add(result.reason or "")
        assert len(engine.state) == cap
        # 1,000 partners of one event each: a few MiB. Unbounded, 100,000 more partners a step.
        assert _rss_kib() - base < 64 * 1024, f"RSS grew {(_rss_kib() - base) // 1024} MiB"
    assert engine.counts[("calls", Outcome.ACCEPTED)] == cap
    assert engine.counts[("calls", Outcome.REJECTED)] == flood - cap
    assert all("partner cap reached" in r and "max_partners 1000" in r for r in reasons), reasons
