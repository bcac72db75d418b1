"""The partner file (partners.yaml): tiers, target overrides, an open or closed list, and the
report card's reward bands."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

import msgspec

from streams.config.kpis import Kpi
from streams.config.yamlfile import Fail, Where, load_yaml
from streams.ingest.contract import PARTNER_ID_RE

if TYPE_CHECKING:  # the catalog module loads both files, so it imports this one
    from streams.config.catalog import Catalog

TIERS: Final = ("premier", "business", "select", "authorized")


# --- the YAML shapes (validated by msgspec) ---------------------------------
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
    integrity_withholds: list[str] = []


class _Partners(msgspec.Struct, forbid_unknown_fields=True):
    version: Literal[1]
    default_tier: str = "authorized"
    closed: bool = False
    tiers: dict[str, dict[str, dict[str, float]]] = {}
    partners: list[_Partner] = []
    report: _Report | None = None


# --- the resolved model ---------------------------------------------------------
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
    integrity_withholds: frozenset[str] = frozenset()
    """Bands a partner with an integrity flag raised in the month cannot be given: it gets the
    best band it qualifies for that is not among them (empty: flags never change the band)."""

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

    def withhold(self, band: Band | None, flagged: bool) -> Band | None:
        """``band`` (from :meth:`band_for`), or the best lower band not withheld when the partner
        has an integrity flag in the month (the lowest band is never withheld: checked at load)."""
        if band is None or not flagged or band.id not in self.integrity_withholds:
            return band
        return next((b for b in self.bands
                     if b.min_score <= band.min_score and b.id not in self.integrity_withholds),
                    None)


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
def load_partners(path: Path, catalog: Catalog) -> Partners:
    """Load and check ``partners.yaml`` against the catalog's KPI ids."""
    doc = load_yaml(path)
    fail = doc.error
    raw = doc.convert(_Partners)
    ids = {k.id for k in catalog.kpis}
    _check_tiers(raw, ids, fail)
    partner_tier: dict[str, str] = {}
    partner_targets: dict[str, dict[str, float]] = {}
    names: dict[str, str] = {}
    for i, p in enumerate(raw.partners):
        if not PARTNER_ID_RE.match(p.id):
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


def _check_tiers(raw: _Partners, ids: set[str], fail: Fail) -> None:
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


def _report_policy(raw: _Report | None, ids: set[str], fail: Fail) -> ReportPolicy:
    if raw is None:
        return ReportPolicy()
    here: Where = ["report"]
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
    for i, band_id in enumerate(raw.integrity_withholds):
        if band_id not in seen:
            raise fail([*here, "integrity_withholds", i],
                       f"unknown band {band_id!r}; bands are {', '.join(b.id for b in bands)}")
        if band_id == bands[-1].id:
            raise fail([*here, "integrity_withholds", i],
                       f"the lowest band {band_id!r} cannot be withheld: a flagged partner "
                       "would be left with no band")
    return ReportPolicy(tuple(bands), raw.attainment_cap, dict(raw.weights), raw.floor,
                        raw.floor_band, frozenset(raw.integrity_withholds))
