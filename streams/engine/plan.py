"""The catalog compiled into routes: per (topic, type), the steps an event takes, in catalog order.

Three kinds of step, built once per engine (``__slots__`` records, read on every event):
:class:`MarkStep` updates a mark kept on entities, :class:`CountStep` counts the event itself,
:class:`FieldStep` adds a numeric field's value. Each KPI kind (:mod:`streams.engine.kinds`)
says which steps it needs through a :class:`PlanBuilder`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any, Final, Literal

from streams.config.catalog import Condition, Match
from streams.engine.model import UNSET
from streams.ingest.contract import ENTITY_FIELD

MARK: Final[Literal[0]] = 0
COUNT: Final[Literal[1]] = 1
FIELD: Final[Literal[2]] = 2


@dataclass(slots=True)
class Slot:
    """One mark kept on entities: the earliest/latest time of the events of one selector.

    KPIs that look at the same events of the same entity share the slot (the three
    open-to-status KPIs share 'first contacted', four KPIs share 'first resolved'), so each
    event updates each mark once, then recomputes the samples of the KPIs reading it."""

    topic: str
    type: str
    where: tuple[Condition, ...]
    entity_topic: str
    entity_field: str
    reducer: str  # 'min' (earliest wins) | 'max' (latest wins) | 'set' (every time)
    extra: str
    """'' | 'due' (the due date) | 'done' (the UTC offset) | 'channel' (the event's channel): kept
    with the time; 'value' (with reducer 'set'): every event's (time, ``field`` value, id)."""
    field: str = ""
    """The event field an extra 'value' keeps."""
    index: int = 0
    """Position in the entity record (0 is the record's last event time)."""
    unset: Any = None
    """The record's unset mark: None, or :data:`UNSET` on a packed topic (set after compiling)."""
    deps: list[tuple[int, int]] = dataclass_field(default_factory=list)
    """(kpi index, position of the KPI's selector among the (topic, type) selectors)."""
    gates: list[tuple[int, str] | None] = dataclass_field(default_factory=list)
    """Per dep: a per-channel KPI's (channel slot index, channel), None for any other KPI (set
    after compiling). A per-channel KPI has no sample on an entity of another channel, so a mark
    moving on it need not ask (each of the 7 channels of a KPI would, at every mark change)."""
    gated: bool = False
    """Whether any dep is a per-channel KPI."""
    gates_at: int = 0
    """The index of the channel mark its gated deps read (in the same entity record)."""
    pauses: frozenset[str] = frozenset()
    """A 'pause' slot (extra): the event types that pause (the others it is routed resume)."""


class MarkStep:
    """Update ``slot``'s mark on the event's entity (events ``matches`` lets through)."""

    __slots__ = ("kind", "matches", "slot", "where")
    kind: Literal[0]

    def __init__(self, match: Match, slot: Slot) -> None:
        self.kind = MARK
        self.where = match.where
        self.matches: Callable[[Any], bool] = match.compiled()
        self.slot = slot


class CountStep:
    """Count the event as a sample ``(n, s)`` of KPI ``kpi`` at its own time."""

    __slots__ = ("kind", "kpi", "matches", "n", "position", "s", "where")
    kind: Literal[1]

    def __init__(self, match: Match, kpi: int, n: int, s: int, position: int) -> None:
        self.kind = COUNT
        self.where = match.where
        self.matches: Callable[[Any], bool] = match.compiled()
        self.kpi = kpi
        self.n = n
        self.s = s
        self.position = position
        """Orders the early-warning updates of one event the way the selectors are listed in
        the catalog."""


class FieldStep:
    """Add the event's numeric ``field`` as a sample of KPI ``kpi`` (mean_field)."""

    __slots__ = ("field", "kind", "kpi", "matches", "position", "where")
    kind: Literal[2]

    def __init__(self, match: Match, kpi: int, field: str, position: int) -> None:
        self.kind = FIELD
        self.where = match.where
        self.matches: Callable[[Any], bool] = match.compiled()
        self.kpi = kpi
        self.field = field
        self.position = position


Step = MarkStep | CountStep | FieldStep
Routes = dict[tuple[str, str], list[Step]]
"""(topic, event type) -> the steps an event of it takes, in catalog order."""


def entity_of(match: Match) -> str:
    """The field naming the entity of ``match``'s events."""
    entity = ENTITY_FIELD[match.topic]
    if entity is None:
        raise ValueError(f"{match.topic} events have no entity to track")
    return entity


class PlanBuilder:
    """Collects the routes and entity slots of a catalog, KPI by KPI."""

    def __init__(self) -> None:
        self.routes: Routes = {}
        self.slots: dict[tuple[Any, ...], Slot] = {}
        self.per_topic: dict[str, int] = {}
        """Entity topic -> marks its records hold."""
        self.open_slots: dict[int, tuple[int, int, str]] = {}
        """open_items KPIs: kpi index -> (start slot, stop slot, entity topic)."""
        self.open_pauses: dict[int, int] = {}
        """open_items KPIs: kpi index -> the index of its pause mark (0: none)."""
        self.channel_marks: dict[int, tuple[int, str]] = {}
        """Per-channel KPIs: kpi index -> (the channel slot it reads, its channel)."""
        self._positions: dict[tuple[str, str], int] = {}

    def _position(self, match: Match) -> int:
        key = (match.topic, match.type)
        self._positions[key] = self._positions.get(key, -1) + 1
        return self._positions[key]

    def mark(self, k: int, match: Match, entity_topic: str | None = None,
             entity_field: str | None = None, reducer: str = "min", extra: str = "",
             field: str = "") -> int:
        """KPI ``k`` reads a mark of ``match``'s events (on their own entity unless told):
        its index in the entity record, shared with any KPI reading the same mark."""
        entity_topic = match.topic if entity_topic is None else entity_topic
        entity_field = entity_of(match) if entity_field is None else entity_field
        key = (match.topic, match.type, match.where, entity_topic, entity_field, reducer, extra,
               field)
        slot = self.slots.get(key)
        if slot is None:
            self.per_topic[entity_topic] = self.per_topic.get(entity_topic, 0) + 1
            slot = self.slots[key] = Slot(match.topic, match.type, match.where, entity_topic,
                                          entity_field, reducer, extra, field,
                                          self.per_topic[entity_topic])
            self.routes.setdefault((match.topic, match.type), []).append(MarkStep(match, slot))
        pos = self._position(match)
        if all(dep != k for dep, _ in slot.deps):  # a KPI reading one slot twice resamples once
            slot.deps.append((k, pos))
        return slot.index

    def pause_mark(self, k: int, pause: tuple[Match, ...], resume: tuple[Match, ...]) -> int:
        """KPI ``k`` reads the pause and resume events of its entity as one mark (extra
        'pause': every event's ``(time, 1 pause / 0 resume)``), shared by the KPIs that pause
        on the same events: its index in the entity record."""
        topic = pause[0].topic
        key = ("pause", pause, resume)
        slot = self.slots.get(key)
        if slot is None:
            self.per_topic[topic] = self.per_topic.get(topic, 0) + 1
            slot = self.slots[key] = Slot(topic, "pause", (), topic, entity_of(pause[0]), "set",
                                          "pause", "", self.per_topic[topic],
                                          pauses=frozenset(m.type for m in pause))
            for match in (*pause, *resume):
                self.routes.setdefault((match.topic, match.type), []).append(
                    MarkStep(match, slot))
        pos = self._position(pause[0])
        if all(dep != k for dep, _ in slot.deps):
            slot.deps.append((k, pos))
        return slot.index

    def count(self, k: int, match: Match, n: int, s: int) -> None:
        """KPI ``k`` counts each of ``match``'s events as ``(n, s)``."""
        self.routes.setdefault((match.topic, match.type), []).append(
            CountStep(match, k, n, s, self._position(match)))

    def add_field(self, k: int, match: Match, name: str) -> None:
        """KPI ``k`` adds field ``name`` of each of ``match``'s events."""
        self.routes.setdefault((match.topic, match.type), []).append(
            FieldStep(match, k, name, self._position(match)))

    def open_item(self, k: int, start: int, stop: int, entity_topic: str, pause: int = 0) -> None:
        """KPI ``k`` lists its entities with a start mark and no stop mark (``open_items``);
        ``pause``: the index of its pause mark (0: none), which their ages leave out."""
        self.open_slots[k] = (start, stop, entity_topic)
        self.open_pauses[k] = pause

    def packed_topics(self) -> dict[str, bool]:
        """Entity topic -> whether its marks are all plain times (its records packed).

        A topic whose marks are all plain times keeps its records packed: an int64 array is
        8 B per mark against a list slot and an int object (8 + 32 B), for every entity of
        the retention (the largest share of a partner's memory)."""
        for slot in self.slots.values():
            slot.gates = [self.channel_marks.get(k) for k, _ in slot.deps]
            at = {gate[0] for gate in slot.gates if gate is not None}
            assert len(at) <= 1, "one entity record has one channel mark"
            slot.gated = bool(at)
            slot.gates_at = at.pop() if at else 0
        plain = {topic: all(not s.extra and s.reducer != "set"
                            for s in self.slots.values() if s.entity_topic == topic)
                 for topic in self.per_topic}
        for slot in self.slots.values():
            slot.unset = UNSET if plain[slot.entity_topic] else None
        return plain
