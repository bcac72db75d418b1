"""The partner file (partners.yaml): tiers, target overrides, an open or closed list, and the
report card's reward bands.

Contract terms change (a target tightened in July, a partner promoted to premier, a new band
table for the year), and a month already paid must keep the terms it was paid on. So a tier, a
target, a weight and the whole ``report:`` policy may be given as a list of versions, each with
the month it takes ``effective`` from; a month is scored with the versions in force in it (the
first version also covers every month before it). Live judging, the wall and the exported
targets use the versions in force in the month the file was loaded in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Generic, Literal, TypeVar

import msgspec

from streams.config.calendars import BusinessCalendar, CalendarError, calendar_from_yaml
from streams.config.kpis import Kpi
from streams.config.yamlfile import Fail, Where, load_yaml
from streams.ingest.contract import PARTNER_ID_RE

if TYPE_CHECKING:  # the catalog module loads both files, so it imports this one
    from streams.config.catalog import Catalog

TIERS: Final = ("premier", "business", "select", "authorized")


_T = TypeVar("_T")
_V = TypeVar("_V")


# --- the YAML shapes (validated by msgspec) ---------------------------------
class _DatedNumber(msgspec.Struct, forbid_unknown_fields=True):
    value: float
    effective: Any = None
    """'2026-07' (or a first of month, 2026-07-01); None on the first version only."""


class _DatedTier(msgspec.Struct, forbid_unknown_fields=True):
    value: str
    effective: Any = None


Number = float | list[_DatedNumber]
"""A target or weight: one value, or its versions."""


class _Partner(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    tier: str | list[_DatedTier]
    name: str = ""
    targets: dict[str, Number] = {}
    calendar: str | None = None
    """A name from ``calendars:``: the partner's business hours (else its tier's, else the
    default calendar)."""


class _Tier(msgspec.Struct, forbid_unknown_fields=True):
    targets: dict[str, Number] = {}
    calendar: str | None = None


class _Band(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    min_score: float
    adjustment: float = 0.0
    label: str = ""


class _Report(msgspec.Struct, forbid_unknown_fields=True):
    bands: list[_Band]
    attainment_cap: float = 1.2
    weights: dict[str, Number] = {}
    floor: float | None = None
    floor_band: str | None = None
    integrity_withholds: list[str] = []
    effective: Any = None
    """In a list of policies: the month this one takes effect (None on the first only)."""


class _Partners(msgspec.Struct, forbid_unknown_fields=True):
    version: Literal[1]
    default_tier: str = "authorized"
    closed: bool = False
    calendars: dict[str, dict[str, Any]] = {}
    default_calendar: str | None = None
    tiers: dict[str, _Tier] = {}
    partners: list[_Partner] = []
    report: _Report | list[_Report] | None = None


# --- the resolved model ---------------------------------------------------------
def month_index(year: int, month: int) -> int:
    """The month index used throughout (year * 12 + month - 1), as the engine's MonthCalendar."""
    return year * 12 + month - 1


def month_name(index: int) -> str:
    """'2026-07' for a month index."""
    year, m0 = divmod(index, 12)
    return f"{year:04d}-{m0 + 1:02d}"


@dataclass(frozen=True, slots=True)
class Version(Generic[_T]):
    """One version of a dated term: its value, and the month it takes effect from (None: the
    first version, in force in every month before the next one)."""

    value: _T
    effective: int | None = None

    @property
    def since(self) -> str | None:
        """'2026-07', or None for an undated first version."""
        return None if self.effective is None else month_name(self.effective)


@dataclass(frozen=True, slots=True)
class Dated(Generic[_T]):
    """The versions of one term, oldest first (checked at load: effective months increase)."""

    versions: tuple[Version[_T], ...]

    def at(self, month: int) -> Version[_T]:
        """The version in force in ``month``: the last one effective by then, else the first."""
        found = self.versions[0]
        for version in self.versions[1:]:
            if version.effective is not None and version.effective <= month:
                found = version
        return found

    def map(self, fn: Callable[[_T], _V]) -> Dated[_V]:
        """The same dates with every value transformed."""
        return Dated(tuple(Version(fn(v.value), v.effective) for v in self.versions))


@dataclass(frozen=True, slots=True)
class TargetSource:
    """Where a partner's target for a KPI in a month comes from, for the card to say."""

    value: float
    level: str
    """'partner' (its own override), 'tier' (its tier's) or 'catalog' (the KPI's default)."""
    since: str | None = None
    """The month the version in force took effect ('2026-07'), None when undated."""

    def describe(self) -> str:
        """'tier premier since 2026-07', 'catalog'."""
        return self.level if self.since is None else f"{self.level} since {self.since}"


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
    dated_weights: dict[str, Dated[float]] = field(default_factory=dict)
    """KPI id -> the versions of its weight, for weights given with ``effective`` months."""

    def weight(self, kpi_id: str, month: int | None = None) -> float:
        """The KPI's weight in the score (in ``month``, a month index, else now)."""
        dated = self.dated_weights.get(kpi_id) if month is not None else None
        if dated is not None and month is not None:
            return dated.at(month).value
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
class History:
    """The dated terms of the partner file: only terms given with versions are here (the rest
    have one value, in :class:`Partners`' flat maps)."""

    tiers: dict[str, Dated[str]] = field(default_factory=dict)
    """partner -> its tier's versions."""
    partner_targets: dict[tuple[str, str], Dated[float]] = field(default_factory=dict)
    """(partner, kpi id) -> the versions of its own target."""
    tier_targets: dict[tuple[str, str], Dated[float]] = field(default_factory=dict)
    """(tier, kpi id) -> the versions of the tier's target."""
    policies: Dated[ReportPolicy] | None = None
    """The report policy's versions (None: one policy, ``Partners.report``)."""


@dataclass(frozen=True, slots=True)
class Partners:
    """The partner file: tiers and target overrides; open or closed list.

    The flat maps hold the terms in force in ``loaded_month`` (what live judging uses);
    :attr:`history` the dated ones, which the ``month=`` lookups read."""

    default_tier: str
    closed: bool
    tier_targets: dict[str, dict[str, float]]
    partner_tier: dict[str, str]
    partner_targets: dict[str, dict[str, float]]
    names: dict[str, str] = field(default_factory=dict)
    report: ReportPolicy = field(default_factory=ReportPolicy)
    history: History = field(default_factory=History)
    loaded_month: int | None = None
    """The month index the flat maps were resolved for (None when nothing is dated)."""
    calendars: dict[str, BusinessCalendar] = field(default_factory=dict)
    """Name -> business calendar (``calendars:``)."""
    partner_calendar: dict[str, str] = field(default_factory=dict)
    """Partner -> the name of its own calendar."""
    tier_calendar: dict[str, str] = field(default_factory=dict)
    """Tier -> the name of its calendar."""
    default_calendar: str | None = None
    """The calendar of partners whose own and tier's say nothing."""

    def calendar_name(self, partner: str) -> str | None:
        """The name of the partner's business calendar: its own, its tier's, the default."""
        return (self.partner_calendar.get(partner) or self.tier_calendar.get(self.tier(partner))
                or self.default_calendar)

    def calendar(self, partner: str) -> BusinessCalendar | None:
        """The partner's business calendar (None: none given, at any level)."""
        name = self.calendar_name(partner)
        return None if name is None else self.calendars[name]

    def tier(self, partner: str, month: int | None = None) -> str:
        """The partner's tier (in ``month``, a month index; else now); unknown partners get the
        default tier."""
        dated = self.history.tiers.get(partner) if month is not None else None
        if dated is not None and month is not None:
            return dated.at(month).value
        return self.partner_tier.get(partner, self.default_tier)

    def tier_since(self, partner: str, month: int) -> str | None:
        """The month the partner's tier in ``month`` took effect (None when undated)."""
        dated = self.history.tiers.get(partner)
        return dated.at(month).since if dated is not None else None

    def policy(self, month: int | None = None) -> ReportPolicy:
        """The report policy in force in ``month`` (else now)."""
        dated = self.history.policies
        if month is None or dated is None:
            return self.report
        return dated.at(month).value

    def policy_since(self, month: int) -> str | None:
        """The month the policy in force in ``month`` took effect (None when undated)."""
        dated = self.history.policies
        return dated.at(month).since if dated is not None else None

    def target_source(self, partner: str, kpi: Kpi, month: int) -> TargetSource:
        """The target in force in ``month`` and where it comes from."""
        history = self.history
        dated = history.partner_targets.get((partner, kpi.id))
        if dated is not None:
            v = dated.at(month)
            return TargetSource(v.value, "partner", v.since)
        own = self.partner_targets.get(partner)
        if own and kpi.id in own:
            return TargetSource(own[kpi.id], "partner")
        tier = self.tier(partner, month)
        dated = history.tier_targets.get((tier, kpi.id))
        if dated is not None:
            v = dated.at(month)
            return TargetSource(v.value, f"tier {tier}", v.since)
        tiered = self.tier_targets.get(tier)
        if tiered and kpi.id in tiered:
            return TargetSource(tiered[kpi.id], f"tier {tier}")
        return TargetSource(kpi.target, "catalog")

    def known(self, partner: str) -> bool:
        """True when the partner is listed in the file."""
        return partner in self.partner_tier

    def target(self, partner: str, kpi: Kpi, month: int | None = None) -> float:
        """Partner override, else tier override, else the catalog default (in ``month``, a
        month index, else now)."""
        if month is not None:
            return self.target_source(partner, kpi, month).value
        own = self.partner_targets.get(partner)
        if own and kpi.id in own:
            return own[kpi.id]
        tiered = self.tier_targets.get(self.tier(partner))
        if tiered and kpi.id in tiered:
            return tiered[kpi.id]
        return kpi.target


# --- loading ------------------------------------------------------------------
def _effective(raw: Any, fail: Fail, here: Where) -> int:
    """The month index of an ``effective`` value: '2026-07', or a first of month."""
    if isinstance(raw, date):
        if raw.day != 1:
            raise fail(here, f"effective {raw.isoformat()}: terms take effect from a month's "
                             "first day; give the month, like '2026-07'")
        return month_index(raw.year, raw.month)
    text = str(raw)
    year, sep, mon = text.partition("-")
    if sep and mon.endswith("-01"):
        mon = mon[:-3]
    if not (sep and len(year) == 4 and year.isdigit() and len(mon) == 2 and mon.isdigit()
            and 1 <= int(mon) <= 12):
        raise fail(here, f"effective {text!r} is not a month like '2026-07'")
    return month_index(int(year), int(mon))


def _versions(raw: list[Any], fail: Fail, here: Where) -> list[tuple[Any, int | None]]:
    """(raw version, effective month) of a list of versions, checked: not empty, only the
    first may leave ``effective`` out, effective months strictly increasing."""
    if not raw:
        raise fail(here, "an empty list of versions; give one value, or versions with "
                         "'effective' months")
    out: list[tuple[Any, int | None]] = []
    last: int | None = None
    for i, version in enumerate(raw):
        at = [*here, i, "effective"]
        if version.effective is None:
            if i > 0:
                raise fail(at, "every version but the first needs an 'effective' month")
            out.append((version, None))
            continue
        month = _effective(version.effective, fail, at)
        if last is not None and month <= last:
            raise fail(at, "versions must be listed oldest first, each effective after the last")
        out.append((version, month))
        last = month
    return out


def _dated_number(raw: Number, fail: Fail, here: Where) -> Dated[float]:
    if not isinstance(raw, list):
        return Dated((Version(float(raw)),))
    return Dated(tuple(Version(float(v.value), m) for v, m in _versions(raw, fail, here)))


def _flat(values: dict[str, Dated[_T]], month: int) -> dict[str, _T]:
    return {key: dated.at(month).value for key, dated in values.items()}


def load_partners(path: Path, catalog: Catalog, today: date | None = None) -> Partners:
    """Load and check ``partners.yaml`` against the catalog's KPI ids. Dated terms resolve to
    the versions in force in ``today``'s month (the UTC date when not given) for live use."""
    doc = load_yaml(path)
    fail = doc.error
    raw = doc.convert(_Partners)
    day = today or datetime.now(UTC).date()
    now = month_index(day.year, day.month)
    ids = {k.id for k in catalog.kpis}
    tier_targets = _tier_targets(raw, ids, fail)
    calendars = _calendars(raw, fail)
    partner_calendar: dict[str, str] = {}
    partner_tier: dict[str, Dated[str]] = {}
    partner_targets: dict[str, dict[str, Dated[float]]] = {}
    names: dict[str, str] = {}
    for i, p in enumerate(raw.partners):
        if not PARTNER_ID_RE.match(p.id):
            raise fail(["partners", i, "id"], f"partner id {p.id!r} is not a valid partner_id")
        if p.id in partner_tier:
            raise fail(["partners", i, "id"], f"duplicate partner {p.id!r}")
        tiers = (Dated((Version(p.tier),)) if isinstance(p.tier, str) else
                 Dated(tuple(Version(v.value, m)
                             for v, m in _versions(p.tier, fail, ["partners", i, "tier"]))))
        for j, version in enumerate(tiers.versions):
            if version.value not in TIERS:
                at: Where = ["partners", i, "tier"]
                if not isinstance(p.tier, str):
                    at += [j, "value"]
                raise fail(at, f"unknown tier {version.value!r}; tiers are {TIERS}")
        own: dict[str, Dated[float]] = {}
        for kpi_id, value in p.targets.items():
            if kpi_id not in ids:
                raise fail(["partners", i, "targets", kpi_id], f"unknown KPI {kpi_id!r}")
            own[kpi_id] = _dated_number(value, fail, ["partners", i, "targets", kpi_id])
        partner_tier[p.id] = tiers
        partner_targets[p.id] = own
        names[p.id] = p.name or p.id
        if p.calendar is not None:
            _calendar_name(p.calendar, calendars, fail, ["partners", i, "calendar"])
            partner_calendar[p.id] = p.calendar
    policies = _report_policies(raw.report, ids, fail)
    history = History(
        tiers={p: d for p, d in partner_tier.items() if len(d.versions) > 1},
        partner_targets={(p, k): d for p, own in partner_targets.items() for k, d in own.items()
                         if len(d.versions) > 1},
        tier_targets={(t, k): d for t, spec in tier_targets.items() for k, d in spec.items()
                      if len(d.versions) > 1},
        policies=policies if len(policies.versions) > 1 else None,
    )
    dated = bool(history.tiers or history.partner_targets or history.tier_targets
                 or history.policies or any(v.dated_weights for v in
                                            (x.value for x in policies.versions)))
    result = Partners(
        default_tier=raw.default_tier, closed=raw.closed,
        tier_targets={t: _flat(spec, now) for t, spec in tier_targets.items()},
        partner_tier={p: d.at(now).value for p, d in partner_tier.items()},
        partner_targets={p: _flat(own, now) for p, own in partner_targets.items()},
        names=names, report=_weights_at(policies.at(now).value, now), history=history,
        loaded_month=now if dated else None, calendars=calendars,
        partner_calendar=partner_calendar,
        tier_calendar={t: spec.calendar for t, spec in raw.tiers.items()
                       if spec.calendar is not None},
        default_calendar=raw.default_calendar,
    )
    _check_business_clocks(result, catalog, fail)
    return result


def _calendars(raw: _Partners, fail: Fail) -> dict[str, BusinessCalendar]:
    """The named calendars, each checked; the tiers' and the default's names exist."""
    out: dict[str, BusinessCalendar] = {}
    for name, spec in raw.calendars.items():
        if not isinstance(spec, dict):
            raise fail(["calendars", name], f"calendar {name!r}: give timezone, hours, holidays")
        try:
            out[name] = calendar_from_yaml(spec, f"calendar {name!r}")
        except CalendarError as exc:
            raise fail(["calendars", name], str(exc)) from None
    for tier, tier_spec in raw.tiers.items():
        if tier_spec.calendar is not None:
            _calendar_name(tier_spec.calendar, out, fail, ["tiers", tier, "calendar"])
    if raw.default_calendar is not None:
        _calendar_name(raw.default_calendar, out, fail, ["default_calendar"])
    return out


def _calendar_name(name: str, calendars: dict[str, BusinessCalendar], fail: Fail,
                   here: Where) -> None:
    if name not in calendars:
        known = ", ".join(sorted(calendars)) or "none: add a calendars: section"
        raise fail(here, f"unknown calendar {name!r} (calendars: {known})")


def _check_business_clocks(partners: Partners, catalog: Catalog, fail: Fail) -> None:
    """A KPI on the business clock needs a calendar for every partner it may see: a listed
    partner's own or its tier's, and for partners not listed (the default tier) the default
    tier's or ``default_calendar``. Refused at load, not guessed at the first ticket."""
    business = [k.id for k in catalog.kpis if k.clock == "business"]
    if not business:
        return
    for partner in partners.partner_tier:
        if partners.calendar(partner) is None:
            raise fail(["partners"], f"partner {partner!r} has no calendar, and KPIs "
                                     f"{', '.join(business)} count business time: give it (or "
                                     "its tier) a calendar, or set default_calendar")
    unlisted = partners.tier_calendar.get(partners.default_tier) or partners.default_calendar
    if not partners.closed and unlisted is None:
        raise fail(["default_calendar"], f"KPIs {', '.join(business)} count business time, and "
                                         f"partners not listed (tier {partners.default_tier!r}) "
                                         "have no calendar: set default_calendar or give that "
                                         "tier one")


def _weights_at(policy: ReportPolicy, month: int) -> ReportPolicy:
    """The policy with its dated weights' versions in force in ``month`` in the flat map."""
    if not policy.dated_weights:
        return policy
    return replace(policy, weights={**policy.weights, **_flat(policy.dated_weights, month)})


def _tier_targets(raw: _Partners, ids: set[str], fail: Fail) -> dict[str, dict[str, Dated[float]]]:
    if raw.default_tier not in TIERS:
        raise fail(["default_tier"], f"unknown tier {raw.default_tier!r}; tiers are {TIERS}")
    out: dict[str, dict[str, Dated[float]]] = {}
    for tier, spec in raw.tiers.items():
        if tier not in TIERS:
            raise fail(["tiers", tier], f"unknown tier {tier!r}; tiers are {TIERS}")
        targets: dict[str, Dated[float]] = {}
        for kpi_id, value in spec.targets.items():
            if kpi_id not in ids:
                raise fail(["tiers", tier, "targets", kpi_id], f"unknown KPI {kpi_id!r}")
            targets[kpi_id] = _dated_number(value, fail, ["tiers", tier, "targets", kpi_id])
        out[tier] = targets
    return out


def _report_policies(raw: _Report | list[_Report] | None, ids: set[str],
                     fail: Fail) -> Dated[ReportPolicy]:
    if raw is None:
        return Dated((Version(ReportPolicy()),))
    if not isinstance(raw, list):
        if raw.effective is not None:
            raise fail(["report", "effective"], "'effective' dates a version in a list of "
                                                "policies; one policy needs none")
        return Dated((Version(_report_policy(raw, ids, fail, ["report"])),))
    return Dated(tuple(Version(_report_policy(r, ids, fail, ["report", i]), m)
                       for i, (r, m) in enumerate(_versions(raw, fail, ["report"]))))


def _report_policy(raw: _Report, ids: set[str], fail: Fail, here: Where) -> ReportPolicy:
    if not raw.bands:
        raise fail([*here, "bands"], "at least one band is needed")
    seen: set[str] = set()
    for i, band in enumerate(raw.bands):
        if band.id in seen:
            raise fail([*here, "bands", i, "id"], f"duplicate band {band.id!r}")
        seen.add(band.id)
    weights: dict[str, Dated[float]] = {}
    for kpi_id, weight in raw.weights.items():
        if kpi_id not in ids:
            raise fail([*here, "weights", kpi_id], f"unknown KPI {kpi_id!r}")
        weights[kpi_id] = _dated_number(weight, fail, [*here, "weights", kpi_id])
        if any(v.value < 0 for v in weights[kpi_id].versions):
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
    # weights given as versions: the flat map holds the first until load_partners resolves
    # the policy in force now (ReportPolicy.weight(kpi, month) reads the versions)
    flat = {k: d.versions[0].value for k, d in weights.items()}
    dated = {k: d for k, d in weights.items() if len(d.versions) > 1}
    return ReportPolicy(tuple(bands), raw.attainment_cap, flat, raw.floor,
                        raw.floor_band, frozenset(raw.integrity_withholds), dated)
