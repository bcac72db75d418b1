"""Rolling windows: per-resolution rings of buckets, running totals, and reading a window.

Every KPI sample is added to one bucket per window resolution (1 min buckets for 1h, 1 h buckets
for the longer windows by default). A window is the last ``length/resolution`` buckets, the
current one included; its value is computed from the sums, kept as running totals of its closed
buckets (slid as time passes) plus the current bucket, so reading a window costs the same
whatever its length.

Samples dated ahead of the partner's clock (a follow-up's decision at the end of its horizon,
days away) wait in a sparse list per bucket (``PartnerState.ahead``) until a read or the hourly
sweep reaches their bucket: a filled partner had 437 minute buckets and 168 hour buckets ahead,
each a full bucket of every KPI for the one or two KPIs in it (about 500 KiB).
"""

from __future__ import annotations

import array
import heapq
from collections.abc import Iterable, Mapping
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from streams.config.catalog import Catalog, Kpi
from streams.engine import sketch
from streams.engine.model import (
    NO_VALUES,
    Bucket,
    Evaluated,
    FrozenBucket,
    HistCodes,
    KpiValue,
    PartnerState,
    RingAdd,
    Totals,
    Values,
    WindowSpec,
)

_HIST_MASK: Final = (1 << 32) - 1

FloatArray = npt.NDArray[np.float64]

_kpi_value: Final = tuple.__new__
"""A KpiValue made from its five fields in C: ``KpiValue(...)`` runs the named tuple's
``__new__``, a Python function (0.39 against 0.10 us), and a new minute makes one per partner
and KPI of the 1 h window, a new hour one per KPI of every hour window. It checks nothing: the
tuples given it have all five fields, in order (asserted here against the record)."""
assert KpiValue._fields == ("value", "samples", "total", "squares", "hist")


def hist_code(k: int, hist_key: int) -> int:
    """A percentile sample of KPI ``k`` as a bucket's code (see :data:`model.HistCodes`)."""
    return (k << 32) | (hist_key - sketch.ZERO_KEY)


class WindowStore:
    """The buckets and window totals of every partner (``PartnerState.rings``, ``hists``,
    ``windows``, ``values``, ``changes``): samples added, windows read, old buckets evicted."""

    def __init__(self, catalog: Catalog, kpis: tuple[Kpi, ...], scale: list[int]) -> None:
        self.kpis = kpis
        self._scale = scale
        # windows some KPI uses, in catalog order
        used = [name for name in catalog.windows if any(name in k.windows for k in kpis)]
        self.resolutions: tuple[int, ...] = tuple(
            sorted({catalog.windows[name].resolution_ms for name in used}))
        ring_of = {res: i for i, res in enumerate(self.resolutions)}
        self.specs: tuple[WindowSpec, ...] = tuple(
            WindowSpec(name, catalog.windows[name].resolution_ms,
                       ring_of[catalog.windows[name].resolution_ms], catalog.windows[name].buckets,
                       tuple(k for k, kpi in enumerate(kpis) if name in kpi.windows))
            for name in used)
        self.index = {spec.name: i for i, spec in enumerate(self.specs)}
        """Window name -> its index in ``specs`` (windows no KPI is counted in have none)."""
        # per KPI: for each resolution it is counted at, its ring and the windows there
        self._adds: list[tuple[RingAdd, ...]] = [
            tuple(RingAdd(res, ring_of[res], tuple((w, spec.buckets) for w, spec
                                                   in enumerate(self.specs)
                                                   if spec.resolution_ms == res and k in spec.kpis))
                  for res in sorted({catalog.windows[name].resolution_ms for name in kpi.windows}))
            for k, kpi in enumerate(kpis)]
        # how many buckets each resolution must keep
        self._keep: dict[int, int] = {}
        for spec in self.specs:
            self._keep[spec.resolution_ms] = max(self._keep.get(spec.resolution_ms, 0),
                                                 spec.buckets)
        self.min_resolution = min(self.resolutions) if self.resolutions else 1
        # A bucket holds the KPIs up to the last one counted at its resolution: the per-channel
        # KPIs come last and are counted in hour windows only, so the minute ring's buckets (and
        # the 1 h window's totals, slid every minute) stop before them.
        widths = [1 + max((k for spec in self.specs if spec.ring == ring for k in spec.kpis),
                          default=-1) for ring in range(len(self.resolutions))]
        self._empty_buckets = [array.array("d", [0.0]) * (3 * width) for width in widths]
        # The judged KPIs come first in every bucket, the per-channel ones after them: a frozen
        # bucket keeps the judged ones' sums as they are (most are sampled every hour, and the
        # integrity lens reads them straight from the prefix) and only the others sparse.
        self._dense: list[int] = [min(len(catalog.kpis), width) for width in widths]
        """Per ring, the KPI slots a frozen bucket keeps dense (:data:`FrozenBucket`)."""
        self._freezes = [width > dense for width, dense in zip(widths, self._dense, strict=True)]
        """Per ring, whether any bucket can be frozen (a ring of judged KPIs only cannot)."""
        # per window, per KPI counted in it: its key in the window's values, its sums' scale
        # and its quantile (None for a mean)
        self._reads: list[dict[int, tuple[tuple[str, str], int, float | None]]] = [
            {k: ((kpis[k].id, spec.name), scale[k], kpis[k].quantile) for k in spec.kpis}
            for spec in self.specs]
        self._closed: dict[int, tuple[tuple[int, int, int], FloatArray]] = {}
        """Window index -> the last :meth:`_closed_sums` read of it, with its (state uid,
        version, bucket index): one partner's, the one being reviewed."""

    def fill(self, st: PartnerState) -> PartnerState:
        """``st`` with empty rings and window slots for this engine's windows."""
        st.rings = [{} for _ in self.resolutions]
        st.hists = [{} for _ in self.resolutions]
        st.ahead = [{} for _ in self.resolutions]
        st.ahead_due = [[] for _ in self.resolutions]
        st.windows = [None] * len(self.specs)
        st.values = [None] * len(self.specs)
        st.changes = [0] * len(self.kpis)
        return st

    def add(self, st: PartnerState, k: int, ts: int, n: int, s: Any, s2: Any,
            hist_key: int | None, sign: int) -> None:
        """Count one sample of KPI ``k`` at ``ts`` (already signed: ``n``, ``s``, ``s2``
        negated for a retraction) into its buckets, and into the running totals holding them."""
        windows = st.windows
        st.changes[k] += 1
        i = 3 * k
        code = (k << 32) | (hist_key - sketch.ZERO_KEY) if hist_key is not None else 0  # hist_code
        now = st.last_ms if st.last_ms > st.horizon_ms else st.horizon_ms
        for res, ring_i, wins in self._adds[k]:
            idx = ts // res
            if idx > now // res:
                # ahead of every read so far: no window's running totals reach this bucket
                _add_ahead(st, ring_i, idx, k, n, s, s2)
                if hist_key is not None:
                    _bump_codes(st.hists[ring_i], idx, code, sign)
                continue
            ring = st.rings[ring_i]
            bucket = ring.get(idx)
            if bucket is None:
                bucket = ring[idx] = self._empty_buckets[ring_i][:]
            elif isinstance(bucket, bytes):  # a late sample for a frozen bucket
                bucket = ring[idx] = self._thaw(ring_i, bucket)
            bucket[i] += n
            bucket[i + 1] += s
            bucket[i + 2] += s2
            if hist_key is not None:
                _bump_codes(st.hists[ring_i], idx, code, sign)
            for w, span in wins:
                totals = windows[w]
                if totals is not None and totals.hi - span < idx < totals.hi:
                    sums = totals.sums
                    sums[i] += n
                    sums[i + 1] += s
                    sums[i + 2] += s2
                    if hist_key is not None:
                        sketch.bump_hist(totals.hists.setdefault(k, {}), hist_key, sign)

    def evict(self, st: PartnerState, now: int) -> None:
        """Drop the buckets older than every window at ``now``, and freeze the closed ones
        worth it (:data:`~streams.engine.model.FrozenBucket` says why)."""
        self.advance(st, now)
        for ring_i, (res, ring) in enumerate(zip(self.resolutions, st.rings, strict=True)):
            floor = now // res - self._keep.get(res, 0)
            old = [i for i in ring if i <= floor]
            hists = st.hists[ring_i]
            for idx in old:
                del ring[idx]
                hists.pop(idx, None)
            if old:  # running totals still counting a dropped bucket are rebuilt when read
                newest = max(old)
                for w, spec in enumerate(self.specs):
                    totals = st.windows[w]
                    if spec.ring == ring_i and totals is not None and totals.hi - spec.buckets < newest:
                        st.windows[w] = None
                        st.values[w] = None
            if self._freezes[ring_i]:
                self._freeze(ring, ring_i, now // res - 2)

    def _freeze(self, ring: dict[int, Bucket | FrozenBucket], ring_i: int, cold: int) -> None:
        """Freeze the dense buckets at or below index ``cold`` where that saves a third. Two
        buckets back from now: the last closed one still takes most late samples."""
        dense = self._dense[ring_i]
        for idx, bucket in ring.items():
            if idx <= cold and not isinstance(bucket, bytes):
                frozen = freeze_bucket(bucket, dense)
                if frozen is not None:
                    ring[idx] = frozen

    def refresh(self, st: PartnerState, now_ms: int,
                wanted: Iterable[int] | None = None) -> list[Mapping[tuple[str, str], KpiValue]]:
        """The values at ``now_ms`` of each window (index in ``specs``; every window by
        default), recomputing only what moved since they were last read."""
        self.advance(st, now_ms)
        out: list[Mapping[tuple[str, str], KpiValue]] = []
        changes = st.changes
        for w in range(len(self.specs)) if wanted is None else wanted:
            spec = self.specs[w]
            if not st.rings[spec.ring]:
                out.append(NO_VALUES)
                continue
            hi = now_ms // spec.resolution_ms
            cached = st.values[w]
            if cached is not None and cached.hi == hi:
                if cached.version == st.version:
                    out.append(cached.values)  # a new minute leaves the hour-resolution windows be
                    continue
                # Same bucket index, new events: only the KPIs they moved are recomputed; the
                # others keep their KpiValue objects, which a judge compares by identity first.
                then = cached.changes
                moved = [k for k in spec.kpis if changes[k] != then[k]]
                values = cached.values if not moved else self._values(
                    st, w, hi, moved, dict(cached.values))
            else:
                values = self._values(st, w, hi, spec.kpis, {})
            st.values[w] = Evaluated(st.version, hi, values, changes[:])
            out.append(values)
        return out

    def advance(self, st: PartnerState, now_ms: int) -> None:
        """Bring the partner's clock for reading up to ``now_ms``: the samples waiting ahead
        (:func:`_add_ahead`) whose bucket it reached are added to their rings. Run before
        anything reads a ring, so a window never slides past a bucket still waiting."""
        if now_ms <= st.horizon_ms:
            return
        st.horizon_ms = now_ms
        for ring_i, due in enumerate(st.ahead_due):
            if not due:
                continue
            top = now_ms // self.resolutions[ring_i]
            if due[0] > top:
                continue
            ahead, ring = st.ahead[ring_i], st.rings[ring_i]
            while due and due[0] <= top:
                idx = heapq.heappop(due)
                sparse = ahead.pop(idx, None)
                if sparse is None:
                    continue  # its samples were all retracted
                bucket = ring.get(idx)
                if bucket is None:
                    bucket = ring[idx] = self._empty_buckets[ring_i][:]
                elif isinstance(bucket, bytes):
                    bucket = ring[idx] = self._thaw(ring_i, bucket)
                for j in range(0, len(sparse), 4):
                    i = 3 * int(sparse[j])
                    bucket[i] += sparse[j + 1]
                    bucket[i + 1] += sparse[j + 2]
                    bucket[i + 2] += sparse[j + 3]

    def closed_buckets(self, st: PartnerState, k: int, w: int, now_ms: int) -> FloatArray:
        """KPI ``k``'s ``(n, sum)`` in each closed bucket of window ``w`` at ``now_ms``, oldest
        first, ``(0, 0)`` where a bucket has no sample, as an ``(m, 2)`` array: the sub-periods
        the integrity lens reads (the current bucket is left out: it is still filling). ``k``
        is a judged KPI's index (the per-channel ones are not read so)."""
        if k >= self._dense[self.specs[w].ring]:
            raise ValueError(f"KPI index {k} is not judged: only judged KPIs' buckets are read")
        self.advance(st, now_ms)
        sums = self._closed_sums(st, w, now_ms // self.specs[w].resolution_ms)
        out = np.empty((len(sums), 2))
        out[:, 0] = sums[:, 3 * k]
        out[:, 1] = sums[:, 3 * k + 1] / self._scale[k]
        return out

    def _thaw(self, ring_i: int, frozen: FrozenBucket) -> Bucket:
        """A frozen bucket of ring ``ring_i`` as a dense one again."""
        bucket = self._empty_buckets[ring_i][:]
        sums = np.frombuffer(bucket, dtype=np.float64)
        head, tail = _parts(frozen, self._dense[ring_i])
        sums[:len(head)] = head
        slot = 3 * tail[:, 0].astype(np.intp)
        sums[slot], sums[slot + 1], sums[slot + 2] = tail[:, 1], tail[:, 2], tail[:, 3]
        return bucket

    def _closed_sums(self, st: PartnerState, w: int, hi: int) -> FloatArray:
        """Every closed bucket of window ``w`` below bucket index ``hi`` as the rows of one
        array (all KPIs' sums side by side).

        Why one array for all KPIs: the lens reads each of a partner's watched KPIs in the same
        window at the same moment, and walking the ring (up to 720 buckets) is the cost; the
        array is kept for the next KPI while the partner's state and the bucket index hold."""
        key = (st.uid, st.version, hi)
        kept = self._closed.get(w)
        if kept is not None and kept[0] == key:
            return kept[1]
        spec = self.specs[w]
        ring, empty = st.rings[spec.ring], self._empty_buckets[spec.ring]
        width = 3 * self._dense[spec.ring]
        rows: list[Any]  # buffers: arrays, bytes, memoryviews
        if width == len(empty):  # nothing sparse in this ring
            rows = [ring.get(idx, empty) for idx in range(hi - spec.buckets + 1, hi)]
        else:  # the judged KPIs' prefix of each bucket, dense or frozen (its first 8 x width B)
            nbytes = 8 * width
            zero = bytes(nbytes)
            rows = [row[:nbytes] if row.__class__ is bytes else memoryview(row).cast("B")[:nbytes]
                    for row in [ring.get(idx, zero) for idx in range(hi - spec.buckets + 1, hi)]]
        # bytes.join copies each bucket's float64 buffer once; no Python float is made
        sums = np.frombuffer(b"".join(rows), dtype=np.float64).reshape(len(rows), width)
        self._closed[w] = (key, sums)
        return sums

    def _values(self, st: PartnerState, w: int, hi: int, ks: Iterable[int],
                values: Values) -> Values:
        """``values`` with the entries of KPIs ``ks`` in window ``w`` (re)computed at bucket
        index ``hi``: set where the KPI has samples, removed where it has none."""
        ring_i = self.specs[w].ring
        totals = self._totals(st, w, hi)
        sums, current = totals.sums, st.rings[ring_i].get(hi)
        if isinstance(current, bytes):  # read at an instant long past: not kept thawed
            current = self._thaw(ring_i, current)
        reads = self._reads[w]
        for k in ks:
            key, scale, quantile = reads[k]
            i = 3 * k
            n = sums[i] + current[i] if current is not None else sums[i]
            if n <= 0:
                values.pop(key, None)
                continue
            if current is None:
                total, squares = sums[i + 1] / scale, sums[i + 2] / (scale * scale)
            else:
                total = (sums[i + 1] + current[i + 1]) / scale
                squares = (sums[i + 2] + current[i + 2]) / (scale * scale)
            if quantile is None:
                values[key] = _kpi_value(KpiValue, (total / n, int(n), total, squares, None))
                continue
            hist = sketch.merge((totals.hists.get(k, {}),
                                 _hist_of(st.hists[ring_i].get(hi), k)))
            q = sketch.quantile_of(hist, quantile)
            if q is not None:
                values[key] = _kpi_value(KpiValue, (q, int(n), total, squares, hist))
            else:
                values.pop(key, None)
        return values

    def _totals(self, st: PartnerState, w: int, hi: int) -> Totals:
        """Window ``w``'s totals over buckets ``hi - span < i < hi``, slid or rebuilt."""
        _, _, ring_i, span, _ = self.specs[w]
        ring, hists, dense = st.rings[ring_i], st.hists[ring_i], self._dense[ring_i]
        totals = st.windows[w]
        if totals is not None and totals.hi == hi:
            return totals
        if totals is not None and totals.hi < hi < totals.hi + span and totals.slid < span:
            totals.slid += hi - totals.hi
            for i in range(totals.hi - span + 1, hi - span + 1):  # leaving the window
                bucket = ring.get(i)
                if bucket is not None:
                    _merge(totals, bucket, hists.get(i), -1, dense)
            for i in range(totals.hi, hi):  # closed since the last read
                bucket = ring.get(i)
                if bucket is not None:
                    _merge(totals, bucket, hists.get(i), 1, dense)
            totals.hi = hi
            return totals
        totals = st.windows[w] = Totals(hi, self._empty_buckets[ring_i][:])
        held = sorted(i for i in ring if hi - span < i < hi)
        if held:
            # every bucket as a row of one array, summed row after row (numpy reduces the outer
            # axis of a C-ordered array one row at a time: the additions of merging each bucket
            # in turn), then the percentile samples: 720 frozen buckets merged one by one took
            # 7 ms, a restored or copied partner's first read of each long window
            sums = np.frombuffer(totals.sums, dtype=np.float64)
            sums += np.add.reduce(self._stack([ring[i] for i in held], ring_i), axis=0)
            for i in held:
                codes = hists.get(i)
                if codes:
                    _merge_codes(totals, codes, 1)
        return totals

    def _stack(self, buckets: list[Bucket | FrozenBucket], ring_i: int) -> FloatArray:
        """Buckets of ring ``ring_i``, dense or frozen, as the rows of one dense array."""
        width, head = len(self._empty_buckets[ring_i]), 3 * self._dense[ring_i]
        out = np.zeros((len(buckets), width))
        live = [r for r, b in enumerate(buckets) if not isinstance(b, bytes)]
        if live:
            out[live] = np.frombuffer(b"".join([buckets[r] for r in live]),
                                      dtype=np.float64).reshape(len(live), width)
        frozen = [r for r, b in enumerate(buckets) if isinstance(b, bytes)]
        if not frozen:
            return out
        cold = [bytes(buckets[r]) for r in frozen]
        cut = 8 * head  # bytes of the dense prefix
        out[frozen, :head] = np.frombuffer(b"".join([b[:cut] for b in cold]),
                                           dtype=np.float64).reshape(len(frozen), head)
        tails = np.frombuffer(b"".join([b[cut:] for b in cold]), dtype=np.float64).reshape(-1, 4)
        if len(tails):
            rows = np.repeat(np.array(frozen), [(len(b) - cut) // 32 for b in cold])
            at = rows * width + 3 * tails[:, 0].astype(np.intp)
            flat = out.reshape(-1)  # a view: out is C-ordered
            flat[at], flat[at + 1], flat[at + 2] = tails[:, 1], tails[:, 2], tails[:, 3]
        return out


def _add_ahead(st: PartnerState, ring_i: int, idx: int, k: int, n: float, s: float,
               s2: float) -> None:
    """Count a sample of KPI ``k`` into bucket ``idx`` of the ring's samples waiting ahead:
    ``(k, n, sum, sum of squares)`` for each KPI in the bucket, in one float64 array."""
    ahead = st.ahead[ring_i]
    sparse = ahead.get(idx)
    if sparse is None:
        ahead[idx] = array.array("d", (k, n, s, s2))
        heapq.heappush(st.ahead_due[ring_i], idx)
        return
    for j in range(0, len(sparse), 4):
        if sparse[j] == k:
            sparse[j + 1] += n
            sparse[j + 2] += s
            sparse[j + 3] += s2
            if not (sparse[j + 1] or sparse[j + 2] or sparse[j + 3]):  # retracted, exactly
                del sparse[j:j + 4]
                if not sparse:
                    del ahead[idx]  # its index stays in ahead_due, skipped when due
            return
    sparse.extend((k, n, s, s2))


def _bump_codes(hists: dict[int, HistCodes], idx: int, code: int, sign: int) -> None:
    """Add (sign 1) or retract (-1) one percentile sample's code in bucket ``idx``."""
    codes = hists.get(idx)
    if sign > 0:
        if codes is None:
            hists[idx] = array.array("q", (code,))
        else:
            codes.append(code)
        return
    # Only a retraction into a bucket already evicted (older than every window) finds no
    # sample: its sums go negative in a fresh bucket no window reads, evicted again next hour;
    # the histogram has nothing to take away.
    if codes is None:
        return
    try:
        codes.remove(code)
    except ValueError:
        return
    if not codes:
        del hists[idx]


def _hist_of(codes: HistCodes | None, k: int) -> dict[int, int]:
    """KPI ``k``'s histogram (sketch key -> count) of one bucket's samples."""
    hist: dict[int, int] = {}
    if codes:
        zero, mask = sketch.ZERO_KEY, _HIST_MASK
        for code in codes:
            if code >> 32 == k:
                key = (code & mask) + zero
                hist[key] = hist.get(key, 0) + 1
    return hist


def freeze_bucket(bucket: Bucket, dense: int) -> FrozenBucket | None:
    """``bucket`` as a :data:`~streams.engine.model.FrozenBucket` keeping its first ``dense``
    KPIs' sums as they are, or None when that would not save a third of it."""
    rows = np.frombuffer(bucket, dtype=np.float64).reshape(-1, 3)
    tail = dense + np.flatnonzero(rows[dense:].any(axis=1))
    if 3 * (3 * dense + 4 * len(tail)) > 2 * 3 * len(rows):  # floats kept > 2/3 of the dense
        return None
    out = np.empty(3 * dense + 4 * len(tail))
    out[:3 * dense] = rows[:dense].ravel()
    quads = out[3 * dense:].reshape(-1, 4)
    quads[:, 0] = tail
    quads[:, 1:] = rows[tail]
    return out.tobytes()


def _parts(frozen: FrozenBucket, dense: int) -> tuple[FloatArray, FloatArray]:
    """A frozen bucket's dense prefix (3 floats a KPI) and its ``(k, n, sum, squares)`` rows."""
    flat = np.frombuffer(frozen, dtype=np.float64)
    return flat[:3 * dense], flat[3 * dense:].reshape(-1, 4)


def _merge(totals: Totals, bucket: Bucket | FrozenBucket, codes: HistCodes | None,
           sign: int, dense: int) -> None:
    """Add (1) or subtract (-1) a bucket's sums and percentile samples to window totals
    (``dense``: the KPI slots a frozen bucket of its ring keeps dense)."""
    # in place through numpy views of both float64 buffers: the same IEEE additions as one
    # Python float at a time, 198 of them in about a microsecond instead of nine
    sums = np.frombuffer(totals.sums, dtype=np.float64)
    if isinstance(bucket, bytes):  # frozen: the prefix, then its other KPIs' sums (an absent
        head, tail = _parts(bucket, dense)  # KPI would add 0.0, which changes no sum)
        slot = 3 * tail[:, 0].astype(np.intp)
        if sign > 0:
            sums[:len(head)] += head
            sums[slot] += tail[:, 1]
            sums[slot + 1] += tail[:, 2]
            sums[slot + 2] += tail[:, 3]
        else:
            sums[:len(head)] -= head
            sums[slot] -= tail[:, 1]
            sums[slot + 1] -= tail[:, 2]
            sums[slot + 2] -= tail[:, 3]
    elif sign > 0:
        sums += np.frombuffer(bucket, dtype=np.float64)
    else:
        sums -= np.frombuffer(bucket, dtype=np.float64)
    if codes:
        _merge_codes(totals, codes, sign)


def _merge_codes(totals: Totals, codes: HistCodes, sign: int) -> None:
    """Add (1) or subtract (-1) a bucket's percentile samples to window totals."""
    zero, mask, hists = sketch.ZERO_KEY, _HIST_MASK, totals.hists
    for code in codes:
        hist = hists.get(code >> 32)
        if hist is None:
            hist = hists[code >> 32] = {}
        sketch.bump_hist(hist, (code & mask) + zero, sign)
