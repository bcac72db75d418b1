"""Running real workers against the embedded broker, and reading what they export."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from streams.broker import free_port

REPO = Path(__file__).resolve().parent.parent


def poll(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Call ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = condition()
            if result:
                return result
        except (OSError, ValueError) as exc:  # endpoint not up yet, partial body
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} ({last_error})")


class Worker:
    """A ``partnerpulse worker`` subprocess with its own port and log."""

    def __init__(self, broker_url: str, workdir: Path, app_id: str = "pp-test",
                 clock: str = "event", partitions: int = 4, name: str = "worker",
                 extra: list[str] | None = None) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.log_path = workdir / f"{name}.log"
        self.cmd = [
            sys.executable, "-m", "streams", "worker", "--broker", broker_url,
            "--clock", clock, "--web-port", str(self.port), "--store", "memory",
            "--data-dir", str(workdir / name), "--partitions", str(partitions),
            "--rebalance-timeout", "3", "--app-id", app_id, "--log-level", "warning",
            *(extra or []),
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90.0) -> Worker:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        log.close()
        poll(self._ready_or_died, timeout, f"worker on :{self.port} to be ready")
        return self

    def _ready_or_died(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}")
        return bool(self.ready().get("ready"))

    def ready(self) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/ready", timeout=5) as r:
                return dict(orjson.loads(r.read()))
        except urllib.error.HTTPError as exc:  # 503 while recovering carries the same body
            return dict(orjson.loads(exc.read()))

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as r:
            return str(r.read().decode())

    def counts(self) -> dict[str, int]:
        return dict(self.ready().get("counts", {}))

    def processed(self) -> int:
        return sum(self.counts().values())

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def stop(self) -> None:
        self.kill(signal.SIGTERM)

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def kpi_series(text: str) -> dict[str, dict[tuple[str, ...], float]]:
    """Exported samples by metric name -> label values (sorted by label name) -> value."""
    out: dict[str, dict[tuple[str, ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = tuple(v for _, v in sorted(sample.labels.items()))
            out.setdefault(sample.name, {})[key] = sample.value
    return out


def produce(bootstrap: str, messages: Iterable[tuple[str, bytes | None, bytes]]) -> int:
    """Produce (topic, key, value) messages and flush; returns how many."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks=1)
    n = 0
    for topic, key, value in messages:
        producer.send(topic, key=key, value=value)
        n += 1
    producer.flush()
    producer.close()
    return n


def as_messages(events: list[tuple[str, dict[str, Any]]],
                unkeyed_every: int = 3) -> list[tuple[str, bytes | None, bytes]]:
    """Contract events as messages, keyed by partner except every n-th (random key)."""
    out: list[tuple[str, bytes | None, bytes]] = []
    for i, (topic, event) in enumerate(events):
        key = f"other-{i}".encode() if unkeyed_every and i % unkeyed_every == 0 else (
            event["partner_id"].encode())
        out.append((topic, key, orjson.dumps(event)))
    return out
