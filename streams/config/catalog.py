"""The KPI catalog and the partner file: what to measure, over which windows, against which targets.

Both files are YAML, parsed with the safe loader (no object construction) and
validated with msgspec. A bad file fails at start with a message naming the
file, the line and the problem (:class:`ConfigError`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
import yaml

from streams.config.judging import JudgeParams
from streams.ingest.contract import TOPICS

_SOURCE_CONFIG = Path(__file__).resolve().parents[2] / "config"  # the checkout's config/
# From a source checkout (editable install) the repo's config/; otherwise ./config.
DEFAULT_CONFIG_DIR: Final = _SOURCE_CONFIG if _SOURCE_CONFIG.is_dir() else Path("config")
TIERS: Final = ("premier", "business", "select", "authorized")

_DURATION_RE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_MS: Final = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, None: 1000}
# \Z, not $: "$" also matches before a final newline
_KPI_ID_RE: Final = re.compile(r"^[a-z][a-z0-9_]{0,63}\Z")
# Window names become label values and are written into generated PromQL selectors
# (window="..."): a quote or brace in one would rewrite the rules and dashboards.
_WINDOW_NAME_RE: Final = re.compile(r"^[A-Za-z0-9_]{1,32}\Z")
_PERCENTILE_RE: Final = re.compile(r"^p(\d{1,2}(?:\.\d+)?)\Z")


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names file and line."""


def duration_ms(value: str | int | float) -> int:
    """'90s', '2h', '30d', '1500ms' or a number of seconds, as milliseconds."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration, got {value!r}")
    if isinstance(value, int | float):
        return round(value * 1000)
    match = _DURATION_RE.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a duration like '90s', '2h' or '30d'")
    return round(float(match.group(1)) * _UNIT_MS[match.group(2)])


# --- the YAML shapes (validated by msgspec) ---------------------------------
Scalar = str | int | float | bool | None


class _Match(msgspec.Struct, forbid_unknown_fields=True):
    topic: Literal["tickets", "calls", "orders", "surveys"]
    type: str
    where: dict[str, Scalar] = {}
    distinct: bool = False


class _Window(msgspec.Struct, forbid_unknown_fields=True):
    length: str | int
    resolution: str | int


class _Judge(msgspec.Struct, forbid_unknown_fields=True, rename={"for_": "for"}):
    confidence: float | None = None
    for_: str | int | None = None
    recovery_margin: float | None = None
    cusum_k: float | None = None
    cusum_h: float | None = None


class _Kpi(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    title: str
    kind: Literal["duration", "ratio", "mean_field", "follow_up", "deadline"]
    unit: Literal["seconds", "ratio", "score"]
    better: Literal["lower", "higher"]
    target: float
    min_samples: int
    windows: list[str] | None = None
    description: str = ""
    start: _Match | None = None
    stop: _Match | None = None
    miss: _Match | None = None
    statistic: str | dict[str, float] = "mean"
    numerator: _Match | None = None
    denominator: _Match | None = None
    source: _Match | None = None
    field: str | None = None
    follow: _Match | None = None
    link: str | None = None
    horizon: str | int | None = None
    due: _Match | None = None
    done: _Match | None = None
    open_items: bool = False
    judge: _Judge | None = None


class _Settings(msgspec.Struct, forbid_unknown_fields=True):
    entity_retention: str | int = "90d"
    export_windows: list[str] | None = None
    report_timezone: str = "UTC"
    report_months: int = 13


class _Catalog(msgspec.Struct, forbid_unknown_fields=True):
    version: Literal[1]
    windows: dict[str, _Window]
    kpis: list[_Kpi]
    settings: _Settings = msgspec.field(default_factory=_Settings)
    judge: _Judge = msgspec.field(default_factory=_Judge)


class _Partner(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    tier: str
    name: str = ""
    targets: dict[str, float] = {}


class _Band(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    min_score: float
    adjustment: float = 0.0
    label: str = ""


class _Report(msgspec.Struct, forbid_unknown_fields=True):
    bands: list[_Band]
    attainment_cap: float = 1.2
    weights: dict[str, float] = {}
    floor: float | None = None
    floor_band: str | None = None


class _Partners(msgspec.Struct, forbid_unknown_fields=True):
    version: Literal[1]
    default_tier: str = "authorized"
    closed: bool = False
    tiers: dict[str, dict[str, dict[str, float]]] = {}
    partners: list[_Partner] = []
    report: _Report | None = None


# --- the resolved, engine-facing model ----------------------------------------
@dataclass(frozen=True, slots=True)
class Match:
    """Which events a KPI looks at: topic, type and equality filters on fields."""

    topic: str
    type: str
    where: tuple[tuple[str, Scalar], ...] = ()
    distinct: bool = False

    def matches(self, event: Any) -> bool:
        """True when every filter holds; ``None`` matches an absent or null field."""
        for name, want in self.where:
            got = getattr(event, name, None)
            if got != want or (want is not None and type(got) is not type(want)):
                return False
        return True


@dataclass(frozen=True, slots=True)
class Window:
    """A rolling window: the last ``length_ms / resolution_ms`` buckets, the current included."""

    name: str
    length_ms: int
    resolution_ms: int

    @property
    def buckets(self) -> int:
        """Number of buckets the window spans."""
        return self.length_ms // self.resolution_ms


@dataclass(frozen=True, slots=True)
class Kpi:
    """One KPI of the catalog, resolved and checked."""

    id: str
    title: str
    kind: str
    unit: str
    better: str
    target: float
    min_samples: int
    windows: tuple[str, ...]
    description: str = ""
    start: Match | None = None
    stop: Match | None = None
    miss: Match | None = None
    statistic: str = "mean"
    """'mean', 'share_within' (with ``threshold_ms``) or a percentile like 'p90'."""
    quantile: float | None = None
    threshold_ms: int | None = None
    numerator: Match | None = None
    denominator: Match | None = None
    source: Match | None = None
    field: str | None = None
    follow: Match | None = None
    link: str | None = None
    horizon_ms: int | None = None
    due: Match | None = None
    done: Match | None = None
    open_items: bool = False
    """Export the entities still waiting for their stop, by age against the target."""
    judge: JudgeParams = dataclass_field(default_factory=JudgeParams)
    """Confidence, ``for`` duration, recovery margin and CUSUM parameters of the judgement."""

    @property
    def lower_is_better(self) -> bool:
        """Direction of goodness."""
        return self.better == "lower"

    @property
    def stat_kind(self) -> str:
        """How the KPI's uncertainty is judged: 'ratio' (0/1 or count ratio), 'mean' or 'quantile'."""
        if self.quantile is not None:
            return "quantile"
        if self.kind in ("duration", "mean_field") and self.statistic == "mean":
            return "mean"
        return "ratio"

    def matches(self) -> list[Match]:
        """Every event selector this KPI uses."""
        found = [self.start, self.stop, self.miss, self.numerator, self.denominator,
                 self.source, self.follow, self.due, self.done]
        return [m for m in found if m is not None]


@dataclass(frozen=True, slots=True)
class Catalog:
    """The KPI catalog: windows, KPIs and engine settings."""

    windows: dict[str, Window]
    kpis: tuple[Kpi, ...]
    entity_retention_ms: int
    source: str = ""
    export_windows: tuple[str, ...] = ()
    """Windows exported on /metrics (all when empty): large fleets export fewer."""
    report_timezone: str = "UTC"
    """Time zone whose calendar months the report card counts (IANA name)."""
    report_months: int = 13
    """Complete calendar months kept per partner and KPI besides the current one."""

    @property
    def max_window_ms(self) -> int:
        """Length of the largest window; older events are late."""
        return max(w.length_ms for w in self.windows.values())

    def kpi(self, kpi_id: str) -> Kpi:
        """Look up a KPI by id."""
        for kpi in self.kpis:
            if kpi.id == kpi_id:
                return kpi
        raise KeyError(kpi_id)


@dataclass(frozen=True, slots=True)
class Band:
    """A reward band of the report card: reached when the month's score is at least min_score."""

    id: str
    min_score: float
    adjustment: float
    """What the band is worth, as a fraction (0.03: 3% bonus or discount; -0.02: 2% penalty)."""
    label: str


@dataclass(frozen=True, slots=True)
class ReportPolicy:
    """How a partner's month turns into a reward band (``report:`` in partners.yaml)."""

    bands: tuple[Band, ...] = ()
    """Highest min_score first."""
    attainment_cap: float = 1.2
    """Each KPI's attainment counts at most this much, so over-delivering on one KPI cannot
    hide another."""
    weights: dict[str, float] = field(default_factory=dict)
    """KPI id -> weight in the score (1 when absent; 0 leaves a KPI out of the money)."""
    floor: float | None = None
    """A KPI below this attainment caps the band at ``floor_band`` whatever the score."""
    floor_band: str | None = None

    def weight(self, kpi_id: str) -> float:
        """The KPI's weight in the score."""
        return self.weights.get(kpi_id, 1.0)

    def band_for(self, score: float, floored: bool) -> Band | None:
        """The best band the score reaches, capped by the floor rule."""
        reached = next((b for b in self.bands if score >= b.min_score), None)
        if floored and reached is not None and self.floor_band is not None:
            cap = next(b for b in self.bands if b.id == self.floor_band)
            if reached.min_score > cap.min_score:
                return cap
        return reached


@dataclass(frozen=True, slots=True)
class Partners:
    """The partner file: tiers and target overrides; open or closed list."""

    default_tier: str
    closed: bool
    tier_targets: dict[str, dict[str, float]]
    partner_tier: dict[str, str]
    partner_targets: dict[str, dict[str, float]]
    names: dict[str, str] = field(default_factory=dict)
    report: ReportPolicy = field(default_factory=ReportPolicy)

    def tier(self, partner: str) -> str:
        """The partner's tier; unknown partners get the default tier."""
        return self.partner_tier.get(partner, self.default_tier)

    def known(self, partner: str) -> bool:
        """True when the partner is listed in the file."""
        return partner in self.partner_tier

    def target(self, partner: str, kpi: Kpi) -> float:
        """Partner override, else tier override, else the catalog default."""
        own = self.partner_targets.get(partner)
        if own and kpi.id in own:
            return own[kpi.id]
        tiered = self.tier_targets.get(self.tier(partner))
        if tiered and kpi.id in tiered:
            return tiered[kpi.id]
        return kpi.target


# --- loading ------------------------------------------------------------------
def _line_of(node: yaml.Node | None, path: list[str | int]) -> int | None:
    """1-based line of the YAML node at ``path`` (or of the deepest existing parent)."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for step in path:
        nxt: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode) and isinstance(step, str):
            for key, value in node.value:
                if getattr(key, "value", None) == step:
                    nxt = value
                    break
        elif (isinstance(node, yaml.SequenceNode) and isinstance(step, int)
              and 0 <= step < len(node.value)):
            nxt = node.value[step]
        if nxt is None:
            break
        node = nxt
        line = node.start_mark.line + 1
    return line


_PATH_RE: Final = re.compile(r"\$((?:\.[A-Za-z_][\w-]*|\[\d+\]|\[\.\.\.\])*)")


def _split_path(text: str) -> list[str | int]:
    match = _PATH_RE.search(text)
    if not match:
        return []
    steps: list[str | int] = []
    for part in re.findall(r"\.([A-Za-z_][\w-]*)|\[(\d+)\]", match.group(1)):
        steps.append(part[0] if part[0] else int(part[1]))
    return steps


def _load_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: YAML syntax error: {problem}") from None
    return data, node


class _Fail:
    """Raises ConfigError at the line of a path inside one file."""

    def __init__(self, path: Path, node: yaml.Node | None) -> None:
        self.path, self.node = path, node

    def __call__(self, where: list[str | int], problem: str) -> ConfigError:
        line = _line_of(self.node, where)
        return ConfigError(f"{self.path}:{line if line is not None else 1}: {problem}")


def _match(raw: _Match | None) -> Match | None:
    if raw is None:
        return None
    return Match(raw.topic, raw.type, tuple(sorted(raw.where.items())), raw.distinct)


_REQUIRED: Final[dict[str, tuple[str, ...]]] = {
    "duration": ("start", "stop"),
    "ratio": ("numerator", "denominator"),
    "mean_field": ("source", "field"),
    "follow_up": ("start", "follow", "link", "horizon"),
    "deadline": ("due", "done"),
}

_JOINED: Final[dict[str, tuple[str, ...]]] = {
    "duration": ("start", "stop", "miss"),
    "ratio": ("numerator", "denominator"),  # when both are distinct
    "deadline": ("due", "done"),
}
"""The selectors of a KPI kind whose events are marks of one entity (one topic)."""

_EVENT_TYPES: Final[dict[str, frozenset[str]]] = {
    "tickets": frozenset({"opened", "contacted", "escalated", "resolved", "closed", "reopened"}),
    "calls": frozenset({"queued", "answered", "abandoned"}),
    "orders": frozenset({"scheduled", "installed", "cancelled"}),
    "surveys": frozenset({"response"}),
}


def _judge_params(base: JudgeParams, raw: _Judge | None, fail: _Fail,
                  where: list[str | int]) -> JudgeParams:
    if raw is None:
        return base
    try:
        return JudgeParams(
            confidence=base.confidence if raw.confidence is None else raw.confidence,
            for_ms=base.for_ms if raw.for_ is None else duration_ms(raw.for_),
            recovery_margin=(base.recovery_margin if raw.recovery_margin is None
                             else raw.recovery_margin),
            cusum_k=base.cusum_k if raw.cusum_k is None else raw.cusum_k,
            cusum_h=base.cusum_h if raw.cusum_h is None else raw.cusum_h,
        )
    except ValueError as exc:
        raise fail(where, str(exc)) from None


def _resolve_kpi(i: int, raw: _Kpi, windows: dict[str, Window], fail: _Fail,
                 judge: JudgeParams = JudgeParams()) -> Kpi:  # noqa: B008 (frozen, shared)
    here: list[str | int] = ["kpis", i]
    if not _KPI_ID_RE.match(raw.id):
        raise fail([*here, "id"], f"KPI id {raw.id!r} must be snake_case ([a-z][a-z0-9_]*)")
    for name in _REQUIRED[raw.kind]:
        if getattr(raw, name) is None:
            raise fail(here, f"KPI {raw.id!r} of kind {raw.kind} needs '{name}'")
    for name in ("start", "stop", "miss", "numerator", "denominator", "source", "follow", "due",
                 "done"):
        match = getattr(raw, name)
        if match is not None and match.type not in _EVENT_TYPES[match.topic]:
            raise fail([*here, name, "type"],
                       f"KPI {raw.id!r}: {match.topic} has no event type {match.type!r}")
    # The engine computes a KPI's samples from the marks of *one* entity record: the events it
    # combines per entity must come from one topic (a follow-up joins its start's entity by
    # `link` instead, so it may come from another).
    joined = _JOINED.get(raw.kind, ())
    if raw.kind == "ratio" and not (raw.numerator and raw.numerator.distinct
                                    and raw.denominator and raw.denominator.distinct):
        joined = ()
    topics = {name: getattr(raw, name).topic for name in joined if getattr(raw, name) is not None}
    if len(set(topics.values())) > 1:
        last = list(topics)[-1]
        raise fail([*here, last, "topic"],
                   f"KPI {raw.id!r}: {' and '.join(topics)} are marks of one entity and must be "
                   "events of one topic, not " + " and ".join(sorted(set(topics.values()))))
    if raw.open_items and (raw.kind != "duration" or raw.unit != "seconds"):
        raise fail([*here, "open_items"], "open_items is only for durations in seconds")
    if raw.min_samples < 1:
        raise fail([*here, "min_samples"], f"KPI {raw.id!r}: min_samples must be at least 1")
    names = tuple(raw.windows) if raw.windows is not None else tuple(windows)
    for name in names:
        if name not in windows:
            raise fail([*here, "windows"], f"KPI {raw.id!r}: unknown window {name!r}")
    statistic, quantile, threshold = "mean", None, None
    if isinstance(raw.statistic, dict):
        if set(raw.statistic) != {"within"}:
            raise fail([*here, "statistic"], "statistic mapping must be {within: SECONDS}")
        statistic, threshold = "share_within", round(raw.statistic["within"] * 1000)
    elif raw.statistic != "mean":
        pct = _PERCENTILE_RE.match(raw.statistic)
        if not pct or not 0 < float(pct.group(1)) < 100:
            raise fail([*here, "statistic"],
                       f"statistic {raw.statistic!r}: use mean, pNN or {{within: SECONDS}}")
        statistic, quantile = raw.statistic, float(pct.group(1)) / 100
    if raw.kind != "duration" and statistic != "mean":
        raise fail([*here, "statistic"], f"statistic {raw.statistic!r} is only for durations")
    if raw.miss is not None and statistic != "share_within":
        raise fail([*here, "miss"], "'miss' only makes sense with statistic {within: SECONDS}")
    horizon = None
    if raw.horizon is not None:
        try:
            horizon = duration_ms(raw.horizon)
        except ValueError as exc:
            raise fail([*here, "horizon"], str(exc)) from None
    return Kpi(
        id=raw.id, title=raw.title, kind=raw.kind, unit=raw.unit, better=raw.better,
        target=float(raw.target), min_samples=raw.min_samples, windows=names,
        description=raw.description.strip(), start=_match(raw.start), stop=_match(raw.stop),
        miss=_match(raw.miss), statistic=statistic, quantile=quantile, threshold_ms=threshold,
        numerator=_match(raw.numerator), denominator=_match(raw.denominator),
        source=_match(raw.source), field=raw.field, follow=_match(raw.follow), link=raw.link,
        horizon_ms=horizon, due=_match(raw.due), done=_match(raw.done),
        open_items=raw.open_items, judge=_judge_params(judge, raw.judge, fail, [*here, "judge"]),
    )


def load_catalog(path: Path) -> Catalog:
    """Load and check ``kpis.yaml``; raise ConfigError naming file and line."""
    data, node = _load_yaml(path)
    fail = _Fail(path, node)
    try:
        raw = msgspec.convert(data, _Catalog)
    except msgspec.ValidationError as exc:
        raise fail(_split_path(str(exc)), str(exc)) from None
    windows: dict[str, Window] = {}
    for name, spec in raw.windows.items():
        if not _WINDOW_NAME_RE.match(name):
            raise fail(["windows", name], f"window name {name!r} must be 1-32 of letters, digits, '_'")
        try:
            length, resolution = duration_ms(spec.length), duration_ms(spec.resolution)
        except ValueError as exc:
            raise fail(["windows", name], str(exc)) from None
        if resolution <= 0 or length <= 0 or length % resolution:
            raise fail(["windows", name],
                       f"window {name!r}: length must be a positive multiple of resolution")
        windows[name] = Window(name, length, resolution)
    if not windows:
        raise fail(["windows"], "at least one window is needed")
    kpis: list[Kpi] = []
    seen: set[str] = set()
    judge = _judge_params(JudgeParams(), raw.judge, fail, ["judge"])
    for i, spec_kpi in enumerate(raw.kpis):
        kpi = _resolve_kpi(i, spec_kpi, windows, fail, judge)
        if kpi.id in seen:
            raise fail(["kpis", i, "id"], f"duplicate KPI id {kpi.id!r}")
        seen.add(kpi.id)
        kpis.append(kpi)
    try:
        retention = duration_ms(raw.settings.entity_retention)
    except ValueError as exc:
        raise fail(["settings", "entity_retention"], str(exc)) from None
    exported = tuple(raw.settings.export_windows or ())
    for name in exported:
        if name not in windows:
            raise fail(["settings", "export_windows"], f"unknown window {name!r}")
    try:
        ZoneInfo(raw.settings.report_timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise fail(["settings", "report_timezone"],
                   f"unknown time zone {raw.settings.report_timezone!r}") from None
    if raw.settings.report_months < 13:
        raise fail(["settings", "report_months"],
                   "report_months must be at least 13 (a year and its month over month)")
    return Catalog(windows, tuple(kpis), retention, str(path), exported,
                   raw.settings.report_timezone, raw.settings.report_months)


def load_partners(path: Path, catalog: Catalog) -> Partners:
    """Load and check ``partners.yaml`` against the catalog's KPI ids."""
    data, node = _load_yaml(path)
    fail = _Fail(path, node)
    try:
        raw = msgspec.convert(data, _Partners)
    except msgspec.ValidationError as exc:
        raise fail(_split_path(str(exc)), str(exc)) from None
    ids = {k.id for k in catalog.kpis}
    if raw.default_tier not in TIERS:
        raise fail(["default_tier"], f"unknown tier {raw.default_tier!r}; tiers are {TIERS}")
    for tier, spec in raw.tiers.items():
        if tier not in TIERS:
            raise fail(["tiers", tier], f"unknown tier {tier!r}; tiers are {TIERS}")
        if set(spec) - {"targets"}:
            raise fail(["tiers", tier], f"tier {tier!r} takes only 'targets'")
        for kpi_id in spec.get("targets", {}):
            if kpi_id not in ids:
                raise fail(["tiers", tier, "targets", kpi_id], f"unknown KPI {kpi_id!r}")
    partner_tier: dict[str, str] = {}
    partner_targets: dict[str, dict[str, float]] = {}
    names: dict[str, str] = {}
    for i, p in enumerate(raw.partners):
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z", p.id):
            raise fail(["partners", i, "id"], f"partner id {p.id!r} is not a valid partner_id")
        if p.id in partner_tier:
            raise fail(["partners", i, "id"], f"duplicate partner {p.id!r}")
        if p.tier not in TIERS:
            raise fail(["partners", i, "tier"], f"unknown tier {p.tier!r}; tiers are {TIERS}")
        for kpi_id in p.targets:
            if kpi_id not in ids:
                raise fail(["partners", i, "targets", kpi_id], f"unknown KPI {kpi_id!r}")
        partner_tier[p.id] = p.tier
        partner_targets[p.id] = dict(p.targets)
        names[p.id] = p.name or p.id
    return Partners(
        default_tier=raw.default_tier, closed=raw.closed,
        tier_targets={t: dict(s.get("targets", {})) for t, s in raw.tiers.items()},
        partner_tier=partner_tier, partner_targets=partner_targets, names=names,
        report=_report_policy(raw.report, ids, fail),
    )


def _report_policy(raw: _Report | None, ids: set[str], fail: _Fail) -> ReportPolicy:
    if raw is None:
        return ReportPolicy()
    here: list[str | int] = ["report"]
    if not raw.bands:
        raise fail([*here, "bands"], "at least one band is needed")
    seen: set[str] = set()
    for i, band in enumerate(raw.bands):
        if band.id in seen:
            raise fail([*here, "bands", i, "id"], f"duplicate band {band.id!r}")
        seen.add(band.id)
    for kpi_id, weight in raw.weights.items():
        if kpi_id not in ids:
            raise fail([*here, "weights", kpi_id], f"unknown KPI {kpi_id!r}")
        if weight < 0:
            raise fail([*here, "weights", kpi_id], "weights cannot be negative")
    if raw.attainment_cap <= 0:
        raise fail([*here, "attainment_cap"], "attainment_cap must be positive")
    if (raw.floor is None) != (raw.floor_band is None):
        raise fail([*here, "floor"], "floor and floor_band go together")
    if raw.floor_band is not None and raw.floor_band not in seen:
        raise fail([*here, "floor_band"], f"unknown band {raw.floor_band!r}")
    bands = sorted((Band(b.id, b.min_score, b.adjustment, b.label or b.id) for b in raw.bands),
                   key=lambda b: -b.min_score)
    return ReportPolicy(tuple(bands), raw.attainment_cap, dict(raw.weights), raw.floor,
                        raw.floor_band)


def load_config(config_dir: Path | None = None) -> tuple[Catalog, Partners]:
    """Load ``kpis.yaml`` and ``partners.yaml`` from a config directory."""
    base = config_dir or DEFAULT_CONFIG_DIR
    catalog = load_catalog(base / "kpis.yaml")
    return catalog, load_partners(base / "partners.yaml", catalog)


assert set(TOPICS) == set(_EVENT_TYPES)
