"""The ``partnerpulse`` command: worker, simulate, demo, check-config."""

from __future__ import annotations

import dataclasses
import enum
import functools
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from streams.config.catalog import DEFAULT_CONFIG_DIR, ConfigError, load_config

if TYPE_CHECKING:  # the worker's heavy imports stay out of `partnerpulse --help`
    from streams.config.settings import Settings

# no locals in tracebacks: they would print settings and client arguments, secrets included
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False,
                  help="partnerpulse: live support KPIs of channel partners, from Kafka to Prometheus.")
# soft_wrap: never break a line (a file:line in an error must stay one piece to copy)
console = Console(stderr=True, soft_wrap=True)

BrokerOpt = Annotated[str, typer.Option(help="Kafka bootstrap, kafka://host:port[,host:port].")]
ConfigOpt = Annotated[Path, typer.Option("--config", help="Directory with kpis.yaml and partners.yaml.")]
WorkersOpt = Annotated[list[str] | None, typer.Option(
    "--worker", help="A running worker's web address; repeat for every worker of the app "
                     "(default http://127.0.0.1:6066).")]
PartitionsOpt = Annotated[int, typer.Option(help="Partitions of the input topics (as the "
                                                 "workers were started with).")]


class Clock(enum.StrEnum):
    """Which clock decides 'now'."""

    wall = "wall"
    event = "event"


class Store(enum.StrEnum):
    """Local table store."""

    memory = "memory"
    rocksdb = "rocksdb"


@app.command("check-config")
def check_config(config: ConfigOpt = DEFAULT_CONFIG_DIR) -> None:
    """Load and check the KPI catalog and partner file; exit 1 with file:line on error."""
    try:
        catalog, partners = load_config(config)
    except ConfigError as exc:
        console.print(f"[red]config error[/red] {exc}")
        raise typer.Exit(1) from None
    console.print(f"ok: {len(catalog.kpis)} KPIs, windows {', '.join(catalog.windows)}, "
                  f"{len(partners.partner_tier)} listed partners "
                  f"({'closed' if partners.closed else 'open'} list)")
    from streams.generators.coverage import exported_windows, unexported_readers

    for window, readers in unexported_readers(catalog).items():
        console.print(f"[yellow]warning[/yellow] window {window} is not in settings.export_windows "
                      f"({', '.join(exported_windows(catalog))}), so these read nothing:",
                      markup=True, highlight=False, soft_wrap=True)
        for reader in readers:
            console.print(f"  - {reader}", markup=False, highlight=False, soft_wrap=True)


@app.command()
def worker(
    broker: Annotated[str | None, typer.Option(help="Kafka bootstrap, kafka://host:port[,host:port] "
                                               "[default: kafka://127.0.0.1:9092].")] = None,
    clock: Annotated[Clock | None, typer.Option(help="wall (live) or event (replay) "
                                                "[default: wall].")] = None,
    web_port: Annotated[int | None, typer.Option(help="HTTP port for /metrics and /ready "
                                                 "[default: 6066].")] = None,
    web_bind: Annotated[str | None, typer.Option(help="HTTP bind address [default: 127.0.0.1].")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="Directory with kpis.yaml and "
                                                "partners.yaml.")] = None,
    store: Annotated[Store | None, typer.Option(help="Table store: memory, or rocksdb (opt-in, "
                                                "`rocksdb` extra) [default: memory].")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Local state directory, one per worker "
                                                  "[default: ./partnerpulse-data].")] = None,
    partitions: Annotated[int | None, typer.Option(help="Partitions of the input topics "
                                                   "[default: 4].")] = None,
    topic_replication_factor: Annotated[int | None, typer.Option(
        help="Replicas of the topics the worker creates; 3 on a real cluster [default: 1].")] = None,
    topic_min_insync_replicas: Annotated[int | None, typer.Option(
        help="min.insync.replicas of the topics the worker creates; 2 with 3 replicas "
             "[default: 1].")] = None,
    table_standby_replicas: Annotated[int | None, typer.Option(
        help="Standby copies of the journal on other workers [default: 0].")] = None,
    session_timeout: Annotated[float | None, typer.Option(
        help="Consumer-group session timeout, seconds: a crashed worker's partitions move after "
             "it [default: 6].")] = None,
    rebalance_timeout: Annotated[float | None, typer.Option(help="Rebalance timeout, seconds "
                                                            "[default: 60].")] = None,
    app_id: Annotated[str | None, typer.Option(help="Consumer group and internal topic prefix "
                                               "[default: partnerpulse].")] = None,
    log_level: Annotated[str | None, typer.Option(help="Log level [default: info].")] = None,
    alertmanager: Annotated[list[str] | None, typer.Option(
        help="Alertmanager URL to push partner alerts to, e.g. http://127.0.0.1:9093; repeat for "
             "each member of an HA cluster (each gets every alert).")] = None,
) -> None:
    """Run a worker: consume the input topics, keep the windows, serve /metrics.

    Options not given on the command line come from PARTNERPULSE_<NAME> environment variables,
    then from the defaults.
    """
    from streams.config.settings import Settings

    given: dict[str, object] = {
        "broker": broker, "clock": clock.value if clock else None, "web_port": web_port,
        "web_bind": web_bind, "config_dir": config, "store": store.value if store else None,
        "data_dir": data_dir, "partitions": partitions, "rebalance_timeout_s": rebalance_timeout,
        "session_timeout_s": session_timeout,
        "topic_replication_factor": topic_replication_factor,
        "topic_min_insync_replicas": topic_min_insync_replicas,
        "table_standby_replicas": table_standby_replicas,
        "app_id": app_id, "log_level": log_level, "alertmanager": alertmanager,
    }
    # validated by pydantic; unset options fall through to the environment, then the defaults
    run_worker(Settings.model_validate({k: v for k, v in given.items() if v is not None}))


def run_worker(settings: Settings) -> None:
    """Create topics when allowed, then run the Faust worker until stopped."""
    import faust

    from streams.runtime.pipeline import Pipeline
    from streams.runtime.topic_setup import ensure_worker_topics

    try:
        load_config(settings.config_dir)
    except ConfigError as exc:
        console.print(f"[red]config error[/red] {exc}")
        raise typer.Exit(1) from None
    if settings.create_topics:
        ensure_worker_topics(settings)
    pipeline = Pipeline(settings)
    worker = faust.Worker(pipeline.app, loglevel=settings.log_level.upper(),
                          override_logging=True, quiet=True)
    # No terminal spinner: at a log level of WARNING or above, Faust's spinner sets the root
    # logger to DEBUG so it can spin on every record, and every debug call in aiokafka and Faust
    # (several per message) then builds a LogRecord: 7% of a loaded worker's time, for nothing.
    worker.spinner = None
    worker.execute_from_commandline()


@app.command()
def rules(
    check: Annotated[bool, typer.Option("--check", help="Exit 1 if the committed rules are stale.")] = False,
    config: Annotated[Path | None, typer.Option("--config", help="Directory with kpis.yaml.")] = None,
) -> None:
    """Generate config/rules/partnerpulse.rules.yml (Prometheus rules) from the KPI catalog."""
    from streams.generators import rules as generator

    raise typer.Exit(generator.main(check=check, config_dir=config))


@app.command()
def replay(
    file: Annotated[Path, typer.Argument(help="CSV or JSON Lines export (gzip too).")],
    topic: Annotated[str, typer.Option(help="tickets, calls, orders or surveys.")],
    mapping: Annotated[Path, typer.Option(help="Mapping YAML, e.g. config/mappings/helpdesk.yaml.")],
    broker: BrokerOpt = "kafka://127.0.0.1:9092",
    speed: Annotated[float | None, typer.Option(help="Replay at N x real time (default: as fast as "
                                                "the broker takes it).")] = None,
) -> None:
    """Turn a ticketing or telephony export into contract events and produce them in time order.

    TLS and SASL come from the PARTNERPULSE_KAFKA_* environment variables, as for the worker.
    """
    from streams.tools.replay import run_replay_cli

    raise typer.Exit(run_replay_cli(file, topic, mapping, broker, speed, kafka_security()))


@app.command("broker")
def embedded_broker(
    port: Annotated[int, typer.Option(help="Loopback port to listen on.")] = 9092,
    partitions: Annotated[int, typer.Option(help="Partitions of the input topics.")] = 4,
) -> None:
    """Run the embedded Kafka-protocol broker (tansu, memory only) until Ctrl-C: for trials.

    Its log is kept in memory: stopping it loses every topic. Production runs Apache Kafka.
    """
    import tempfile

    from streams.ingest.topics import all_topics
    from streams.runtime.kafka_admin import ensure_topics
    from streams.tools.broker import EmbeddedBroker

    with tempfile.TemporaryDirectory(prefix="partnerpulse-broker-") as tmp, \
            EmbeddedBroker(port=port, log_path=Path(tmp) / "broker.log") as broker:
        ensure_topics(broker.bootstrap, all_topics(partitions))
        console.print(f"broker  {broker.url} (embedded tansu, memory only); Ctrl-C stops it")
        try:
            while broker.running:
                time.sleep(1)
        except KeyboardInterrupt:
            pass


def access_token() -> str | None:
    """The access token ``report`` and ``open`` send to workers with a token file: from
    PARTNERPULSE_TOKEN, or the file PARTNERPULSE_TOKEN_FILE names (never a flag: a command
    line is visible to every user of the machine)."""
    token = os.environ.get("PARTNERPULSE_TOKEN", "").strip()
    path = os.environ.get("PARTNERPULSE_TOKEN_FILE", "").strip()
    if not token and path:
        try:
            token = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            console.print(f"[red]PARTNERPULSE_TOKEN_FILE:[/red] cannot read {path}: {exc.strerror}")
            raise typer.Exit(1) from None
    return token or None


@app.command()
def token(
    partner: Annotated[str | None, typer.Option(help="A token for this partner's data only.")] = None,
    operator: Annotated[bool, typer.Option("--operator", help="A token for every partner.")] = False,
) -> None:
    """Make an access token: the token on standard output (give it to its holder), and the
    entry for the access token file (settings.access_tokens_file) on standard error."""
    from streams.config.access import hash_token, new_token

    if (partner is None) == (not operator):
        console.print("[red]token:[/red] give --partner ID or --operator")
        raise typer.Exit(2)
    made = new_token()
    scope = f"partner: {partner}" if partner is not None else "operator: true"
    sys.stderr.write(f"  - sha256: {hash_token(made)}\n    {scope}\n")
    sys.stdout.write(made + "\n")


class ReportFormat(enum.StrEnum):
    """Output of the report card."""

    table = "table"
    csv = "csv"
    html = "html"
    json = "json"


@app.command()
def report(
    month: Annotated[str | None, typer.Option(help="Calendar month, e.g. 2026-10 (in the "
                                                    "catalog's report_timezone).")] = None,
    year: Annotated[str | None, typer.Option(help="A year at a glance, e.g. 2026: every KPI "
                                                   "month by month and for the year.")] = None,
    quarter: Annotated[str | None, typer.Option(help="A quarter, e.g. 2026-Q3.")] = None,
    format: Annotated[ReportFormat, typer.Option("--format", help="Output format.")] = (
        ReportFormat.table),
    worker: WorkersOpt = None,
    partitions: PartitionsOpt = 4,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file "
                                                "instead of standard output.")] = None,
    partner: Annotated[list[str] | None, typer.Option(
        "--partner", help="Only this partner (repeatable); default every partner.")] = None,
    config: ConfigOpt = DEFAULT_CONFIG_DIR,
) -> None:
    """The partner report card: each KPI against its goal, month over month, reward band; or a
    year (--year) or quarter (--quarter) at a glance, month by month.

    The numbers are the workers' own calendar-month state (kept 25 months), read over HTTP, with
    the integrity flags each worker's lens raised in the month (they can withhold bands:
    ``integrity_withholds`` in partners.yaml).
    """
    from streams.engine.core import MonthCalendar
    from streams.outputs.period import build_period, fetch_period, period_months
    from streams.outputs.period_render import PERIOD_RENDERERS
    from streams.outputs.report import ReportError, build_report, fetch, http_get
    from streams.outputs.report_render import RENDERERS

    chosen = [x for x in (month, year, quarter) if x]
    if len(chosen) != 1:
        console.print("[red]report:[/red] give one of --month, --year or --quarter")
        raise typer.Exit(2)
    workers = worker or ["http://127.0.0.1:6066"]
    now = int(time.time() * 1000)
    try:
        catalog, partners = load_config(config)
        if month:
            MonthCalendar.parse(month)
            got = fetch(workers, month, partitions, functools.partial(http_get, token=access_token()))
        else:
            period, months = period_months(year or f"{quarter}")
            if year and "-" in year:
                raise ValueError(f"--year {year!r}: give a year like 2026 (or --quarter)")
            if quarter and "-Q" not in quarter:
                raise ValueError(f"--quarter {quarter!r}: give a quarter like 2026-Q3")
            fetched = fetch_period(workers, period, partitions,
                                   functools.partial(http_get, token=access_token()))
    except (ValueError, ConfigError, ReportError) as exc:
        console.print(f"[red]report:[/red] {exc}")
        raise typer.Exit(1) from None
    if month:
        card = build_report(catalog, partners, month, got.current, got.previous, now,
                            got.integrity, got.previous_integrity, got.closed, got.evidence)
        known = {c.partner for c in card.cards}
    else:
        whole = build_period(catalog, partners, period, months, fetched.values, fetched.totals,
                             fetched.flags, now)
        known = {c.partner for c in whole.cards}
    if partner:
        unknown = sorted(set(partner) - known)
        if unknown:
            console.print(f"[red]report:[/red] no such partner: {', '.join(unknown)}")
            raise typer.Exit(1)
    if month:
        if partner:
            card = dataclasses.replace(card, cards=tuple(c for c in card.cards
                                                         if c.partner in partner))
        text = RENDERERS[format.value](card)
        count = len(card.cards)
    else:
        if partner:
            whole = dataclasses.replace(whole, cards=tuple(c for c in whole.cards
                                                           if c.partner in partner))
        text = PERIOD_RENDERERS[format.value](whole)
        count = len(whole.cards)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        console.print(f"wrote {output} ({count} partners)")


class OpenFormat(enum.StrEnum):
    """Output of the ledger of open items."""

    table = "table"
    csv = "csv"
    json = "json"


@app.command("open")
def open_items(
    partner: Annotated[str | None, typer.Option(help="Only this partner.")] = None,
    kpi: Annotated[str | None, typer.Option(help="Only this KPI, e.g. ots_down_hard.")] = None,
    state: Annotated[str | None, typer.Option(
        help="breached, at_risk, ok, or urgent (at risk or breached); default every state.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many rows, most urgent first.")] = 50,
    format: Annotated[OpenFormat, typer.Option("--format", help="Output format.")] = (
        OpenFormat.table),
    worker: WorkersOpt = None,
    partitions: PartitionsOpt = 4,
) -> None:
    """The ledger: tickets still waiting for first contact or resolution (and detractors not
    called back), least time left first, gathered from every worker.

    Each row is an entity of an open_items KPI with its age, the partner's target and the time
    left (negative once breached), read on each worker's clock (the event clock by default).
    """
    from streams.outputs.ledger import RENDERERS, LedgerQuery, fetch_open
    from streams.outputs.report import ReportError, http_get

    try:
        query = LedgerQuery.parse({"partner": partner or "", "kpi": kpi or "",
                                   "state": state or "", "limit": str(limit)})
        got = fetch_open(worker or ["http://127.0.0.1:6066"], query, partitions,
                         functools.partial(http_get, token=access_token()))
    except (ValueError, ReportError) as exc:
        console.print(f"[red]open:[/red] {exc}")
        raise typer.Exit(1) from None
    sys.stdout.write(RENDERERS[format.value](got))


@app.command()
def dashboards(
    check: Annotated[bool, typer.Option("--check", help="Exit 1 if dashboards/ is stale.")] = False,
    config: Annotated[Path | None, typer.Option("--config", help="Directory with kpis.yaml.")] = None,
) -> None:
    """Generate the Grafana dashboards (dashboards/*.json) from the KPI catalog."""
    from streams.generators import dashboards as generator

    raise typer.Exit(generator.main(check=check, config_dir=config))


@app.command()
def simulate(
    broker: BrokerOpt = "kafka://127.0.0.1:9092",
    rate: Annotated[float, typer.Option(help="Events per second, all partners together.")] = 50.0,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same traffic).")] = 7,
    duration: Annotated[float, typer.Option(help="Stop after this many seconds (0 = forever).")] = 0,
    drift_minutes: Annotated[float, typer.Option(help="Minutes the drifting partner takes to "
                                                 "cross its targets.")] = 10.0,
    partitions: Annotated[int, typer.Option(help="Partitions of the input topics.")] = 4,
) -> None:
    """Produce simulated partner traffic in real time (a dozen partners, one drifting).

    TLS and SASL come from the PARTNERPULSE_KAFKA_* environment variables, as for the worker.
    """
    from streams.ingest.topics import all_topics
    from streams.runtime.kafka_admin import ensure_topics, parse_broker_url
    from streams.tools.simulate import run_simulator

    bootstrap = parse_broker_url(broker)
    security = kafka_security()
    ensure_topics(bootstrap, all_topics(partitions), security=security)
    stop_at = time.monotonic() + duration if duration > 0 else None
    produced = run_simulator(bootstrap, rate, seed, drift_minutes, stop_at, security)
    console.print(f"produced {produced} events")


def kafka_security() -> dict[str, Any]:
    """TLS/SASL client arguments from PARTNERPULSE_KAFKA_* (never from flags); exit 1 if invalid."""
    from pydantic import ValidationError

    from streams.config.kafka_auth import client_kwargs
    from streams.config.settings import KafkaClientSettings

    try:
        return client_kwargs(KafkaClientSettings())
    except ValidationError as exc:  # SecretStr values print masked
        console.print(f"[red]Kafka security settings[/red] {exc}")
        raise typer.Exit(1) from None


@app.command()
def demo(
    duration: Annotated[float, typer.Option(help="Stop after this many seconds (0 = Ctrl-C).")] = 0,
    web_port: Annotated[int, typer.Option(help="HTTP port of the worker.")] = 6066,
    rate: Annotated[float, typer.Option(help="Simulated events per second.")] = 50.0,
    drift_minutes: Annotated[float, typer.Option(help="Minutes for the drifting partner to cross "
                                                 "its targets.")] = 10.0,
    alertmanager: Annotated[str | None, typer.Option(help="Alertmanager URL to push alerts to, "
                                                     "e.g. http://127.0.0.1:9093.")] = None,
) -> None:
    """Embedded broker + worker + simulator on this machine, nothing else needed."""
    from streams.tools.demo import demo as run_demo

    run_demo(duration, web_port, rate, drift_minutes, alertmanager)


def main() -> None:
    """Entry point for ``python -m streams``."""
    app()
