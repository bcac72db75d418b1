"""streams.outputs.alertmanager.AlertSender against a real Alertmanager (and a few fakes).

The Alertmanager is Debian's ``prometheus-alertmanager`` (scripts/test.sh installs it; without
it these tests skip locally and fail on CI), started on a free loopback port with clustering
off. The sender's loop runs in a thread with its own event loop, as it would next to a worker;
every wait polls a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import calendar
import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Generic, TypeVar

import pytest
from conftest import require_binary

from streams.outputs.alertmanager import AlertFanout, AlertSender
from streams.tools.broker import free_port

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_CONFIG = REPO / "config" / "alertmanager.yml"
MINIMAL_CONFIG = """\
route:
  receiver: blackhole
receivers:
  - name: blackhole
"""


def wait_for(condition: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


class Alertmanager:
    """A real Alertmanager process on 127.0.0.1:port (clustering off, storage in tmp)."""

    def __init__(self, binary: str, workdir: Path, port: int, config: str = MINIMAL_CONFIG) -> None:
        self.binary, self.workdir, self.port = binary, workdir, port
        self.url = f"http://127.0.0.1:{port}"
        self.config_path = workdir / "alertmanager.yml"
        self.config_path.write_text(config)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> Alertmanager:
        self.starts += 1
        storage = self.workdir / f"data-{self.starts}"
        storage.mkdir()
        log = (self.workdir / f"alertmanager-{self.starts}.log").open("wb")
        self.proc = subprocess.Popen(
            [self.binary, f"--config.file={self.config_path}", f"--storage.path={storage}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address=",
             "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_for(self._ready, 30, f"Alertmanager ready on port {self.port}")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            logs = (self.workdir / f"alertmanager-{self.starts}.log").read_text(errors="replace")
            pytest.fail(f"Alertmanager exited with {self.proc.returncode}:\n{logs}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def alerts(self) -> list[dict[str, Any]]:
        """GET /api/v2/alerts: the alerts that are not resolved (inhibited ones included)."""
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts", timeout=5) as response:
            data = json.loads(response.read())
        assert isinstance(data, list)
        return data

    def by_name(self) -> dict[str, dict[str, Any]]:
        return {a["labels"]["alertname"]: a for a in self.alerts()}


@pytest.fixture
def am_binary() -> str:
    return require_binary("prometheus-alertmanager", "prometheus-alertmanager")


@pytest.fixture
def alertmanager(am_binary: str, tmp_path: Path) -> Iterator[Alertmanager]:
    am = Alertmanager(am_binary, tmp_path, free_port())
    try:
        yield am.start()
    finally:
        am.stop()


S = TypeVar("S", AlertSender, AlertFanout)


class SenderThread(Generic[S]):
    """Runs ``sender.run()`` on its own event loop in a thread; stops it on exit."""

    def __init__(self, sender: S) -> None:
        self.sender = sender
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, name="alert-sender", daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(self.sender.run())
        except BaseException as exc:  # run() must never raise: the test checks this
            self.error = exc

    def __enter__(self) -> S:
        self.thread.start()
        return self.sender

    def __exit__(self, *exc: object) -> None:
        asyncio.run(asyncio.wait_for(self.sender.stop(), 30))  # from another loop, on purpose
        self.thread.join(30)
        assert not self.thread.is_alive()
        assert self.error is None, f"run() raised {self.error!r}"


def _labels(name: str, **extra: str) -> dict[str, str]:
    return {"alertname": name, "service": "partnerpulse", "scope": "partner", "severity": "critical",
            "partner": "northwind-telecom", "tier": "premier", "kpi": "asa", "window": "24h", **extra}


def _now_ms() -> int:
    return int(time.time() * 1000)


# --- against a real Alertmanager ---------------------------------------------------------
def test_fire_two_then_resolve_one(alertmanager: Alertmanager) -> None:
    # A long resend interval: delivery must come from the change itself, not the timer.
    sender = AlertSender(alertmanager.url, resend_interval_s=300)
    started = _now_ms() - 60_000
    with SenderThread(sender):
        sender.set_active("breach/northwind/asa/24h", _labels("PartnerKpiBreach"),
                          {"summary": "northwind-telecom (premier) breaches asa over 24h"}, started)
        sender.set_active("risk/bluefiber/csat/7d",
                          _labels("PartnerKpiAtRisk", partner="bluefiber", kpi="csat", window="7d",
                                  severity="warning"),
                          {"summary": "bluefiber at risk"}, started)

        def both() -> dict[str, dict[str, Any]] | None:
            got = alertmanager.by_name()
            return got if {"PartnerKpiBreach", "PartnerKpiAtRisk"} <= set(got) else None

        got = wait_for(both, what="both alerts in Alertmanager")
        assert got["PartnerKpiBreach"]["labels"] == _labels("PartnerKpiBreach")
        assert got["PartnerKpiBreach"]["annotations"] == {
            "summary": "northwind-telecom (premier) breaches asa over 24h"}
        assert got["PartnerKpiAtRisk"]["labels"]["partner"] == "bluefiber"
        assert got["PartnerKpiAtRisk"]["labels"]["severity"] == "warning"
        assert got["PartnerKpiBreach"]["status"]["state"] == "active"
        assert got["PartnerKpiBreach"]["startsAt"].startswith(
            time.strftime("%Y-%m-%dT%H:%M", time.gmtime(started / 1000)))
        wait_for(lambda: sender.pending == 0, what="nothing pending")
        assert sender.sent_batches >= 1 and sender.failed_posts == 0

        sender.resolve("breach/northwind/asa/24h", _now_ms())
        wait_for(lambda: set(alertmanager.by_name()) == {"PartnerKpiAtRisk"},
                 what="the resolved alert to leave the active alerts")
        wait_for(lambda: sender.pending == 0, what="the resolution delivered")
        assert sender.active == 1


def test_sender_started_before_alertmanager(am_binary: str, tmp_path: Path) -> None:
    am = Alertmanager(am_binary, tmp_path, free_port())  # not started yet: connection refused
    sender = AlertSender(am.url, resend_interval_s=5, timeout_s=2)
    try:
        with SenderThread(sender):
            sender.set_active("breach/harbor/mttr/7d",
                              _labels("PartnerKpiBreach", partner="harbor-voice", kpi="mttr", window="7d"),
                              {"summary": "harbor-voice breaches mttr"}, _now_ms())
            wait_for(lambda: sender.failed_posts >= 2, what="failed posts while Alertmanager is down")
            assert sender.pending == 1 and sender.sent_batches == 0
            am.start()
            arrived = wait_for(lambda: alertmanager_alert(am, "PartnerKpiBreach"),
                               what="the alert after Alertmanager came up")
            assert arrived["labels"]["partner"] == "harbor-voice"
            wait_for(lambda: sender.pending == 0, what="nothing pending")
            assert sender.sent_batches >= 1
    finally:
        am.stop()


def alertmanager_alert(am: Alertmanager, name: str) -> dict[str, Any] | None:
    return am.by_name().get(name)


def test_resend_restores_alerts_after_alertmanager_lost_them(am_binary: str, tmp_path: Path) -> None:
    am = Alertmanager(am_binary, tmp_path, free_port()).start()
    sender = AlertSender(am.url, resend_interval_s=1, backoff_initial_s=0.1)
    try:
        with SenderThread(sender):
            sender.set_active("breach/orchid/csat/24h",
                              _labels("PartnerKpiBreach", partner="orchid-it", kpi="csat"),
                              {"summary": "orchid-it breaches csat"}, _now_ms())
            wait_for(lambda: alertmanager_alert(am, "PartnerKpiBreach"), what="the alert")
            am.stop()
            am.start()  # fresh storage: the alert is gone until the next resend
            wait_for(lambda: alertmanager_alert(am, "PartnerKpiBreach"), what="the resent alert")
    finally:
        am.stop()


def test_example_config_inhibits_partner_alerts_while_the_feed_is_stale(am_binary: str,
                                                                          tmp_path: Path) -> None:
    """config/alertmanager.yml in a real Alertmanager: the inhibit_rules work."""
    am = Alertmanager(am_binary, tmp_path, free_port(), config=EXAMPLE_CONFIG.read_text()).start()
    sender = AlertSender(am.url, resend_interval_s=300)
    now = _now_ms()
    try:
        with SenderThread(sender):
            sender.set_active("breach", _labels("PartnerKpiBreach"), {}, now)
            sender.set_active("risk", _labels("PartnerKpiAtRisk", severity="warning"), {}, now)
            sender.set_active("below", _labels("PartnerKpiBelowTarget", partner="bluefiber",
                                               severity="warning"), {}, now)
            # Alertmanager lists an alert before its inhibitor has marked it (seen on a loaded
            # machine): wait for the at-risk alert to be marked, then check every state.
            got = wait_for(lambda: a if len(a := am.by_name()) == 3 and a["PartnerKpiAtRisk"]
                           ["status"]["state"] == "suppressed" else None,
                           what="3 alerts, the at-risk one suppressed")
            # A breach inhibits the warnings of the same partner, KPI and window only.
            assert got["PartnerKpiAtRisk"]["status"]["state"] == "suppressed"
            assert got["PartnerKpiAtRisk"]["status"]["inhibitedBy"]
            assert got["PartnerKpiBelowTarget"]["status"]["state"] == "active"
            assert got["PartnerKpiBreach"]["status"]["state"] == "active"
            assert sorted(r["name"] for r in got["PartnerKpiBreach"]["receivers"]) == [
                "executive-digest", "oncall"]

            sender.set_active("stale/calls", {"alertname": "PartnerpulseFeedStale", "service": "partnerpulse",
                                              "scope": "pipeline", "severity": "critical",
                                              "topic": "calls"}, {}, now)

            def partner_alerts_muted() -> dict[str, dict[str, Any]] | None:
                alerts = am.by_name()
                partner = [a for n, a in alerts.items() if n.startswith("Partner") and "Kpi" in n]
                if "PartnerpulseFeedStale" in alerts and len(partner) == 3 and all(
                        a["status"]["state"] == "suppressed" for a in partner):
                    return alerts
                return None

            got = wait_for(partner_alerts_muted, what="partner alerts inhibited by the stale feed")
            assert got["PartnerpulseFeedStale"]["status"]["state"] == "active"
            assert got["PartnerKpiBreach"]["status"]["inhibitedBy"]

            sender.resolve("stale/calls", _now_ms())
            wait_for(lambda: am.by_name().get("PartnerKpiBreach", {}).get("status", {}).get("state")
                     == "active", what="the breach un-inhibited once the feed is fresh")
    finally:
        am.stop()


# --- against fakes --------------------------------------------------------------------------
class FakeAlertmanager:
    """Answers POST /api/v2/alerts with the given statuses in turn (then 200); records bodies."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.posts: list[tuple[int, list[dict[str, Any]]]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status = fake.statuses.pop(0) if fake.statuses else 200
                fake.posts.append((status, body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeAlertmanager:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_5xx_is_retried_and_the_payload_is_what_prometheus_sends() -> None:
    with FakeAlertmanager([503, 500]) as fake:
        sender = AlertSender(fake.url, resend_interval_s=60, backoff_initial_s=0.05)
        started = _now_ms() - 5_000
        with SenderThread(sender):
            sender.set_active("k1", _labels("PartnerKpiBreach"), {"summary": "s"}, started)
            wait_for(lambda: sender.pending == 0, what="delivery after two 5xx")
            assert sender.failed_posts == 2 and sender.sent_batches == 1
            assert [s for s, _ in fake.posts] == [503, 500, 200]
            assert fake.posts[0][1][0]["labels"] == fake.posts[2][1][0]["labels"]  # the same alert
            (alert,) = fake.posts[-1][1]
            assert set(alert) == {"labels", "annotations", "startsAt", "endsAt"}
            assert all(isinstance(v, str) for v in (*alert["labels"].values(),
                                                    *alert["annotations"].values()))
            # endsAt of an active alert: about now + 4 x resend interval, as Prometheus does
            ends = calendar.timegm(time.strptime(alert["endsAt"][:19], "%Y-%m-%dT%H:%M:%S"))
            assert 200 < ends - time.time() <= 241

            ended = _now_ms()
            sender.resolve("k1", ended)
            wait_for(lambda: len(fake.posts) == 4 and sender.pending == 0, what="the resolution")
            (resolution,) = fake.posts[-1][1]
            assert resolution["labels"] == alert["labels"]
            assert resolution["endsAt"] == time.strftime(
                "%Y-%m-%dT%H:%M:%S", time.gmtime(ended / 1000)) + f".{ended % 1000:03d}Z"


def test_a_4xx_is_not_retried_forever() -> None:
    with FakeAlertmanager([400]) as fake:
        sender = AlertSender(fake.url, resend_interval_s=60, backoff_initial_s=0.05)
        with SenderThread(sender):
            sender.set_active("k1", _labels("PartnerKpiBreach"), {}, _now_ms())
            wait_for(lambda: sender.failed_posts == 1 and sender.pending == 0, what="the 400")
            sender.set_active("k2", _labels("PartnerKpiAtRisk"), {}, _now_ms())
            wait_for(lambda: sender.sent_batches == 1 and sender.pending == 0, what="the next post")
            assert [s for s, _ in fake.posts] == [400, 200]
            assert [a["labels"]["alertname"] for a in fake.posts[1][1]] == ["PartnerKpiAtRisk"]


# --- state, no network ----------------------------------------------------------------------
def test_values_must_be_plain_strings() -> None:
    sender = AlertSender("http://127.0.0.1:1")
    with pytest.raises(TypeError):
        sender.set_active("k", {"alertname": "X", "value": 1.5}, {}, 0)  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        sender.set_active("k", {"alertname": "X"}, {"summary": None}, 0)  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        sender.set_active("k", {"bad-name": "x"}, {}, 0)
    with pytest.raises(ValueError):
        sender.set_active("k", {}, {}, 0)
    with pytest.raises(ValueError):
        AlertSender("127.0.0.1:9093")
    assert sender.pending == 0 and sender.active == 0


def test_changed_labels_resolve_the_old_alert_and_limits_hold() -> None:
    sender = AlertSender("http://127.0.0.1:1", max_pending=3)
    sender.set_active("k", _labels("PartnerKpiBreach", tier="premier"), {}, 1_000)
    sender.set_active("k", _labels("PartnerKpiBreach", tier="premier"), {}, 1_000)  # no change
    assert (sender.active, sender.pending) == (1, 1)
    sender.set_active("k", _labels("PartnerKpiBreach", tier="business"), {}, 1_000)
    assert (sender.active, sender.pending) == (1, 2)  # the premier label set is being resolved
    payload, _ = sender._batch(full=False, now_ms=2_000)
    tiers = sorted((a["labels"]["tier"], a["endsAt"] > "2000") for a in payload)
    assert [t for t, _ in tiers] == ["business", "premier"]
    # at max_pending, resolutions give way first (Alertmanager expires them by endsAt) ...
    sender.set_active("k2", _labels("PartnerKpiAtRisk"), {}, 1_000)
    sender.set_active("k3", _labels("PartnerKpiAtRisk", kpi="csat"), {}, 1_000)
    assert (sender.active, sender.pending, sender.dropped) == (3, 3, 1)
    # ... then new alerts are refused, never the active ones
    sender.set_active("k4", _labels("PartnerKpiAtRisk", kpi="xla"), {}, 1_000)
    assert (sender.active, sender.dropped) == (3, 2)
    sender.resolve("unknown", 5_000)  # no-op
    sender.resolve("k2", 500)  # before its start: clamped (Alertmanager rejects end < start)
    payload, _ = sender._batch(full=False, now_ms=6_000)
    (resolution,) = [a for a in payload if a["labels"]["alertname"] == "PartnerKpiAtRisk"
                     and a["labels"]["kpi"] == "asa"]
    assert resolution["endsAt"] == resolution["startsAt"] == "1970-01-01T00:00:01.000Z"


def test_stop_without_run_and_on_the_same_loop() -> None:
    async def main() -> None:
        sender = AlertSender("http://127.0.0.1:1", resend_interval_s=300)
        await sender.stop()  # not running: returns at once
        other = AlertSender(f"http://127.0.0.1:{free_port()}", resend_interval_s=300, timeout_s=1)
        task = asyncio.create_task(other.run())
        other.set_active("k", _labels("PartnerKpiBreach"), {}, _now_ms())
        for _ in range(200):
            if other.failed_posts:
                break
            await asyncio.sleep(0.02)
        await asyncio.wait_for(other.stop(), 10)
        assert task.done() and task.exception() is None
        assert other.pending == 1  # kept: nothing was delivered

    asyncio.run(main())


# --- several Alertmanagers (an HA cluster) -----------------------------------------------------
def test_every_alertmanager_gets_every_alert_while_one_is_down_at_first(am_binary: str,
                                                                         tmp_path: Path) -> None:
    """Prometheus' HA model: each Alertmanager gets every alert. One that is down keeps its own
    queue and retries; the other receives everything meanwhile, and the late one catches up."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    up = Alertmanager(am_binary, tmp_path / "a", free_port()).start()
    late = Alertmanager(am_binary, tmp_path / "b", free_port())  # connection refused for now
    # a long resend interval: the late one must get the alerts from its own retries
    fanout = AlertFanout([up.url, late.url], resend_interval_s=300, timeout_s=2,
                         backoff_initial_s=0.1, backoff_max_s=0.5)
    up_sender, late_sender = fanout.senders
    breach = _labels("PartnerKpiBreach")
    risk = _labels("PartnerKpiAtRisk", partner="bluefiber", kpi="csat", severity="warning")
    try:
        with SenderThread(fanout):
            fanout.set_active("breach", breach, {"summary": "breach"}, _now_ms())
            fanout.set_active("risk", risk, {"summary": "risk"}, _now_ms())

            def labels(am: Alertmanager) -> list[dict[str, str]]:
                return sorted((a["labels"] for a in am.alerts()), key=lambda x: x["alertname"])

            want = sorted([breach, risk], key=lambda x: x["alertname"])
            wait_for(lambda: labels(up) == want, what="both alerts in the running Alertmanager")
            wait_for(lambda: late_sender.failed_posts >= 2, what="posts to the down one failing")
            # not held back by the down one, and nothing of it was dropped
            wait_for(lambda: up_sender.pending == 0, what="the running one's queue empty")
            assert late_sender.pending == 2
            assert fanout.dropped == 0

            late.start()
            wait_for(lambda: labels(late) == want, what="both alerts in the late Alertmanager")
            wait_for(lambda: fanout.pending == 0, what="nothing pending anywhere")

            fanout.resolve("breach", _now_ms())
            for am in (up, late):
                wait_for(lambda am=am: labels(am) == [risk], what=f"the resolution in {am.url}")
    finally:
        up.stop()
        late.stop()


def test_alertmanager_urls_from_the_flag_and_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A repeated --alertmanager, or PARTNERPULSE_ALERTMANAGER with one URL (as docker-compose.yml
    gives) or a comma-separated list; the worker gets one sender per URL."""
    from typer.testing import CliRunner

    import streams.cli
    from streams.config.settings import Settings
    from streams.runtime.pipeline import Pipeline

    started: list[Settings] = []
    monkeypatch.setattr(streams.cli, "run_worker", started.append)
    a, b = "http://am-0:9093", "http://am-1.example:9093/prefix"
    result = CliRunner().invoke(streams.cli.app, ["worker", "--alertmanager", a, "--alertmanager", b])
    assert result.exit_code == 0, result.output
    assert started[-1].alertmanager == [a, b]

    monkeypatch.setenv("PARTNERPULSE_ALERTMANAGER", a)
    assert Settings().alertmanager == [a]
    monkeypatch.setenv("PARTNERPULSE_ALERTMANAGER", f"{a}, {b}")
    settings = Settings(store="memory")
    assert settings.alertmanager == [a, b]
    pipeline = Pipeline(settings)
    assert isinstance(pipeline.sender, AlertFanout)
    assert [s.url for s in pipeline.sender.senders] == [a, b]
    monkeypatch.delenv("PARTNERPULSE_ALERTMANAGER")
    assert Settings().alertmanager == [] and Pipeline(Settings(store="memory")).sender is None


def test_alerts_dropped_past_the_queue_bound_are_exported() -> None:
    """What ``max_pending`` turns away is counted and shown in the worker's /metrics text."""
    from prometheus_client.parser import text_string_to_metric_families

    from streams.config.settings import Settings
    from streams.runtime.pipeline import Pipeline

    urls = [f"http://127.0.0.1:{free_port()}" for _ in range(2)]  # never posted to: no run()
    pipeline = Pipeline(Settings(store="memory", alertmanager=urls))
    max_pending, fired = 3, 8
    pipeline.sender = AlertFanout(urls, max_pending=max_pending)  # a small bound, same wiring
    for i in range(fired):
        pipeline.sender.set_active(f"k{i}", _labels("PartnerKpiBreach", kpi=f"kpi{i}"), {}, _now_ms())
    # nothing resolved that could make room: each Alertmanager's queue refuses what is past it
    expected = len(urls) * (fired - max_pending)

    def sample(name: str) -> float:
        text = pipeline.collector.exposition().decode()
        return next(s.value for f in text_string_to_metric_families(text)
                    for s in f.samples if s.name == name)

    assert sample("partnerpulse_alertmanager_dropped_alerts_total") == expected
    # named and typed like its sibling counter
    families = {f.name: f.type for f in
                text_string_to_metric_families(pipeline.collector.exposition().decode())}
    assert families["partnerpulse_alertmanager_dropped_alerts"] == "counter"
    assert families["partnerpulse_alertmanager_failed_posts"] == "counter"
    assert sample("partnerpulse_alertmanager_pending_alerts") == len(urls) * max_pending
