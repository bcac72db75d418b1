"""Property-based fuzzing of the ingest path: bad input never raises, never counts, never hides.

Each Hypothesis example is one hostile message, most of them a mutation of a *good* event of
the stream (same partner, same ``event_id``): a rejected mutation must not mark that id as
seen, or the real event arriving later would be dropped as a duplicate. Good events are fed
in between, in arrival order, to two engines (open and closed partner list). At the end
both engines must agree with ``tests.reference`` computed on the good events alone.

How many messages were tried is printed (``pytest -s``) and recorded as a junit property;
``PARTNERPULSE_FUZZ_EXAMPLES`` raises the count for a longer local run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.config.catalog import load_config
from streams.engine.core import Engine, KpiValue, Outcome
from streams.ingest.contract import MAX_MESSAGE_BYTES, ContractError, decode, redact
from tests import reference
from tests.streams_gen import DAY, HOUR, random_events

WALL = 1_790_000_000_000  # 2026-09-21: fixed, so no example depends on the real clock
START = WALL - 20 * DAY  # good history: 20 days up to an hour before WALL (nothing is late)
GOOD_PARTNERS = ["bluefiber", "cedar-networks", "harbor-voice"]  # listed in config/partners.yaml
MARKER = "PPSECRET"  # planted in hostile values; must never survive redact()
EXAMPLES = int(os.environ.get("PARTNERPULSE_FUZZ_EXAMPLES", "3000"))

# A fixed, derandomized profile: the same examples on every run and machine, no example
# database (nothing to carry between CI runs), no deadline on a shared 2-core box.
settings.register_profile(
    "partnerpulse-fuzz", max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much],
)
FUZZ = settings.get_profile("partnerpulse-fuzz")

TYPES = {"tickets": ("opened", "contacted", "escalated", "escalation_reviewed", "resolved", "closed",
                     "reopened", "follow_up"),
         "calls": ("queued", "answered", "abandoned"),
         "orders": ("scheduled", "installed", "cancelled"),
         "surveys": ("response",)}
ENTITY = {"tickets": "ticket_id", "calls": "call_id", "orders": "order_id"}


def _good_stream() -> list[tuple[str, dict[str, Any]]]:
    events = random_events(31, GOOD_PARTNERS, START, 20 * DAY - 2 * HOUR, n_tickets=40,
                           n_calls=50, n_orders=15, n_surveys=25)
    # lifecycles that run past the history end are cut: nothing may be ahead of WALL
    return [(t, e) for t, e in events if reference.to_ms(e["ts"]) <= WALL - HOUR]


GOOD = _good_stream()

# --- hostile messages ----------------------------------------------------------------
Fuzz = tuple[str, bytes, str]  # (topic, raw message, category)
Good = list[tuple[str, dict[str, Any]]]
JSON_NOT_STRING = st.one_of(st.integers(), st.floats(allow_nan=False), st.booleans(), st.none(),
                            st.lists(st.integers(), max_size=3),
                            st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))


def _required(topic: str, event: dict[str, Any]) -> list[str]:
    fields = ["event_id", "partner_id", "ts", "type"]
    if topic in ENTITY:
        fields.append(ENTITY[topic])
    fields += {"opened": ["severity"], "scheduled": ["due_date"],
               "response": ["score", "kind"]}.get(event["type"], [])
    return fields


def _dump(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=True).encode()


@st.composite
def _base(draw: st.DrawFn, good: Good) -> tuple[str, dict[str, Any]]:
    topic, event = draw(st.sampled_from(good))
    return topic, dict(event)


@st.composite
def arbitrary_bytes(draw: st.DrawFn, good: Good, wall: int) -> Fuzz:
    return draw(st.sampled_from(list(TYPES))), draw(st.binary(max_size=600)), "arbitrary_bytes"


@st.composite
def truncated(draw: st.DrawFn, good: Good, wall: int) -> Fuzz:
    topic, event = draw(_base(good))
    raw = _dump(event)
    return topic, raw[:draw(st.integers(0, len(raw) - 1))], "truncated"


@st.composite
def oversized(draw: st.DrawFn, good: Good, wall: int) -> Fuzz:
    topic, event = draw(_base(good))
    # otherwise valid: only the size limit can reject it
    event["padding"] = "x" * (MAX_MESSAGE_BYTES + draw(st.integers(0, 4096)))
    return topic, _dump(event), "oversized"


@st.composite
def wrong_type(draw: st.DrawFn, good: Good, wall: int) -> Fuzz:
    topic, event = draw(_base(good))
    name = draw(st.sampled_from(_required(topic, event)))
    if name == "ts":
        value = draw(st.one_of(st.floats(allow_nan=False), st.booleans(), st.none(),
                               st.lists(st.integers(), max_size=2), st.just({"ms": 1})))
    elif name == "score":
        value = draw(st.one_of(st.text(max_size=8).map(lambda s: MARKER + s), st.booleans(),
                               st.none(), st.lists(st.integers(), max_size=2)))
    else:
        value = draw(JSON_NOT_STRING)
    event[name] = value
    return topic, _dump(event), "wrong_type"


@st.composite
def missing_field(draw: st.DrawFn, good: Good, wall: int) -> Fuzz:
    topic, event = draw(_base(good))
    del event[draw(st.sampled_from(_required(topic, event)))]
    return topic, _dump(event), "missing_field"


HUGE = (2**64, 2**64 + 1, 2**63, -(2**63) - 1, 10**30, -(10**30), 2**200)


@st.composite
def huge_number(draw: st.DrawFn, good: Good, wall: int) -> Fuzz:
    topic, event = draw(_base(good))
    if event["type"] == "response" and draw(st.booleans()):
        lo, hi = (1.0, 5.0) if event["kind"] == "csat" else (0.0, 10.0)
        # out of range for the kind; -0 is a valid XLA score (zero), so only CSAT gets it
        value: Any = draw(st.sampled_from([*HUGE, 1e308, -1e308, hi + 0.5, lo - 0.5]
                                          + ([-0.0] if lo > 0 else [])))
        event["score"] = value
    else:
        event["ts"] = draw(st.sampled_from([*HUGE, 0, -0, -1, 1_790_000_000,
                                            9_999_999_999, 4_102_444_800_000]))
    raw = _dump(event)
    if draw(st.booleans()):  # -0 and 1e308 as written by other encoders
        raw = raw.replace(b'"ts":0', b'"ts":-0').replace(b"1e+308", b"1E308")
    return topic, raw, "huge_number"


@st.composite
def nan_inf(draw: st.DrawFn, good: Good, wall: int) -> Fuzz:
    topic, event = draw(_base(good))
    literal = draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "nan", "inf", "1e999",
                                    "-1e999"]))
    as_string = draw(st.booleans())
    name = "score" if event["type"] == "response" and draw(st.booleans()) else "ts"
    event[name] = "@@"
    raw = _dump(event).replace(b'"@@"', (f'"{literal}"' if as_string else literal).encode())
    return topic, raw, "nan_inf"


@st.composite
def unknown_type(draw: st.DrawFn, good: Good, wall: int) -> Fuzz:
    topic, event = draw(_base(good))
    others = [t for other, types in TYPES.items() if other != topic for t in types
              if t not in TYPES[topic]]
    event["type"] = draw(st.one_of(st.sampled_from(others),
                                   st.text(max_size=12).map(lambda s: MARKER + s),
                                   st.sampled_from(["", "OPENED", " opened", "\x00"])))
    return topic, _dump(event), "unknown_type"


@st.composite
def wrong_topic(draw: st.DrawFn, good: Good, wall: int) -> Fuzz:
    topic, event = draw(_base(good))
    other = draw(st.sampled_from([t for t in TYPES if t != topic]))
    return other, _dump(event), "wrong_topic"


@st.composite
def unknown_partner(draw: st.DrawFn, good: Good, wall: int) -> Fuzz:
    """Valid but for the partner: rejected on a closed list, its own partner on an open one."""
    topic, event = draw(_base(good))
    event["partner_id"] = "fz-" + draw(st.from_regex(r"\A[a-z0-9]{1,8}\Z"))
    return topic, _dump(event), "unknown_partner"


BAD_TS = ["2026-13-01T00:00:00Z", "2026-09-20T09:30:00", "2026-09-20", "2026-09-20T25:00:00Z",
          "2026-09-20T09:30:00+24:00", "yesterday", "", "2026-02-30T00:00:00Z", "0",
          "1969-12-31T23:59:59.999Z", "2100-01-01T00:00:00Z", "9999-12-31T23:59:59-23:59",
          "0001-01-01T00:00:00+01:00", f"{MARKER}T00:00:00Z", "2026-09-20T09:30:00 +02:00"]


@st.composite
def bad_timestamp(draw: st.DrawFn, good: Good, wall: int) -> Fuzz:
    topic, event = draw(_base(good))
    ahead = wall + draw(st.integers(5 * 60_000 + 1, 400 * DAY))  # past the clock-skew allowance
    event["ts"] = draw(st.one_of(st.sampled_from(BAD_TS), st.just(ahead),
                                 st.integers(1, 9_999_999_999),  # epoch seconds
                                 st.text(max_size=30).map(lambda s: MARKER + s)))
    if event["type"] == "scheduled" and draw(st.booleans()):
        event["ts"] = wall - DAY
        event["due_date"] = draw(st.sampled_from(
            ["2026-13-01", "2026-02-30", "2026-09-20T17:00:00", f"{MARKER}-01-01",
             "20260920", "2026-09-20T17:00:00+25:00"]))
    return topic, _dump(event), "bad_timestamp"


@st.composite
def nested_garbage(draw: st.DrawFn, good: Good, wall: int) -> Fuzz:
    topic, event = draw(_base(good))
    depth = draw(st.integers(1, 30))
    garbage: Any = MARKER
    for _ in range(depth):
        garbage = [garbage] if draw(st.booleans()) else {"k": garbage}
    how = draw(st.sampled_from(["field", "top", "deep_extra"]))
    if how == "field":
        event[draw(st.sampled_from(_required(topic, event)))] = garbage
        return topic, _dump(event), "nested_garbage"
    if how == "top":
        return topic, _dump(draw(st.sampled_from([[event], garbage, MARKER, 42, None]))), \
            "nested_garbage"
    # deeper than any parser recursion limit, in a field the contract otherwise ignores
    opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
    # past the interpreter's recursion limit (1000) yet under the 64 KiB size limit
    levels = draw(st.integers(5_000, (MAX_MESSAGE_BYTES - 1024) // (len(opener) + 1)))
    tail = opener * levels + b"1" + closer * levels
    raw = _dump(event)[:-1] + b',"x":' + tail + b"}"
    return topic, raw, "nested_garbage"


@st.composite
def duplicated_key(draw: st.DrawFn, good: Good, wall: int) -> Fuzz:
    """A required key twice, the later value bad: parsers keep the last (as JSON.parse does)."""
    topic, event = draw(_base(good))
    name = draw(st.sampled_from(_required(topic, event)))
    bad = {"ts": '"nope"', "score": '"' + MARKER + '"', "type": '"' + MARKER + '"'}.get(
        name, "12345")
    raw = _dump(event)[:-1] + f',"{name}":{bad}}}'.encode()
    return topic, raw, "duplicated_key"


CONTROL = [chr(c) for c in range(0x20)] + ["\x7f"]


@st.composite
def control_chars(draw: st.DrawFn, good: Good, wall: int) -> Fuzz:
    topic, event = draw(_base(good))
    names = ["event_id", "partner_id"] + ([ENTITY[topic]] if topic in ENTITY else [])
    name = draw(st.sampled_from(names))
    char = draw(st.sampled_from(CONTROL))
    value = str(event[name])
    if draw(st.booleans()):  # a trailing one: "$" in a regex lets a final "\n" through
        event[name] = value + char
    else:
        at = draw(st.integers(0, len(value)))
        event[name] = value[:at] + char + MARKER + value[at:]
    return topic, _dump(event), "control_chars"


@st.composite
def not_utf8(draw: st.DrawFn, good: Good, wall: int) -> Fuzz:
    topic, event = draw(_base(good))
    event["note"] = "@@"
    junk = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80",
                                 b"\xc0\xaf"]))
    return topic, _dump(event).replace(b"@@", MARKER.encode() + junk), "not_utf8"


CATEGORIES = {"arbitrary_bytes", "truncated", "oversized", "wrong_type", "missing_field",
              "huge_number", "nan_inf", "unknown_type", "wrong_topic", "unknown_partner",
              "bad_timestamp", "nested_garbage", "duplicated_key", "control_chars", "not_utf8"}


def hostile(good: Good, wall: int, exclude: frozenset[str] = frozenset()) -> st.SearchStrategy[Fuzz]:
    """Every kind of hostile message, built from the ``good`` events, judged at ``wall``."""
    kinds = (arbitrary_bytes, truncated, oversized, wrong_type, missing_field, huge_number,
             nan_inf, unknown_type, wrong_topic, unknown_partner, bad_timestamp, nested_garbage,
             duplicated_key, control_chars, not_utf8)
    return st.one_of(*(k(good, wall) for k in kinds if k.__name__ not in exclude))


# --- the run -----------------------------------------------------------------------------
def _engines() -> tuple[Engine, Engine]:
    catalog, partners = load_config()
    closed = dataclasses.replace(partners, closed=True)
    return Engine(catalog, partners, clock="wall"), Engine(catalog, closed, clock="wall")


def _snapshot(engine: Engine, partner: str) -> dict[tuple[str, str], KpiValue]:
    return dict(engine.evaluate(partner, WALL))


def _assert_matches_reference(engine: Engine) -> int:
    expected = reference.compute_flat(GOOD, now_ms=WALL)
    got = {(p, k, w): v for p in GOOD_PARTNERS for (k, w), v in engine.evaluate(p, WALL).items()}
    assert set(got) == set(expected), sorted(set(got) ^ set(expected))[:10]
    for key, ref in expected.items():
        assert got[key].samples == ref.samples, key
        tolerance = 0.01 if "_p90" in key[1] else 1e-9
        assert math.isclose(got[key].value, ref.value, rel_tol=tolerance, abs_tol=1e-9), key
    return len(expected)


def test_hostile_messages_interleaved_with_good_events(
        record_property: Any, capsys: pytest.CaptureFixture[str]) -> None:
    open_engine, closed_engine = _engines()
    engines = (open_engine, closed_engine)
    fed: list[tuple[str, dict[str, Any]]] = []
    resend = random.Random(3)
    counts: Counter[str] = Counter()

    def feed_good(upto: int) -> None:
        while len(fed) < min(upto, len(GOOD)):
            topic, event = GOOD[len(fed)]
            fed.append((topic, event))
            for engine in engines:
                engine.ingest(topic, orjson.dumps(event), WALL)

    @FUZZ
    @given(hostile(GOOD, WALL))
    def one(item: Fuzz) -> None:
        topic, raw, category = item
        counts[category] += 1
        # good events spread over the whole run, in their arrival order
        feed_good(-(-sum(counts.values()) * len(GOOD) // EXAMPLES))
        for engine in engines:
            result = engine.ingest(topic, raw, WALL)  # must not raise, whatever the bytes
            fuzz_partner = (category == "unknown_partner" and engine is open_engine)
            if fuzz_partner:
                assert result.outcome in (Outcome.ACCEPTED, Outcome.DUPLICATE), result
                assert result.partner is not None and result.partner.startswith("fz-")
            else:
                assert result.outcome is Outcome.REJECTED, (category, raw[:200], result)
                assert result.reason.strip(), (category, raw[:200])
                assert MARKER not in redact(result.reason), result.reason
        if fed and resend.random() < 0.2:
            # a good event delivered again: the same outcome as a duplicate, nothing changes
            topic, event = fed[resend.randrange(len(fed))]
            for engine in engines:
                before = _snapshot(engine, event["partner_id"])
                assert engine.ingest(topic, orjson.dumps(event), WALL).outcome is Outcome.DUPLICATE
                assert _snapshot(engine, event["partner_id"]) == before

    one()
    feed_good(len(GOOD))
    tried = sum(counts.values())
    record_property("fuzz_inputs", tried)
    with capsys.disabled():
        print(f"\nfuzz: {tried} hostile messages x 2 engines, {len(GOOD)} good events; "
              + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    assert tried >= min(EXAMPLES, 1000)  # the profile really ran, and ran wide
    assert set(counts) == CATEGORIES  # every kind of hostile message was tried

    checked = _assert_matches_reference(closed_engine)
    assert _assert_matches_reference(open_engine) == checked
    assert checked >= len(GOOD_PARTNERS) * 40
    # stops before starts exist in the stream, and never produce a negative duration
    durations = [k.id for k in open_engine.kpis if k.kind == "duration"]
    for engine in engines:
        for partner in engine.partner_ids():
            for (kpi, _w), value in engine.evaluate(partner, WALL).items():
                if kpi in durations:
                    assert value.value >= 0 and value.total >= 0, (partner, kpi, value)
    assert set(open_engine.partner_ids()) - set(GOOD_PARTNERS) == {
        p for p in open_engine.partner_ids() if p.startswith("fz-")}
    assert set(closed_engine.partner_ids()) == set(GOOD_PARTNERS)


# --- the defects found, pinned as plain unit tests -------------------------------------------
def _valid_call() -> dict[str, Any]:
    return {"event_id": "c-1", "type": "queued", "partner_id": "bluefiber", "ts": WALL - HOUR,
            "call_id": "C-1"}


def test_deep_nesting_in_an_ignored_field_is_a_contract_error_not_a_crash() -> None:
    # RecursionError escaped decode() (and Engine.ingest, and the Faust agent) before
    raw = _dump(_valid_call())[:-1] + b',"x":' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    with pytest.raises(ContractError, match="nested too deeply"):
        decode("calls", raw, WALL)
    engine, _ = _engines()
    assert engine.ingest("calls", raw, WALL).outcome is Outcome.REJECTED


@pytest.mark.parametrize("escaped", ["\\u001f", "\\n", "\\u0000", "\\u007f", "\\r"])
def test_control_characters_in_entity_ids_are_rejected(escaped: str) -> None:
    raw = _dump(_valid_call()).replace(b'"C-1"', f'"C{escaped}1"'.encode())
    with pytest.raises(ContractError, match="control character"):
        decode("calls", raw, WALL)
    # escapes that are not control characters stay valid
    ok = _dump(_valid_call()).replace(b'"C-1"', b'"C\\/1\\u00e9"')
    assert decode("calls", ok, WALL).event.call_id == "C/1\u00e9"


def test_duplicated_keys_keep_the_last_value_like_json_parse() -> None:
    event = _valid_call()
    raw = _dump(event)[:-1] + b',"call_id":"C-2"}'
    assert decode("calls", raw, WALL).event.call_id == json.loads(raw)["call_id"] == "C-2"
    # a second, different tag is refused rather than picked
    raw = _dump(event)[:-1] + b',"type":"answered"}'
    with pytest.raises(ContractError):
        decode("calls", raw, WALL)


def test_redact_elides_every_quoted_value() -> None:
    assert redact("Invalid value 'x' - at `$.type`") == "Invalid value '…' - at `$.type`"
    assert redact("partner_id \"it's\" must be") == "partner_id '…' must be"
    assert redact("event_id 'a\\'b' has characters") == "event_id '…' has characters"
    assert redact("cut 'off") == "cut '…'"
    assert redact("Expected `str`, got `int` - at `$.ts`") == "Expected `str`, got `int` - at `$.ts`"


def test_a_survey_spelling_the_sentinel_tag_is_rejected_and_the_real_event_still_counts() -> None:
    # "\u0000" matched the never-to-match survey member of the union: the message was accepted,
    # marked the real event's id as seen, and the real event was then dropped as a duplicate
    real = {"event_id": "s-1", "type": "response", "partner_id": "bluefiber", "ts": WALL - 60_000,
            "kind": "csat", "score": 4}
    forged = _dump({**real, "type": "@@"}).replace(b'"@@"', b'"\\u0000"')
    with pytest.raises(ContractError, match="type"):
        decode("surveys", forged, WALL)
    engine, _ = _engines()
    assert engine.ingest("surveys", forged, WALL).outcome is Outcome.REJECTED
    assert engine.ingest("surveys", _dump(real), WALL).outcome is Outcome.ACCEPTED
    assert engine.evaluate("bluefiber", WALL)[("csat", "1h")].samples == 1


# --- the real path: a worker on a broker ----------------------------------------------------
WORKER_FUZZ = 300


def _collect(good: Good, wall: int, n: int) -> list[Fuzz]:
    """``n`` hostile messages, the same ones on every run (a derandomized Hypothesis draw).

    Unknown partners are left out: on the open partner list they are valid events of a new
    partner (the engine test above covers both lists).
    """
    out: list[Fuzz] = []

    @settings(FUZZ, max_examples=n)
    @given(hostile(good, wall, exclude=frozenset({"unknown_partner"})))
    def collect(item: Fuzz) -> None:
        out.append(item)

    collect()
    return out


@pytest.mark.slow
def test_a_worker_survives_hostile_messages_and_counts_good_ones_once(tmp_path: Path) -> None:
    from streams.ingest.topics import DEAD_LETTER, REPARTITION, all_topics
    from streams.runtime.kafka_admin import ensure_topics
    from streams.tools.broker import EmbeddedBroker
    from tests.harness import Worker, as_messages, poll, produce
    from tests.test_pipeline import _consume_all, _history, assert_exports_match

    good = _history(29)
    bad = _collect(good, int(time.time() * 1000), WORKER_FUZZ)
    messages = as_messages(good)
    mixed: list[tuple[str, bytes | None, bytes]] = []
    for i, (topic, raw, _category) in enumerate(bad):
        mixed.append((topic, b"fz-%d" % i, raw))
        mixed.extend(messages[i * len(messages) // len(bad):(i + 1) * len(messages) // len(bad)])
    # a fresh broker: the session one carries other tests' input and dead letters
    with EmbeddedBroker(log_path=tmp_path / "broker.log") as broker:
        ensure_topics(broker.bootstrap, all_topics(4))
        worker = Worker(broker.url, tmp_path).start()
        try:
            produce(broker.bootstrap, mixed)
            # forwarded events name their topic in a header: a forged one is producer input too
            forged = [(b"\xff\xfe", b"{}"), (b"no-such-topic", b"{}"), (MARKER.encode(), b"[]")]
            _produce_with_header(broker.bootstrap, REPARTITION, forged)
            total = len(mixed) + len(forged)
            poll(lambda: worker.processed() >= total, 180, f"{total} messages processed")
            assert worker.ready()["ready"], "the worker must stay up"
            assert worker.proc is not None and worker.proc.poll() is None
            counts = worker.counts()
            assert sum(counts.values()) == total
            assert sum(v for k, v in counts.items() if k.endswith(":rejected")) == len(bad) + 3
            dead = _consume_all(broker.bootstrap, DEAD_LETTER, len(bad) + len(forged))
            assert sorted(m.value for m in dead) == sorted([raw for _, raw, _ in bad]
                                                           + [v for _, v in forged])
            for message in dead:
                assert dict(message.headers)["pp-reason"].decode().strip()
            assert_exports_match(worker.metrics_text(), good)
        finally:
            worker.stop()
        log = worker.log_path.read_text(errors="replace")
        # dead letters are logged by position, with the message's values elided
        assert "dead letter" in log
        assert MARKER not in log
    print(f"\nworker fuzz: {len(bad)} hostile + {len(forged)} forged-header messages, "
          f"{len(messages)} good events")


def _produce_with_header(bootstrap: str, topic: str, items: list[tuple[bytes, bytes]]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks=1)
    for header, value in items:
        producer.send(topic, key=b"forged", value=value, headers=[("pp-topic", header)])
    producer.flush()
    producer.close()


@pytest.mark.parametrize("field", ["partner_id", "event_id", "call_id"])
def test_a_trailing_newline_in_an_id_is_rejected(field: str) -> None:
    # the id regexes ended in "$", which also matches before a final newline
    event = _valid_call()
    event[field] += "\n"
    with pytest.raises(ContractError):
        decode("calls", _dump(event), WALL)


def test_a_stop_before_its_start_gives_no_negative_duration() -> None:
    t = WALL - 10 * 60_000
    base = {"partner_id": "bluefiber", "ticket_id": "T-9"}
    events = [
        ("tickets", {**base, "event_id": "r", "type": "resolved", "ts": t - 5 * 60_000}),
        ("tickets", {**base, "event_id": "c", "type": "contacted", "ts": t - 60_000}),
        ("tickets", {**base, "event_id": "o", "type": "opened", "ts": t,
                     "severity": "down_hard"}),
        ("calls", {"partner_id": "bluefiber", "call_id": "C-9", "event_id": "a",
                   "type": "answered", "ts": t}),
        ("calls", {"partner_id": "bluefiber", "call_id": "C-9", "event_id": "q",
                   "type": "queued", "ts": t + 1000}),
    ]
    engine, _ = _engines()
    for topic, event in events:
        assert engine.ingest(topic, _dump(event), WALL).outcome is Outcome.ACCEPTED
    values = engine.evaluate("bluefiber", WALL)
    # no duration sample at all (the reference agrees), and never a negative one
    for kpi in ("ots_down_hard", "mttr", "asa", "ots_down_hard_p90"):
        assert (kpi, "1h") not in values
    assert not {k for (_p, k, _w) in reference.compute(events, now_ms=WALL)} & {
        "ots_down_hard", "mttr", "asa", "ots_down_hard_p90"}
    assert all(v.value >= 0 for v in values.values())
