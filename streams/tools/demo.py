"""``partnerpulse demo``: an embedded broker, a worker and the simulator on this machine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console

from streams.ingest.topics import all_topics
from streams.runtime.kafka_admin import ensure_topics
from streams.tools.broker import EmbeddedBroker
from streams.tools.simulate import run_simulator

console = Console(stderr=True)


def wait_ready(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> dict[str, Any]:
    """Poll a worker's /ready until it says ready; raise on timeout or worker exit."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"worker exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as resp:
                body = orjson.loads(resp.read())
                if body.get("ready"):
                    return dict(body)
        except OSError as exc:
            last = str(exc)
        time.sleep(0.2)
    raise TimeoutError(f"worker on port {port} not ready after {timeout:.0f}s ({last})")


def demo(duration: float, web_port: int, rate: float, drift_minutes: float,
         alertmanager: str | None) -> None:
    """Run the demo until ``duration`` seconds have passed (0: until Ctrl-C), then stop the worker."""
    partitions = 4
    with tempfile.TemporaryDirectory(prefix="partnerpulse-demo-") as tmp, \
            EmbeddedBroker(log_path=Path(tmp) / "broker.log") as broker:
        ensure_topics(broker.bootstrap, all_topics(partitions))
        cmd = [sys.executable, "-m", "streams", "worker", "--broker", broker.url,
               "--web-port", str(web_port), "--data-dir", tmp, "--partitions", str(partitions)]
        if alertmanager:
            cmd += ["--alertmanager", alertmanager]
        log_file = (Path(tmp) / "worker.log").open("wb")
        # the embedded broker is plaintext on loopback: Kafka security settings meant for a
        # real cluster must not leak into the demo's worker
        env = {k: v for k, v in os.environ.items() if not k.startswith("PARTNERPULSE_KAFKA_")}
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT,
                                env={**env, "PYTHONUNBUFFERED": "1"})
        try:
            _run(proc, broker.url, broker.bootstrap, duration, web_port, rate, drift_minutes)
        except KeyboardInterrupt:
            pass
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log_file.close()


def _run(proc: subprocess.Popen[bytes], url: str, bootstrap: str, duration: float, web_port: int,
         rate: float, drift_minutes: float) -> None:
    """Wait for the worker, tell where to look, then simulate until the end."""
    console.print(f"broker  {url} (embedded tansu)")
    console.print("worker  starting…")
    wait_ready(web_port, 90, proc)
    console.print(f"[bold green]ready[/bold green]  live wall: http://127.0.0.1:{web_port}/wall",
                  soft_wrap=True)
    console.print(f"       metrics: http://127.0.0.1:{web_port}/metrics   "
                  f"status: http://127.0.0.1:{web_port}/ready", soft_wrap=True)
    console.print(f"       fleet view: http://127.0.0.1:{web_port}/wall?view=fleet   "
                  f"tickets about to breach: partnerpulse open --state urgent --worker "
                  f"http://127.0.0.1:{web_port}", soft_wrap=True)
    console.print("simulator: 12 partners, 'summit-broadband' drifting past ASA/OTS, "
                  "'vertex-outsourcing' gaming escalations; Ctrl-C to stop")
    stop_at = time.monotonic() + duration if duration > 0 else None
    produced = run_simulator(bootstrap, rate, 7, drift_minutes, stop_at)
    console.print(f"produced {produced} events; stopping")
