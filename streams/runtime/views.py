"""The worker's web views: /metrics, /ready, the live wall (/wall, /api/wall), the report
card's data (/api/report) and the ledger of open items (/api/open), each answering with the
same browser security headers.

Faust creates a view from its class, so :func:`add_views` gives each pipeline its own
subclasses that know it; the views read only what :class:`Served` names.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar, Protocol, cast

import aiohttp.web
import faust
import orjson
from prometheus_client import CONTENT_TYPE_LATEST

from streams.config.access import AccessTokens, Scope, decide
from streams.engine.core import Engine, MonthCalendar
from streams.engine.model import OpenItem
from streams.judgement.watch import Watch
from streams.outputs.exporter import KpiCollector, blocks
from streams.outputs.ledger import LedgerQuery, select_steps, to_json
from streams.outputs.period import period_months, period_state_steps
from streams.outputs.report import month_state_steps
from streams.outputs.wall import WALL_CSP, WALL_HTML, History, snapshot_steps, spark_param
from streams.runtime.health import wall_ms
from streams.runtime.ownership import Ownership
from streams.runtime.pacing import run_paced

DATA_CSP = "default-src 'none'; frame-ancestors 'none'"
"""The data views' Content-Security-Policy: nothing may load, run or frame them."""
JSON_TYPE = "application/json"


def security_headers(content_type: str, csp: str = DATA_CSP) -> dict[str, str]:
    """Every view's headers: a browser must not sniff a type, frame a page, or run or
    load anything but the wall's own script and style (data views allow nothing)."""
    return {"Content-Type": content_type, "Content-Security-Policy": csp,
            "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY"}


class Served(Protocol):
    """What the views read of the pipeline."""

    access_tokens: AccessTokens | None
    web_bind: str
    engine: Engine
    watch: Watch
    history: History
    collector: KpiCollector
    scrape_lock: asyncio.Lock
    ownership: Ownership
    partitions: int

    def status(self) -> dict[str, Any]:
        """What /ready reports."""


class _PipelineView(faust.web.View):
    pipeline: ClassVar[Served]

    def scope(self, request: faust.web.Request) -> Scope | faust.web.Response:
        """What a data request may read, or the response refusing it (streams/config/access.py).
        The token is never logged: it lives in the header, and is only hashed here."""
        pipeline = self.pipeline
        got = decide(pipeline.access_tokens, pipeline.web_bind,
                     request.headers.get("Authorization"))
        if isinstance(got, Scope):
            return got
        headers = security_headers(JSON_TYPE)
        if got.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="partnerpulse"'
        return self.bytes(orjson.dumps({"error": got.reason}), status=got.status,
                          headers=headers)


class Metrics(_PipelineView):
    """Prometheus exposition of this worker's partners."""

    async def get(self, request: faust.web.Request) -> aiohttp.web.StreamResponse:
        # direct text (streams/outputs/exporter.py), rendered a partner at a time with the
        # loop let run between slices (a fleet's scrape is seconds: the agent's events and
        # the other views must not wait for it), then sent block by block (a large fleet's
        # body is hundreds of MiB: each block waits for the socket, not the loop's other
        # work). One scrape at a time: a second would render the same series again, holding
        # a second body meanwhile.
        pipeline = self.pipeline
        async with pipeline.scrape_lock:
            pieces = await run_paced(pipeline.collector.render())
        parts = blocks(pieces)
        first = next(parts, b"")
        response = aiohttp.web.StreamResponse(headers=security_headers(CONTENT_TYPE_LATEST))
        # faust's aiohttp driver hands its views aiohttp's own request
        await response.prepare(cast(aiohttp.web.Request, request))
        await response.write(first)
        for block in parts:
            await response.write(block)
        await response.write_eof()
        return response


class Ready(_PipelineView):
    """Readiness: partitions held, partners exported, counts; 503 until recovered."""

    async def get(self, request: faust.web.Request) -> faust.web.Response:
        body = self.pipeline.status()
        return self.bytes(orjson.dumps(body), status=200 if body["ready"] else 503,
                          headers=security_headers(JSON_TYPE))


class Wall(_PipelineView):
    """The live wall page: one self-contained HTML document (streams/outputs/wall.py)."""

    async def get(self, request: faust.web.Request) -> faust.web.Response:
        return self.bytes(WALL_HTML,
                          headers=security_headers("text/html; charset=utf-8", WALL_CSP))


class WallApi(_PipelineView):
    """The wall's data: a tile per owned partner, worst first (``?spark=N``: at most N sparkline
    points per KPI, 0 none; the page asks for what it draws. ``?partner=ID``: that partner's
    tile only, and the counts of it alone)."""

    async def get(self, request: faust.web.Request) -> faust.web.Response:
        scope = self.scope(request)
        if not isinstance(scope, Scope):
            return scope
        try:
            spark = spark_param(request.query)
        except ValueError as exc:
            return self.bytes(orjson.dumps({"error": str(exc)}), status=400,
                              headers=security_headers(JSON_TYPE))
        pipeline = self.pipeline
        engine = pipeline.engine
        only = request.query.get("partner") or None  # one partner's card: not every tile
        owned = [p for p in engine.partner_ids()
                 if pipeline.ownership.owns(p) and scope.allows(p) and only in (None, p)]
        wall = wall_ms()
        now = engine.now(wall)
        started = time.perf_counter()
        # month-end forecasts as /metrics keeps them (refreshing a budget of the stalest; a
        # token scoped to some partners asks for theirs only: the others' are kept)
        kept = await run_paced(pipeline.collector.forecasts.refresh(owned, now, wall,
                                                                    others=True))
        # a tile per step, the loop let run between slices (about 0.25 ms a filled partner's tile)
        body = await run_paced(snapshot_steps(engine, pipeline.watch, owned, now,
                                              pipeline.history,
                                              month_end={p: f.bands for p, f in kept.items()},
                                              spark=spark))
        # what making it took (the loop's other work between its steps included): the page
        # waits ten times that between polls (wall.html, BUSY_SHARE)
        body["made_ms"] = round((time.perf_counter() - started) * 1000, 1)
        return self.bytes(orjson.dumps(body),
                          headers=security_headers(JSON_TYPE) | {"Cache-Control": "no-store"})


class OpenApi(_PipelineView):
    """The ledger: the owned partners' open items (tickets without first contact, detractors
    not called back), most urgent first (``?partner=&kpi=&state=&limit=``,
    :mod:`streams.outputs.ledger`)."""

    async def get(self, request: faust.web.Request) -> faust.web.Response:
        scope = self.scope(request)
        if not isinstance(scope, Scope):
            return scope
        try:
            query = LedgerQuery.parse(request.query)
        except ValueError as exc:
            return self.bytes(orjson.dumps({"error": str(exc)}), status=400,
                              headers=security_headers(JSON_TYPE))
        pipeline = self.pipeline
        engine, ownership = pipeline.engine, pipeline.ownership
        now = engine.now(wall_ms())
        asked = ([query.partner] if query.partner is not None else engine.partner_ids())

        kpis = frozenset((query.kpi,)) if query.kpi is not None else None

        def selection_of(partner: str) -> tuple[list[OpenItem], int]:
            # asked per step: a partner revoked since the request began is left out
            if not ownership.owns(partner):
                return [], 0
            return engine.open_selection(partner, now, query.limit, kpis, query.state)

        # one partner per step, the loop let run between slices, the limit's most urgent kept
        rows, matched = await run_paced(select_steps(
            [p for p in asked if scope.allows(p)], selection_of, query))
        body = {"items": [to_json(item) for item in rows],
                "matched": matched, "now_ms": now,
                "ready": ownership.ready,
                "partitions": pipeline.partitions,
                "owned_partitions": sorted(ownership.owned) if ownership.ready else []}
        return self.bytes(orjson.dumps(body), status=200 if ownership.ready else 503,
                          headers=security_headers(JSON_TYPE) | {"Cache-Control": "no-store"})


class ReportApi(_PipelineView):
    """Calendar-month KPI values and integrity flags of the owned partners (``?month=2026-10``),
    or of every month of a year or quarter and the period as a whole (``?period=2026-Q3``), for
    the report card; says which partitions they cover so a report can tell it is whole."""

    async def get(self, request: faust.web.Request) -> faust.web.Response:
        scope = self.scope(request)
        if not isinstance(scope, Scope):
            return scope
        month, period = request.query.get("month", ""), request.query.get("period", "")
        try:
            months = period_months(period)[1] if period else [MonthCalendar.name(
                MonthCalendar.parse(month))]
        except ValueError as exc:
            return self.bytes(orjson.dumps({"error": str(exc)}), status=400,
                              headers=security_headers(JSON_TYPE))
        pipeline = self.pipeline
        engine, ownership = pipeline.engine, pipeline.ownership
        owned = [p for p in engine.partner_ids() if ownership.owns(p) and scope.allows(p)]
        raised_in = pipeline.watch.lens.raised_in
        # a partner per step, the loop let run between slices (0.4 ms a filled partner)
        state = await run_paced(period_state_steps(engine, owned, months, raised_in) if period
                                else month_state_steps(engine, owned, month, raised_in))
        body = {**state,
                "ready": ownership.ready,
                "partitions": pipeline.partitions,
                "owned_partitions": sorted(ownership.owned) if ownership.ready else []}
        return self.bytes(orjson.dumps(body), status=200 if ownership.ready else 503,
                          headers=security_headers(JSON_TYPE))


ROUTES: dict[str, type[_PipelineView]] = {
    "/metrics": Metrics,
    "/ready": Ready,
    "/wall": Wall,
    "/api/wall": WallApi,
    "/api/report": ReportApi,
    "/api/open": OpenApi,
}
"""Path -> view, in the order they are added."""


def add_views(app: faust.App, pipeline: Served) -> None:
    """Serve :data:`ROUTES` on the app, each view reading this pipeline."""
    for path, view in ROUTES.items():
        bound: type[_PipelineView] = type(view.__name__, (view,), {"pipeline": pipeline})
        app.page(path)(bound)
