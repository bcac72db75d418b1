"""Running real workers against the embedded broker, and reading what they export."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
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
                 extra: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
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
        return self.spawn().wait_ready(timeout)

    def wait_ready(self, timeout: float = 90.0) -> Worker:
        poll(self._ready_or_died, timeout, f"worker on :{self.port} to be ready")
        return self

    def spawn(self) -> Worker:
        """Start the process without waiting for it to be ready."""
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                     env=self.env)
        log.close()
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

    def ready_or_none(self) -> bool | None:
        """Whether /ready says ready; None while the endpoint does not answer."""
        try:
            return bool(self.ready().get("ready"))
        except (OSError, ValueError):
            return None

    def processed_or_zero(self) -> int:
        """Messages processed so far, 0 while the endpoint does not answer."""
        try:
            return self.processed()
        except (OSError, ValueError):
            return 0

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

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rss_kb(self) -> int:
        """Resident set size of the worker process (VmRSS in /proc), KiB."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS line")

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
    """Produce (topic, key, value) messages and flush; returns how many.

    Raises if the broker did not take every message: ``flush()`` alone returns quietly when a
    send failed, and a test that silently lost input would compare against the wrong events.
    """
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks=1)
    futures = []
    for topic, key, value in messages:
        futures.append(producer.send(topic, key=key, value=value))
    producer.flush()
    producer.close()
    failed = [f.exception for f in futures if f.failed()]
    if failed:
        raise AssertionError(f"{len(failed)} of {len(futures)} messages not delivered: {failed[0]!r}")
    return len(futures)


def produce_bulk(bootstrap: str, messages: Iterable[tuple[str, bytes | None, bytes]]) -> int:
    """:func:`produce` with aiokafka and large batches: ~20x faster on big messages (6,000 of
    16 KiB in 0.4 s instead of 9 s through kafka-python), for tests that must put a backlog in
    place inside a few seconds. Raises, like :func:`produce`, if a message was not taken."""
    import asyncio

    from aiokafka import AIOKafkaProducer

    async def run() -> int:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks=1,
                                    max_batch_size=512 * 1024)
        await producer.start()
        try:
            futures = [await producer.send(topic, value, key=key) for topic, key, value in messages]
            results = await asyncio.gather(*futures, return_exceptions=True)
        finally:
            await producer.stop()
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise AssertionError(f"{len(failed)} of {len(results)} messages not delivered: {failed[0]!r}")
        return len(results)

    return asyncio.run(run())


def as_messages(events: list[tuple[str, dict[str, Any]]],
                unkeyed_every: int = 3) -> list[tuple[str, bytes | None, bytes]]:
    """Contract events as messages, keyed by partner except every n-th (random key)."""
    out: list[tuple[str, bytes | None, bytes]] = []
    for i, (topic, event) in enumerate(events):
        key = f"other-{i}".encode() if unkeyed_every and i % unkeyed_every == 0 else (
            event["partner_id"].encode())
        out.append((topic, key, orjson.dumps(event)))
    return out


def scrape_round(workers: list[Worker]) -> tuple[dict[int, str | None], float]:
    """Scrape every worker's /metrics at the same moment (one thread each).

    Returns port -> body (None when the worker did not answer) and the round's span in
    seconds, first request sent to last body received: what "at once" means in the tests.
    """
    bodies: dict[int, str | None] = {}

    def one(worker: Worker) -> None:
        try:
            bodies[worker.port] = worker.metrics_text()
        except (OSError, ValueError):
            bodies[worker.port] = None

    started = time.monotonic()
    threads = [threading.Thread(target=one, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return bodies, time.monotonic() - started


def exported_partners(text: str) -> set[str]:
    """Partners in a /metrics body (from partnerpulse_partner_info)."""
    info = kpi_series(text).get("partnerpulse_partner_info", {})
    return {partner for (partner, _tier) in info}


class StreamProducer:
    """Produces messages from a background thread, ``batch`` every ``interval`` seconds.

    Models a live producer that keeps going while the test breaks things: kafka-python
    buffers and retries (``retries`` is unbounded by default) until ``delivery_timeout_s``;
    every send's future is kept, so :meth:`finish` can prove nothing was lost.
    """

    def __init__(self, bootstrap: str, messages: list[tuple[str, bytes | None, bytes]],
                 batch: int = 20, interval: float = 0.2, delivery_timeout_s: float = 240.0) -> None:
        self.messages = messages
        self.batch, self.interval = batch, interval
        timeout_ms = int(delivery_timeout_s * 1000)
        self.producer = KafkaProducer(
            bootstrap_servers=bootstrap, acks=1, linger_ms=5,
            # a frozen or unreachable broker must make sends wait, not fail: block on a full
            # buffer or missing metadata, and keep retrying, for as long as a delivery may take
            delivery_timeout_ms=timeout_ms, max_block_ms=timeout_ms, request_timeout_ms=20_000,
            reconnect_backoff_max_ms=2_000)
        self.futures: list[Any] = []
        self.sent = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="stream-producer", daemon=True)

    def start(self) -> StreamProducer:
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            for i, (topic, key, value) in enumerate(self.messages):
                if self._stop.is_set():
                    return
                self.futures.append(self.producer.send(topic, key=key, value=value))
                self.sent = i + 1
                if self.sent % self.batch == 0:
                    self._stop.wait(self.interval)  # pacing the stream, not synchronisation
        except BaseException as exc:  # reported by finish()
            self.error = exc

    @property
    def done(self) -> bool:
        return not self.thread.is_alive()

    def finish(self, timeout: float = 300.0) -> int:
        """Wait for every message to be sent and acknowledged; raise if any was lost."""
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "producer thread did not finish"
        assert self.error is None, f"producer failed: {self.error!r}"
        self.producer.flush(timeout=timeout)
        self.producer.close()
        failed = [f.exception for f in self.futures if f.failed()]
        assert not failed, f"{len(failed)} of {len(self.futures)} not delivered: {failed[0]!r}"
        assert all(f.succeeded() for f in self.futures)
        return len(self.futures)


class TcpProxy:
    """A loopback TCP relay whose connections the test can cut (and later allow again).

    ``cut()`` closes the listening socket and every relayed connection, so clients see resets
    and refused reconnects, as with a broker behind a failed network path; ``restore()`` listens
    on the same port again.
    """

    def __init__(self, upstream: tuple[str, int], port: int | None = None) -> None:
        self.upstream = upstream
        self.port = port if port is not None else free_port()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self.accepted = 0

    def start(self) -> TcpProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    restore = start

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # the listener was shut by cut()
            if self._listener is not listener:  # accepted in the instant of a cut: refuse it
                client.close()
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._conns += [client, server]
                self.accepted += 1
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> int:
        """Refuse new connections and reset the open ones; returns how many were cut."""
        listener, self._listener = self._listener, None
        if listener is not None:
            # shutdown() first: close() alone leaves a thread blocked in accept() holding the
            # socket open, and that accept lets one reconnecting client through the "cut"
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, []
        for sock in conns:
            try:
                # RST instead of FIN: the peer sees the path break, not a polite close
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                # shutdown() first, as for the listener: close() alone does not wake a pump
                # thread blocked in recv() on the socket, and that syscall keeps the connection
                # open, so a peer waiting for an answer saw nothing. Once, a worker's producer
                # waited so for a metadata answer until the test gave up (its request timeout
                # is Faust's 20 minutes). With shutdown() the peer sees the end at once.
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            except OSError:
                pass
        return len(conns) // 2

    def close(self) -> None:
        self.cut()
