"""The KPI catalog (kpis.yaml): which windows, which KPIs, the engine's settings; and
:func:`load_config`, which loads it with the partner file.

The KPI record and its checks live in :mod:`streams.config.kpis`, the partner file in
:mod:`streams.config.partners`, the YAML loading and its file:line errors in
:mod:`streams.config.yamlfile`; their public names are importable from here too, as the engine,
the outputs and the generators import them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from streams.config.judging import JudgeParams
from streams.config.kpis import (
    Condition,
    Kpi,
    Match,
    RawJudge,
    RawKpi,
    channel_kpis,
    judge_params,
    resolve_kpi,
    resolve_sla,
)
from streams.config.partners import TIERS, Band, Partners, ReportPolicy, load_partners
from streams.config.yamlfile import ConfigError, Fail, YamlFile, duration_ms, load_yaml

__all__ = [
    "DEFAULT_CONFIG_DIR", "TIERS", "Band", "Catalog", "Condition", "ConfigError", "Kpi", "Match",
    "Partners", "ReportPolicy", "Window", "duration_ms", "load_catalog", "load_config", "load_partners",
]

_SOURCE_CONFIG = Path(__file__).resolve().parents[2] / "config"  # the checkout's config/
# From a source checkout (editable install) the repo's config/; otherwise ./config.
DEFAULT_CONFIG_DIR: Final = _SOURCE_CONFIG if _SOURCE_CONFIG.is_dir() else Path("config")

# Window names become label values and are written into generated PromQL selectors
# (window="..."): a quote or brace in one would rewrite the rules and dashboards.
_WINDOW_NAME_RE: Final = re.compile(r"^[A-Za-z0-9_]{1,32}\Z")


# --- the YAML shapes (validated by msgspec) ---------------------------------
class _Window(msgspec.Struct, forbid_unknown_fields=True):
    length: str | int
    resolution: str | int


class _Settings(msgspec.Struct, forbid_unknown_fields=True):
    entity_retention: str | int = "90d"
    export_windows: list[str] | None = None
    channel_windows: list[str] | None = None
    report_timezone: str = "UTC"
    report_months: int = 25
    month_close: str | int = "5d"


class _Catalog(msgspec.Struct, forbid_unknown_fields=True):
    version: Literal[1]
    windows: dict[str, _Window]
    kpis: list[RawKpi]
    settings: _Settings = msgspec.field(default_factory=_Settings)
    judge: RawJudge = msgspec.field(default_factory=RawJudge)


# --- the resolved, engine-facing model ----------------------------------------
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
    report_months: int = 25
    """Complete calendar months kept per partner and KPI besides the current one: 25, so a
    year's card can be set beside the year before it, month by month."""
    channel_kpis: tuple[Kpi, ...] = ()
    """One KPI per channel of each ``by: [channel]`` KPI (:func:`streams.config.kpis.channel_kpis`):
    counted by the engine beside ``kpis``, exported as the per-channel series, never judged."""
    channel_windows: tuple[str, ...] = ()
    """Windows the per-channel KPIs are counted in (all of their KPI's when empty): each costs
    two series per partner, KPI and channel with samples."""
    month_close_ms: int | None = 5 * 86_400_000
    """A calendar month closes this long after its end: its card is frozen (what is paid on),
    and later events for it are restatements beside it, never silent edits (None: never)."""

    @property
    def counted(self) -> tuple[Kpi, ...]:
        """What the engine counts: the catalog's KPIs, then the per-channel ones."""
        return self.kpis + self.channel_kpis

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


# --- loading ------------------------------------------------------------------
def _windows(raw: dict[str, _Window], fail: Fail) -> dict[str, Window]:
    windows: dict[str, Window] = {}
    for name, spec in raw.items():
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
    return windows


def _kpis(raw: _Catalog, windows: tuple[str, ...], fail: Fail) -> tuple[Kpi, ...]:
    kpis: list[Kpi] = []
    seen: set[str] = set()
    judge = judge_params(JudgeParams(), raw.judge, fail, ["judge"])
    for i, spec_kpi in enumerate(raw.kpis):
        kpi = resolve_kpi(i, spec_kpi, windows, fail, judge)
        if kpi.id in seen:
            raise fail(["kpis", i, "id"], f"duplicate KPI id {kpi.id!r}")
        seen.add(kpi.id)
        kpis.append(kpi)
    return tuple(resolve_sla(kpis, list(raw.kpis), fail))


def _catalog(doc: YamlFile, raw: _Catalog) -> Catalog:
    """The catalog with ``settings:`` checked, once windows and KPIs are."""
    fail = doc.error
    windows = _windows(raw.windows, fail)
    kpis = _kpis(raw, tuple(windows), fail)
    settings = raw.settings
    try:
        retention = duration_ms(settings.entity_retention)
    except ValueError as exc:
        raise fail(["settings", "entity_retention"], str(exc)) from None
    exported = tuple(settings.export_windows or ())
    for name in exported:
        if name not in windows:
            raise fail(["settings", "export_windows"], f"unknown window {name!r}")
    by_channel = tuple(settings.channel_windows or ())
    for name in by_channel:
        if name not in windows:
            raise fail(["settings", "channel_windows"], f"unknown window {name!r}")
    try:
        ZoneInfo(settings.report_timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise fail(["settings", "report_timezone"],
                   f"unknown time zone {settings.report_timezone!r}") from None
    if settings.report_months < 13:
        raise fail(["settings", "report_months"],
                   "report_months must be at least 13 (a year and its month over month)")
    try:
        close = duration_ms(settings.month_close)
    except ValueError as exc:
        raise fail(["settings", "month_close"], str(exc)) from None
    if not 0 < close <= 28 * 86_400_000:
        raise fail(["settings", "month_close"], "month_close must be more than 0 and at most "
                                                "28d (the grace period after a month's end)")
    return Catalog(windows, kpis, retention, str(doc.path), exported,
                   settings.report_timezone, settings.report_months,
                   channel_kpis(kpis, by_channel or None), by_channel, close)


def load_catalog(path: Path) -> Catalog:
    """Load and check ``kpis.yaml``; raise ConfigError naming file and line."""
    doc = load_yaml(path)
    return _catalog(doc, doc.convert(_Catalog))


def load_config(config_dir: Path | None = None) -> tuple[Catalog, Partners]:
    """Load ``kpis.yaml`` and ``partners.yaml`` from a config directory."""
    base = config_dir or DEFAULT_CONFIG_DIR
    catalog = load_catalog(base / "kpis.yaml")
    return catalog, load_partners(base / "partners.yaml", catalog)
