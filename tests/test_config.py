"""Config loading: targets resolve partner > tier > default; bad files name file and line."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from streams.config.catalog import ConfigError, duration_ms, load_config
from streams.engine.core import Engine, Outcome
from tests.harness import REPO

CONFIG = REPO / "config"


def _copy_config(tmp_path: Path) -> Path:
    target = tmp_path / "config"
    shutil.copytree(CONFIG, target)
    return target


def test_targets_resolve_partner_then_tier_then_default() -> None:
    catalog, partners = load_config(CONFIG)
    esc, asa, mttr = (catalog.kpi(k) for k in ("escalation_rate", "asa", "mttr"))
    assert partners.target("vertex-outsourcing", esc) == 0.15  # partner override
    assert partners.target("keystone-wireless", esc) == 0.20  # authorized tier
    assert partners.target("northwind-telecom", asa) == 45  # premier tier
    assert partners.target("never-seen-before", asa) == 90  # default tier: authorized
    assert partners.target("northwind-telecom", mttr) == 14400  # catalog default
    assert partners.tier("never-seen-before") == "authorized"


def test_closed_partner_list_rejects_unknown_partners(tmp_path: Path) -> None:
    config = _copy_config(tmp_path)
    path = config / "partners.yaml"
    path.write_text(path.read_text().replace("closed: false", "closed: true"))
    catalog, partners = load_config(config)
    engine = Engine(catalog, partners, clock="event")
    event = {"event_id": "e1", "type": "queued", "partner_id": "stranger", "call_id": "c1",
             "ts": 1_788_000_000_000}
    result = engine.ingest("calls", orjson.dumps(event), 1_788_000_000_000)
    assert result.outcome is Outcome.REJECTED and "stranger" in result.reason
    known = {**event, "partner_id": "bluefiber"}
    assert engine.ingest("calls", orjson.dumps(known), 1_788_000_000_000).outcome is (
        Outcome.ACCEPTED)


@pytest.mark.parametrize(("old", "new", "problem"), [
    ("tier: premier, name: BlueFiber", "tier: platinum, name: BlueFiber", "unknown tier 'platinum'"),
    ("targets: {asa: 60}", "targets: {speed: 60}", "unknown KPI 'speed'"),
    ("default_tier: authorized", "default_tier: 7", "Expected `str`"),
])
def test_bad_partner_file_names_line(tmp_path: Path, old: str, new: str, problem: str) -> None:
    config = _copy_config(tmp_path)
    path = config / "partners.yaml"
    text = path.read_text()
    assert old in text
    text = text.replace(old, new, 1)
    path.write_text(text)
    line = next(i for i, row in enumerate(text.splitlines(), 1) if new in row)
    with pytest.raises(ConfigError) as err:
        load_config(config)
    assert f"partners.yaml:{line}:" in str(err.value)
    assert problem in str(err.value)


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    config = _copy_config(tmp_path)
    path = config / "kpis.yaml"
    lines = path.read_text().splitlines()
    broken = next(i for i, line in enumerate(lines) if line.startswith("  - id: "))
    lines[broken] = "  - id: [unclosed"
    path.write_text("\n".join(lines))
    with pytest.raises(ConfigError, match=r"kpis.yaml:\d+: YAML syntax error") as caught:
        load_config(config)
    # the parser stops at the first token it cannot take: the broken line or just after it
    reported = int(str(caught.value).split("kpis.yaml:")[1].split(":")[0])
    assert broken + 1 <= reported <= broken + 3, (broken + 1, reported)


def test_check_config_command(tmp_path: Path) -> None:
    ok = subprocess.run([sys.executable, "-m", "streams", "check-config", "--config", str(CONFIG)],
                        capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    assert "24 KPIs" in ok.stderr
    config = _copy_config(tmp_path)
    (config / "kpis.yaml").write_text("version: 2\n")
    bad = subprocess.run([sys.executable, "-m", "streams", "check-config", "--config", str(config)],
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 1
    assert "kpis.yaml:1" in bad.stderr


@pytest.mark.parametrize(("text", "ms"), [("90s", 90_000), ("2h", 7_200_000), ("30d", 2_592_000_000),
                                         ("1500ms", 1500), (60, 60_000), ("1.5m", 90_000)])
def test_durations(text: str | int, ms: int) -> None:
    assert duration_ms(text) == ms


def test_adding_a_kpi_is_a_yaml_change(tmp_path: Path) -> None:
    config = _copy_config(tmp_path)
    path = config / "kpis.yaml"
    path.write_text(path.read_text() + """
  - id: chat_first_response
    title: Chat tickets, open to first contact
    kind: duration
    unit: seconds
    better: lower
    target: 300
    min_samples: 5
    windows: [1h]
    start: {topic: tickets, type: opened, where: {channel: chat}}
    stop: {topic: tickets, type: contacted}
    statistic: p50
""")
    catalog, partners = load_config(config)
    engine = Engine(catalog, partners, clock="event")
    t0 = 1_788_000_000_000
    for i, (channel, wait_s) in enumerate([("chat", 100), ("chat", 300), ("phone", 5), ("chat", 200)]):
        base = {"partner_id": "acme", "ticket_id": f"t{i}"}
        engine.ingest("tickets", orjson.dumps({**base, "event_id": f"o{i}", "type": "opened",
                      "ts": t0, "severity": "question", "channel": channel}), t0)
        engine.ingest("tickets", orjson.dumps({**base, "event_id": f"c{i}", "type": "contacted",
                      "ts": t0 + wait_s * 1000}), t0)
    value = engine.evaluate("acme", engine.now(t0))[("chat_first_response", "1h")]
    assert value.samples == 3
    assert value.value == pytest.approx(200, rel=0.01)  # median of 100, 200, 300


@pytest.mark.parametrize(("kpi", "topic", "selectors"), [
    ("""
    kind: duration
    unit: seconds
    start: {topic: tickets, type: opened}
    stop: {topic: calls, type: answered}""", "calls", "start and stop"),
    ("""
    kind: ratio
    unit: ratio
    numerator: {topic: tickets, type: escalated, distinct: true}
    denominator: {topic: orders, type: installed, distinct: true}""", "orders",
     "numerator and denominator"),
    ("""
    kind: reviewed
    unit: ratio
    subject: {topic: tickets, type: escalated}
    claim: {topic: tickets, type: escalated, where: {documented: true}}
    approved: {topic: tickets, type: escalation_reviewed, where: {verdict: good}}
    rejected: {topic: orders, type: cancelled}""", "orders",
     "subject and claim and approved and rejected"),
])
def test_marks_of_one_entity_must_share_a_topic(tmp_path: Path, kpi: str, topic: str,
                                                selectors: str) -> None:
    """The engine reads a KPI's marks from one entity record: a duration from a ticket's open to
    a call's answer has no record holding both, and is refused at load, naming the line."""
    config = _copy_config(tmp_path)
    path = config / "kpis.yaml"
    text = path.read_text() + f"""
  - id: mixed_topics
    title: Mixed topics
    better: lower
    target: 300
    min_samples: 5{kpi}
"""
    path.write_text(text)
    bad = f"{{topic: {topic},"
    line = next(i for i, row in enumerate(text.splitlines(), 1)
                if bad in row and i > len(text.splitlines()) - 8)
    with pytest.raises(ConfigError) as err:
        load_config(config)
    assert f"kpis.yaml:{line}:" in str(err.value)
    assert f"{selectors} are marks of one entity" in str(err.value)


def _panels_selecting(window: str) -> set[str]:
    """Titles of committed dashboard panels whose queries name ``window`` (read independently
    of streams.generators.coverage: a plain text search of the JSON files)."""
    needle = f'window="{window}"'
    titles: set[str] = set()

    def walk(panels: list[dict]) -> None:
        for panel in panels:
            if any(needle in t.get("expr", "") for t in panel.get("targets", [])):
                titles.add(panel["title"])
            walk(panel.get("panels", []))

    for path in sorted((REPO / "dashboards").glob("*.json")):
        walk(orjson.loads(path.read_bytes())["panels"])
    return titles


def test_check_config_names_what_a_narrowed_export_leaves_empty(tmp_path: Path) -> None:
    ok = subprocess.run([sys.executable, "-m", "streams", "check-config", "--config", str(CONFIG)],
                        capture_output=True, text=True, check=False)
    assert "warning" not in ok.stderr + ok.stdout  # the default exports every window
    config = _copy_config(tmp_path)
    kpis = config / "kpis.yaml"
    text = kpis.read_text()
    assert "  export_windows: [1h, 24h, 7d, 30d]\n" in text
    kpis.write_text(text.replace("  export_windows: [1h, 24h, 7d, 30d]\n",
                                 "  export_windows: [24h]\n"))
    proc = subprocess.run([sys.executable, "-m", "streams", "check-config", "--config", str(config)],
                          capture_output=True, text=True, check=False)
    out = proc.stderr + proc.stdout
    assert proc.returncode == 0, out  # a valid choice for a large fleet, said out loud
    for window in ("1h", "7d", "30d"):
        assert f"window {window} is not in settings.export_windows (24h)" in out
        panels = _panels_selecting(window)
        assert panels, window
        for title in panels:
            assert f"panel {title!r}" in out, (window, title)
    assert "window 24h is not" not in out


@pytest.mark.parametrize(("integrity", "problem"), [
    ("[threshold_hugging, gaming]", "unknown integrity signal 'gaming'"),
    ("[deadline_bunching]", "deadline_bunching does not apply to a ratio KPI"),
])
def test_integrity_signals_are_checked_against_the_kind(tmp_path: Path, integrity: str,
                                                        problem: str) -> None:
    config = _copy_config(tmp_path)
    path = config / "kpis.yaml"
    text = path.read_text() + f"""
  - id: callback_rate
    title: Callback rate
    kind: ratio
    unit: ratio
    better: lower
    target: 0.1
    min_samples: 20
    numerator: {{topic: calls, type: abandoned, distinct: true}}
    denominator: {{topic: calls, type: queued, distinct: true}}
    integrity: {integrity}
"""
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(config)
    assert f"kpis.yaml:{len(text.splitlines())}:" in str(err.value)
    assert problem in str(err.value)


def test_integrity_signals_default_by_kind_and_may_be_turned_off(tmp_path: Path) -> None:
    catalog, _ = load_config()
    by_id = {k.id: k.integrity for k in catalog.kpis}
    assert by_id["abandon_rate"] == ("threshold_hugging",)  # a share with a target
    assert by_id["ots_down_hard"] == ("deadline_bunching",)  # a duration in seconds
    assert by_id["csat"] == ()  # a mean score: neither
    assert by_id["escalation_rate"] == ("threshold_hugging", "under_reporting")  # listed
    config = _copy_config(tmp_path)
    path = config / "kpis.yaml"
    path.write_text(path.read_text().replace(
        "    integrity: [threshold_hugging, under_reporting]\n", "    integrity: []\n"))
    catalog, _ = load_config(config)
    assert next(k for k in catalog.kpis if k.id == "escalation_rate").integrity == ()


def test_a_reviewed_kpi_needs_all_four_selectors(tmp_path: Path) -> None:
    config = _copy_config(tmp_path)
    path = config / "kpis.yaml"
    path.write_text(path.read_text() + """
  - id: reviewed_without_rejections
    title: Reviewed
    kind: reviewed
    unit: ratio
    better: higher
    target: 0.9
    min_samples: 5
    subject: {topic: tickets, type: escalated}
    claim: {topic: tickets, type: escalated, where: {documented: true}}
    approved: {topic: tickets, type: escalation_reviewed, where: {verdict: good}}
""")
    with pytest.raises(ConfigError, match="of kind reviewed needs 'rejected'"):
        load_config(config)


@pytest.mark.parametrize(("where", "error"), [
    ("{kind: csat, score: {le: 2}}", None),
    ("{kind: csat, score: {ge: 1, le: 2}}", None),
    ("{kind: {in: [csat, xla]}, score: {lt: 3.5}}", None),
    ("{score: {below: 2}}", "unknown comparison 'below'"),
    ("{score: {le: low}}", "'le' compares numbers, not 'low'"),
    ("{score: {le: true}}", "'le' compares numbers, not True"),
    ("{score: {in: []}}", "'in' takes a non-empty list"),
    ("{score: {in: 3}}", "'in' takes a non-empty list"),
    ("{score: {eq: [1, 2]}}", "'eq' takes one value, not a list"),
    ("{score: {}}", "an empty comparison"),
    ("{scroe: {le: 2}}", "surveys 'response' events have no field 'scroe'"),
])
def test_where_comparisons_are_checked(tmp_path: Path, where: str, error: str | None) -> None:
    config = _copy_config(tmp_path)
    path = config / "kpis.yaml"
    text = path.read_text() + f"""
  - id: poor_scores
    title: Poor scores
    kind: ratio
    unit: ratio
    better: lower
    target: 0.1
    min_samples: 5
    numerator: {{topic: surveys, type: response, where: {where}}}
    denominator: {{topic: surveys, type: response}}
"""
    path.write_text(text)
    if error is None:
        load_config(config)
        return
    with pytest.raises(ConfigError) as err:
        load_config(config)
    line = len(text.splitlines()) - 1  # the numerator's line
    assert f"kpis.yaml:{line}:" in str(err.value) and error in str(err.value)


def test_where_comparisons_match_as_documented() -> None:
    from streams.config.catalog import Condition

    le2 = Condition("score", "le", 2)
    assert le2.holds(2) and le2.holds(1.5) and not le2.holds(2.5)
    assert not le2.holds(None) and not le2.holds(True) and not le2.holds("1")
    assert Condition("score", "gt", 2).holds(2.5) and not Condition("score", "gt", 2).holds(2)
    assert Condition("score", "ge", 2).holds(2) and Condition("score", "lt", 2).holds(1)
    assert Condition("kind", "in", ("csat", "xla")).holds("xla")
    assert not Condition("kind", "in", ("csat",)).holds(None)
    assert Condition("score", "eq", 5).holds(5.0)  # numbers compare as numbers
    assert not Condition("documented", "eq", True).holds(1)  # a bool is not a number
    assert Condition("kb_article", "eq", None).holds(None)  # null matches absent or null


@pytest.mark.parametrize(("start", "follow", "link", "error"), [
    ("{topic: surveys, type: response}", "follow_up", "ticket_id", None),
    ("{topic: surveys, type: response}", "opened", "order_id",
     "link must be the tickets entity 'ticket_id'"),
    ("{topic: orders, type: installed}", "follow_up", "call_id",
     "'follow_up' events have no field 'call_id'"),
])
def test_a_follow_up_link_is_checked(tmp_path: Path, start: str, follow: str, link: str,
                                     error: str | None) -> None:
    config = _copy_config(tmp_path)
    path = config / "kpis.yaml"
    path.write_text(path.read_text() + f"""
  - id: followed
    title: Followed
    kind: follow_up
    unit: ratio
    better: higher
    target: 0.9
    min_samples: 5
    start: {start}
    follow: {{topic: tickets, type: {follow}}}
    link: {link}
    horizon: 1d
""")
    if error is None:
        load_config(config)
        return
    with pytest.raises(ConfigError, match=error):
        load_config(config)


def test_the_compiled_matcher_agrees_with_matches() -> None:
    """The per-event path compares equality-only filters inline: same verdicts as the
    conditions themselves, on values of every type the contract carries."""
    from types import SimpleNamespace

    from streams.config.catalog import Condition, Match

    values: list[object] = [None, True, False, 0, 1, 1.0, 2.5, "", "a", "1"]
    for want in values:
        for extra in ([], [Condition("other", "eq", None)]):
            match = Match("tickets", "escalated", (Condition("field", "eq", want), *extra))
            fast = match.compiled()
            assert fast is not match.matches  # equality only: the inline matcher
            for got in values:
                event = SimpleNamespace(field=got)
                assert fast(event) == match.matches(event), (want, got)
    ranged = Match("surveys", "response", (Condition("score", "lt", 4),))
    assert ranged.compiled() == ranged.matches  # comparisons: the conditions themselves


@pytest.mark.parametrize(("sla", "link", "error"), [
    ("[ots_down_hard, mttr]", "ticket_id", None),
    ("[ots_down_hard, nonesuch]", "ticket_id", "sla names 'nonesuch', which is not a duration"),
    ("[escalation_rate]", "ticket_id", "sla names 'escalation_rate', which is not a duration"),
    ("[asa]", "ticket_id", "'asa' is timed on calls; the answers join it by link 'ticket_id'"),
    ("[]", "ticket_id", "sla needs at least one duration KPI"),
])
def test_an_sla_experience_kpi_is_checked(tmp_path: Path, sla: str, link: str,
                                          error: str | None) -> None:
    config = _copy_config(tmp_path)
    path = config / "kpis.yaml"
    path.write_text(path.read_text() + f"""
  - id: melons
    title: Melons
    kind: sla_experience
    outcome: watermelon
    unit: ratio
    better: lower
    target: 0.1
    min_samples: 5
    sla: {sla}
    good: {{topic: surveys, type: response, where: {{kind: csat, score: {{ge: 4}}}}}}
    poor: {{topic: surveys, type: response, where: {{kind: csat, score: {{lt: 4}}}}}}
    link: {link}
""")
    if error is None:
        load_config(config)
        return
    with pytest.raises(ConfigError, match=re.escape(error)):
        load_config(config)


def test_count_at_is_only_for_follow_ups(tmp_path: Path) -> None:
    config = _copy_config(tmp_path)
    path = config / "kpis.yaml"
    path.write_text(path.read_text() + """
  - id: decided_ratio
    title: Decided
    kind: ratio
    unit: ratio
    better: lower
    target: 0.1
    min_samples: 5
    numerator: {topic: tickets, type: reopened}
    denominator: {topic: tickets, type: resolved}
    count_at: decision
""")
    with pytest.raises(ConfigError, match="count_at is only for follow_up KPIs"):
        load_config(config)


_BY_CHANNEL = {
    "asa_by_queue": ("duration", "start: {topic: calls, type: queued}\n"
                     "    stop: {topic: calls, type: answered}", None),
    "reopen_by_channel": ("ratio", "numerator: {topic: tickets, type: reopened, distinct: true}\n"
                          "    denominator: {topic: tickets, type: resolved, distinct: true}", None),
    "reopen_counted": ("ratio", "numerator: {topic: tickets, type: reopened}\n"
                       "    denominator: {topic: tickets, type: resolved}", "by [channel] needs"),
    "xla_by_channel": ("mean_field", "source: {topic: surveys, type: response}\n"
                       "    field: score\n    link: ticket_id", None),
    "xla_unlinked": ("mean_field", "source: {topic: surveys, type: response}\n    field: score",
                     "by [channel] needs"),
    "install_follow": ("follow_up", "start: {topic: orders, type: installed}\n"
                       "    follow: {topic: tickets, type: opened}\n    link: order_id\n"
                       "    horizon: 30d", "by [channel] needs"),
    "order_lead": ("duration", "start: {topic: orders, type: scheduled}\n"
                   "    stop: {topic: orders, type: installed}", "by [channel] needs"),
}


@pytest.mark.parametrize("kpi_id", sorted(_BY_CHANNEL))
def test_by_channel_is_checked(tmp_path: Path, kpi_id: str) -> None:
    """Durations and distinct ratios of tickets or calls, and a linked mean, can be kept per
    channel (one KPI per channel of the topic's closed list); anything else is refused at its
    ``by:`` line."""
    kind, selectors, error = _BY_CHANNEL[kpi_id]
    config = _copy_config(tmp_path)
    path = config / "kpis.yaml"
    text = path.read_text() + f"""
  - id: {kpi_id}
    title: By channel
    kind: {kind}
    unit: {"seconds" if kind == "duration" else "ratio"}
    better: lower
    target: 0.5
    min_samples: 5
    {selectors}
    by: [channel]
"""
    path.write_text(text)
    if error is not None:
        with pytest.raises(ConfigError) as err:
            load_config(config)
        line = len(text.splitlines())  # the by: line
        assert f"kpis.yaml:{line}:" in str(err.value) and error in str(err.value)
        return
    catalog, _ = load_config(config)
    split = [k for k in catalog.channel_kpis if k.base == kpi_id]
    topic = "calls" if kpi_id == "asa_by_queue" else "tickets"
    channels = {"calls": {"phone", "callback", "chat"},
                "tickets": {"phone", "email", "chat", "chatbot", "portal", "self_service",
                            "proactive"}}[topic]
    assert {k.channel for k in split} == channels
    assert all(k.windows == ("24h", "30d") and not k.integrity and not k.open_items
               for k in split)


def test_channel_windows_must_be_catalog_windows(tmp_path: Path) -> None:
    config = _copy_config(tmp_path)
    path = config / "kpis.yaml"
    path.write_text(path.read_text().replace("channel_windows: [24h, 30d]",
                                             "channel_windows: [24h, 90d]"))
    with pytest.raises(ConfigError, match=r"unknown window '90d'"):
        load_config(config)
