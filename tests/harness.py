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
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson
from kafka import KafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from streams.tools.broker import EmbeddedBroker, free_port
from tests.streams_gen import _ms

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
        """The worker runs the shipped settings but for its broker, port, clock, data directory,
        partitions, app id and log level, and whatever ``extra`` adds."""
        self.port = free_port()
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.workdir = workdir
        self.log_path = workdir / f"{name}.log"
        self.cmd = [
            sys.executable, "-m", "streams", "worker", "--broker", broker_url,
            "--clock", clock, "--web-port", str(self.port), "--data-dir", str(workdir / name),
            "--partitions", str(partitions), "--app-id", app_id, "--log-level", "warning",
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


def flat_values(series: dict[str, dict[tuple[str, ...], float]],
                ) -> tuple[dict[tuple[str, str, str], float], dict[tuple[str, str, str], float]]:
    """(values, samples) of :func:`kpi_series` keyed (partner, kpi, window), the per-channel
    series under kpi 'kpi@channel' (as :func:`tests.reference.compute_flat` keys them)."""
    values: dict[tuple[str, str, str], float] = {}
    samples: dict[tuple[str, str, str], float] = {}
    # label tuples are sorted by label name: (kpi, partner, window), (channel, kpi, partner, window)
    for (k, p, w), v in series.get("partnerpulse_kpi_value", {}).items():
        values[(p, k, w)] = v
    for (k, p, w), v in series.get("partnerpulse_kpi_samples", {}).items():
        samples[(p, k, w)] = v
    for (c, k, p, w), v in series.get("partnerpulse_kpi_channel_value", {}).items():
        values[(p, f"{k}@{c}", w)] = v
    for (c, k, p, w), v in series.get("partnerpulse_kpi_channel_samples", {}).items():
        samples[(p, f"{k}@{c}", w)] = v
    return values, samples


def produce(bootstrap: str, messages: Iterable[tuple[str, bytes | None, bytes]]) -> int:
    """Produce (topic, key, value) messages and flush; returns how many.

    Raises if the broker did not take every message: ``flush()`` alone returns quietly when a
    send failed, and a test that silently lost input would compare against the wrong events.
    """
    return len(_produced(bootstrap, messages))


def produce_to(bootstrap: str, messages: Iterable[tuple[str, bytes | None, bytes]],
               ) -> dict[str, int]:
    """:func:`produce`, returning the offset of the last message written to each partition
    (``"topic/partition"``, as the worker's /ready ``positions`` names them)."""
    last: dict[str, int] = {}
    for meta in _produced(bootstrap, messages):
        name = f"{meta.topic}/{meta.partition}"
        last[name] = max(meta.offset, last.get(name, -1))
    return last


def _produced(bootstrap: str, messages: Iterable[tuple[str, bytes | None, bytes]]) -> list[Any]:
    """The broker's record metadata of each message, once every one is written."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks=1)
    futures = []
    for topic, key, value in messages:
        futures.append(producer.send(topic, key=key, value=value))
    producer.flush()
    producer.close()
    failed = [f.exception for f in futures if f.failed()]
    if failed:
        raise AssertionError(f"{len(failed)} of {len(futures)} messages not delivered: {failed[0]!r}")
    return [f.value for f in futures]


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


def drain_into(engine: Any, journal: dict[bytes, bytes] | None = None) -> dict[bytes, bytes]:
    """The journal table as the engine's writes leave it: ``engine.drain()``'s records applied
    to ``journal`` (a new one when None), a None value deleting its key, as the changelog does."""
    out = {} if journal is None else journal
    for key, value in engine.drain():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


UNKEYED_SPAN_MS = 29 * 86_400_000
"""The longest span of one partner's event times :func:`as_messages` sends partly unkeyed: a
day inside the 30-day horizon, which counts in whole days."""


def _check_span_for_unkeyed(events: list[tuple[str, dict[str, Any]]]) -> None:
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for _, event in events:
        try:
            ts = _ms(event["ts"])
        except (KeyError, TypeError, ValueError):  # a malformed event: no time to span
            continue
        partner = str(event.get("partner_id"))
        first[partner] = min(first.get(partner, ts), ts)
        last[partner] = max(last.get(partner, ts), ts)
    for partner, ts in last.items():
        if ts - first[partner] > UNKEYED_SPAN_MS:
            raise AssertionError(
                f"{partner}'s events span {(ts - first[partner]) / 86_400_000:.1f} days: past "
                f"{UNKEYED_SPAN_MS // 86_400_000} days, unkeyed events (through the repartition "
                "topic) may be late or not depending on timing; use unkeyed_every=0 or a "
                "shorter span")


def as_messages(events: list[tuple[str, dict[str, Any]]],
                unkeyed_every: int = 3) -> list[tuple[str, bytes | None, bytes]]:
    """Contract events as messages, keyed by partner except every n-th (random key).

    An unkeyed event reaches its partner's partition through the repartition topic, later than
    the keyed ones beside it; how much later depends on the machine. With a replayed history
    that delay is days of event time, so a partner whose events span more than the lateness
    horizon (the largest window, 30 days) could see its oldest events late or not depending on
    the run. Refused here: such a test would compare numbers that depend on timing.
    """
    if unkeyed_every:
        _check_span_for_unkeyed(events)
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


# -- Kafka protocol fault relay ---------------------------------------------------------------

PRODUCE = 0  # Kafka api_key of Produce
MESSAGE_TOO_LARGE = 10  # MESSAGE_TOO_LARGE: aiokafka's MessageSizeTooLargeError, not retriable
FLEXIBLE_PRODUCE = 9  # Produce v9+ uses compact strings and tagged fields (KIP-482)


class _Reader:
    """Big-endian reads from a Kafka frame, with bounds checks (a short frame raises)."""

    def __init__(self, data: bytes | bytearray, offset: int = 0) -> None:
        self.data, self.offset = data, offset

    def take(self, n: int) -> int:
        """Skip ``n`` bytes; returns where they started."""
        start = self.offset
        if n < 0 or start + n > len(self.data):
            raise ValueError(f"frame too short: {n} bytes at {start} of {len(self.data)}")
        self.offset += n
        return start

    def int16(self) -> int:
        return int(struct.unpack_from(">h", self.data, self.take(2))[0])

    def int32(self) -> int:
        return int(struct.unpack_from(">i", self.data, self.take(4))[0])

    def string(self) -> str | None:
        """A (nullable) STRING: int16 length, -1 for null, then UTF-8 bytes."""
        n = self.int16()
        if n < 0:
            return None
        return bytes(self.data[self.take(n):self.offset]).decode("utf-8", errors="replace")

    def array_length(self) -> int:
        n = self.int32()
        return max(n, 0)  # -1 is a null array

    def uvarint(self) -> int:
        """An UNSIGNED_VARINT (7 bits a byte, least significant first)."""
        value = shift = 0
        while True:
            byte = self.data[self.take(1)]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
            if shift > 28:
                raise ValueError("varint longer than 5 bytes")

    def end(self) -> None:
        if self.offset != len(self.data):
            raise ValueError(f"{len(self.data) - self.offset} bytes left over at {self.offset}")


@dataclass(frozen=True)
class ProduceRequestInfo:
    """What the relay read of a Produce request (non-flexible versions v0-v8)."""

    version: int
    correlation_id: int
    acks: int
    topics: tuple[str, ...]
    partitions: tuple[tuple[int, ...], ...] = ()  # each topic's partitions, as in ``topics``


def parse_request_header(frame: bytes) -> tuple[int, int, int, int]:
    """api_key, api_version, correlation_id and the offset of the body (request header v1)
    of a frame with its 4-byte size prefix. Flexible requests have tagged fields after the
    client id: the returned offset is then that of the tagged fields, not of the body."""
    r = _Reader(frame, 4)
    api_key, version, correlation_id = r.int16(), r.int16(), r.int32()
    r.string()  # client_id
    return api_key, version, correlation_id, r.offset


def parse_produce_request(frame: bytes) -> ProduceRequestInfo:
    """Read a Produce request v0-v8 (size prefix included); raises ValueError on a flexible
    version or a frame that does not parse to its last byte."""
    api_key, version, correlation_id, offset = parse_request_header(frame)
    if api_key != PRODUCE:
        raise ValueError(f"api_key {api_key} is not Produce")
    if version >= FLEXIBLE_PRODUCE:
        raise ValueError(f"Produce v{version} is a flexible version: not parsed")
    r = _Reader(frame, offset)
    if version >= 3:
        r.string()  # transactional_id
    acks = r.int16()
    r.int32()  # timeout_ms
    topics, partitions = [], []
    for _ in range(r.array_length()):
        topics.append(r.string() or "")
        ids = []
        for _ in range(r.array_length()):
            ids.append(r.int32())  # partition
            r.take(max(r.int32(), 0))  # records (nullable bytes)
        partitions.append(tuple(ids))
    r.end()
    return ProduceRequestInfo(version, correlation_id, acks, tuple(topics), tuple(partitions))


def produce_acks(frame: bytes) -> int:
    """The acks of a Produce request of any version (size prefix included), read without
    the rest of the body: 0 means the broker sends no answer. Raises ValueError if the frame
    is not a Produce request or is too short."""
    api_key, version, _, offset = parse_request_header(frame)
    if api_key != PRODUCE:
        raise ValueError(f"api_key {api_key} is not Produce")
    r = _Reader(frame, offset)
    if version >= FLEXIBLE_PRODUCE:
        for _ in range(r.uvarint()):  # the request header's tagged fields
            r.uvarint()  # tag
            r.take(r.uvarint())  # its data
        n = r.uvarint()  # transactional_id: COMPACT_NULLABLE_STRING, length + 1, 0 for null
        if n:
            r.take(n - 1)
    elif version >= 3:
        r.string()  # transactional_id
    return r.int16()


def produce_error_response(request: ProduceRequestInfo, errors: dict[str, int]) -> bytes:
    """A Produce response (size prefix and response header v0 included) of the request's
    version answering every partition of every topic of ``request`` with that topic's code in
    ``errors`` (which must name them all): base offset, log append time and log start offset
    -1, throttle 0, and for v8 no record errors and a null error message. v0-v8 only."""
    version = request.version
    if version >= FLEXIBLE_PRODUCE:
        raise ValueError(f"Produce v{version} is a flexible version: not synthesized")
    out = bytearray(struct.pack(">ii", 0, request.correlation_id))
    out += struct.pack(">i", len(request.topics))
    for topic, ids in zip(request.topics, request.partitions, strict=True):
        name = topic.encode()
        out += struct.pack(">h", len(name)) + name + struct.pack(">i", len(ids))
        for partition in ids:
            out += struct.pack(">ihq", partition, errors[topic], -1)  # base_offset
            if version >= 2:
                out += struct.pack(">q", -1)  # log_append_time
            if version >= 5:
                out += struct.pack(">q", -1)  # log_start_offset
            if version >= 8:
                out += struct.pack(">ih", 0, -1)  # record_errors: empty; error_message: null
    if version >= 1:
        out += struct.pack(">i", 0)  # throttle_time_ms
    struct.pack_into(">i", out, 0, len(out) - 4)
    return bytes(out)


def rewrite_produce_response(frame: bytes, version: int, errors: dict[str, int]) -> tuple[bytes, int]:
    """The Produce response ``frame`` (size prefix and response header v0 included) with
    every partition of each topic in ``errors`` answered that topic's error code (offsets -1,
    as a broker answers a failed write), and how many partitions were rewritten. Versions
    v0-v8 only; raises ValueError on a flexible version or a frame that does not parse to its
    last byte."""
    if version >= FLEXIBLE_PRODUCE:
        raise ValueError(f"Produce v{version} is a flexible version: not parsed")
    out = bytearray(frame)
    r = _Reader(out, 8)  # size, correlation_id
    rewritten = 0
    for _ in range(r.array_length()):
        name = r.string()
        for _ in range(r.array_length()):
            r.int32()  # partition
            at = r.take(2)  # error_code
            offsets = r.take(8 * (1 + (version >= 2) + (version >= 5)))  # base, append time, start
            if name in errors:
                struct.pack_into(">h", out, at, errors[name])
                for i in range(offsets, r.offset, 8):
                    struct.pack_into(">q", out, i, -1)
                rewritten += 1
            if version >= 8:
                for _ in range(r.array_length()):  # record_errors
                    r.int32()  # batch_index
                    r.string()  # batch_index_error_message
                r.string()  # error_message
    if version >= 1:
        r.int32()  # throttle_time_ms
    r.end()
    return bytes(out), rewritten


def _compact_string(text: str) -> bytes:
    """A COMPACT_STRING: unsigned varint of length + 1, then the bytes."""
    raw = text.encode()
    n, prefix = len(raw) + 1, bytearray()
    while n >= 0x80:
        prefix.append((n & 0x7F) | 0x80)
        n >>= 7
    prefix.append(n)
    return bytes(prefix) + raw


def _frames(sock: socket.socket) -> Iterable[bytes]:
    """Kafka frames (4-byte big-endian size, then the payload) read from ``sock``, each with
    its size prefix; ends at EOF."""
    buf = bytearray()
    while True:
        while len(buf) >= 4:
            size = int.from_bytes(buf[:4], "big", signed=True)
            if size < 0:
                raise ValueError(f"negative frame size {size}")
            if len(buf) < 4 + size:
                break
            frame = bytes(buf[:4 + size])
            del buf[:4 + size]
            yield frame
        data = sock.recv(65536)
        if not data:
            return
        buf += data


@dataclass(frozen=True)
class _Fault:
    mode: str  # "error", "drop" or "reject"
    error_code: int = 0


@dataclass
class _Pending:
    version: int
    errors: dict[str, int]  # faulted topic -> error code to answer
    drop: bool  # a topic of the request is in drop mode: swallow the answer


class _Link:
    """One client connection relayed to the broker, and its Produce requests in flight."""

    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client, self.server = client, server
        self.pending: dict[int, _Pending] = {}  # correlation id -> fault to apply
        self.stalled = False  # a response was dropped: later ones are held back too
        self.pumps_left = 2
        # The answers the client waits for, in request order: (correlation id, None) for a
        # request forwarded to the broker, (correlation id, frame) for a rejected one's
        # synthesized answer, sent once every answer ahead of it has gone out. The head is
        # never a synthesized answer. Guarded by ``lock``, which also serializes every write
        # to the client (both pumps write to it).
        self.order: deque[tuple[int | None, bytes | None]] = deque()
        self.lock = threading.Lock()

    def shutdown(self) -> None:
        for sock in (self.client, self.server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class KafkaFaultRelay:
    """A loopback relay between Kafka clients and a broker that reads the Kafka frames and
    can fail or swallow the broker's answers to Produce requests writing to one topic, or
    keep such requests from the broker and answer them itself.

    ``fail_produce(topic, code)``: the answer to every Produce request that writes to
    ``topic`` gets ``code`` as the error of each of that topic's partitions (other topics in
    the same request keep the broker's answer). ``drop_produce(topic)``: such answers are
    swallowed, and so is every later answer on that connection (a broker answers a
    connection's requests in order, so the client sees a hung broker, not a reordering: its
    request times out and it reconnects). ``heal()``: pass everything again. A fault applies
    to the requests sent while it is set. Everything else passes through untouched.

    The broker *did* take the records either way: only its answer changes. A dropped answer
    also holds back the other topics' results carried in the same request.

    ``reject_produce(topic, code)``: a Produce request that writes to ``topic`` is *not*
    forwarded, so the broker stores none of its records; the relay answers it itself with a
    Produce response of the request's version carrying ``code`` for every partition of every
    topic in that request: the other topics written by the same request fail too (with the
    code of the first rejected topic in it) and are not stored either. That answer goes to the
    client in request order, right after the broker's answers to the requests the client sent
    before it on that connection. A request with acks=0 gets no answer (as from a broker).
    Rejecting wins over the other faults of a request's other topics.

    Produce v0-v8 are parsed (aiokafka 0.14 sends up to v7); a flexible Produce request (v9+)
    naming a faulted topic cannot be faulted: it is recorded in ``problems``, and
    :meth:`check` (called by :meth:`stop` and by the fault setters) raises.

    Counters (read any time): ``accepted`` connections, ``produce_requests`` seen (all
    topics), ``produce_versions`` (Counter of Produce versions), ``requests_matched``
    (Produce requests writing to a faulted topic), ``responses_rewritten`` and
    ``partitions_rewritten``, ``responses_dropped`` (answers to matched requests swallowed)
    and ``responses_held`` (later answers swallowed on a stalled connection),
    ``requests_rejected`` (Produce requests answered by the relay, not forwarded) and
    ``answers_deferred`` (synthesized answers that had to wait for earlier broker answers).
    """

    def __init__(self, upstream: tuple[str, int] | None = None, port: int | None = None) -> None:
        self.upstream = upstream
        self.port = port if port is not None else free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self._listener: socket.socket | None = None
        self._links: list[_Link] = []
        self._threads: list[threading.Thread] = []
        self._faults: dict[str, _Fault] = {}
        self._lock = threading.Lock()
        self.accepted = 0
        self.produce_requests = 0
        self.produce_versions: Counter[int] = Counter()
        self.requests_matched = 0
        self.responses_rewritten = 0
        self.partitions_rewritten = 0
        self.responses_dropped = 0
        self.responses_held = 0
        self.requests_rejected = 0
        self.answers_deferred = 0
        self.problems: list[str] = []

    # -- control, from the test's thread -----------------------------------------------------
    def fail_produce(self, topic: str, error_code: int = MESSAGE_TOO_LARGE) -> None:
        """Answer Produce requests writing to ``topic`` with ``error_code`` on its partitions."""
        if not error_code:
            raise ValueError("error code 0 is success")
        self.check()
        with self._lock:
            self._faults[topic] = _Fault("error", error_code)

    def drop_produce(self, topic: str) -> None:
        """Swallow the answers to Produce requests writing to ``topic`` (they hang)."""
        self.check()
        with self._lock:
            self._faults[topic] = _Fault("drop")

    def reject_produce(self, topic: str, error_code: int = MESSAGE_TOO_LARGE) -> None:
        """Do not forward Produce requests writing to ``topic``: answer them ``error_code``
        from the relay, for every partition of every topic in the request (see the class)."""
        if not error_code:
            raise ValueError("error code 0 is success")
        self.check()
        with self._lock:
            self._faults[topic] = _Fault("reject", error_code)

    def heal(self, topic: str | None = None) -> None:
        """Stop faulting ``topic`` (every topic by default). Connections already stalled by a
        dropped answer stay stalled: their clients time out and reconnect."""
        with self._lock:
            if topic is None:
                self._faults.clear()
            else:
                self._faults.pop(topic, None)
        self.check()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "accepted": self.accepted, "produce_requests": self.produce_requests,
                "produce_versions": dict(self.produce_versions),
                "requests_matched": self.requests_matched,
                "responses_rewritten": self.responses_rewritten,
                "partitions_rewritten": self.partitions_rewritten,
                "responses_dropped": self.responses_dropped, "responses_held": self.responses_held,
                "requests_rejected": self.requests_rejected,
                "answers_deferred": self.answers_deferred,
                "problems": list(self.problems),
            }

    def check(self) -> None:
        """Raise if the relay met a request or answer it could not handle."""
        with self._lock:
            problems = list(self.problems)
        if problems:
            raise AssertionError(f"the Kafka fault relay could not do its job: {problems}")

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> KafkaFaultRelay:
        if self._listener is not None:
            return self
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        self._spawn(self._accept, listener, name=f"fault-relay-{self.port}")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Close the listener and every relayed connection (both ends see the end at once),
        wait for the relay's threads, then raise if the relay met a problem."""
        listener, self._listener = self._listener, None
        if listener is not None:
            # shutdown() first: close() alone leaves the accept() thread blocked (TcpProxy.cut)
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        deadline = time.monotonic() + timeout
        while True:  # again if the accept thread relayed one more connection meanwhile
            with self._lock:
                links = list(self._links)
                alive = [t for t in self._threads if t.is_alive()]
            if not alive or time.monotonic() >= deadline:
                break
            for link in links:
                link.shutdown()  # wakes the pumps blocked in recv(); the last one closes
            for thread in alive:
                thread.join(max(0.0, deadline - time.monotonic()))
        assert not alive, f"relay threads still running after stop(): {[t.name for t in alive]}"
        self.check()

    close = stop

    def __enter__(self) -> KafkaFaultRelay:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- relaying -----------------------------------------------------------------------------
    def _spawn(self, target: Callable[..., None], *args: Any, name: str) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def _problem(self, text: str) -> None:
        with self._lock:
            self.problems.append(text)
        print(f"KafkaFaultRelay :{self.port}: {text}", file=sys.stderr, flush=True)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # the listener was shut by stop()
            if self._listener is not listener or self.upstream is None:  # stopping, or no broker
                with contextlib.suppress(OSError):
                    client.shutdown(socket.SHUT_RDWR)
                client.close()
                if self._listener is not listener:
                    return
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                with contextlib.suppress(OSError):
                    client.shutdown(socket.SHUT_RDWR)
                client.close()
                continue
            server.settimeout(None)
            link = _Link(client, server)
            with self._lock:
                self._links.append(link)
                self.accepted += 1
            self._spawn(self._requests, link, name=f"fault-relay-{self.port}-requests")
            self._spawn(self._responses, link, name=f"fault-relay-{self.port}-responses")
            if self._listener is not listener:  # stop() ran meanwhile and may have missed it
                link.shutdown()

    def _requests(self, link: _Link) -> None:
        """Client -> broker: note the Produce requests to fault, forward every frame but the
        rejected ones."""
        try:
            for frame in _frames(link.client):
                if self._on_request(link, frame):  # before forwarding: the answer may come at once
                    link.server.sendall(frame)
        except (OSError, ValueError):
            pass
        self._end(link)

    def _on_request(self, link: _Link, frame: bytes) -> bool:
        """Note what to do with ``frame``'s answer; False if the relay answered it itself."""
        try:
            api_key, version, correlation_id, _ = parse_request_header(frame)
        except ValueError as exc:
            self._problem(f"unreadable request header: {exc}")
            self._expect(link, None)
            return True
        if api_key != PRODUCE:
            self._expect(link, correlation_id)  # every other request gets an answer
            return True
        with self._lock:
            self.produce_requests += 1
            self.produce_versions[version] += 1
            faults = dict(self._faults)
        try:
            answered = produce_acks(frame) != 0  # acks=0 gets no answer
        except ValueError:
            answered = True  # if none comes, the next answer tells (see _in_order)
        if faults and version >= FLEXIBLE_PRODUCE:
            named = [t for t in faults if _compact_string(t) in frame]
            if named:
                self._problem(f"Produce v{version} (flexible, not parsed) writes to faulted "
                              f"{named}: passed through unfaulted")
        elif faults:
            try:
                request = parse_produce_request(frame)
            except ValueError as exc:
                self._problem(f"unreadable Produce v{version} request: {exc}")
            else:
                hit = {topic: faults[topic] for topic in request.topics if topic in faults}
                rejected = [hit[t].error_code for t in request.topics
                            if t in hit and hit[t].mode == "reject"]
                if rejected:
                    self._reject(link, request, {
                        t: hit[t].error_code if t in hit and hit[t].mode == "reject" else rejected[0]
                        for t in request.topics})
                    return False
                if hit:
                    pending = _Pending(version, {t: f.error_code for t, f in hit.items()
                                                 if f.mode == "error"},
                                       drop=any(f.mode == "drop" for f in hit.values()))
                    with self._lock:
                        self.requests_matched += 1
                        if request.acks != 0:  # acks=0 gets no answer
                            link.pending[correlation_id] = pending
        if answered:
            self._expect(link, correlation_id)
        return True

    def _expect(self, link: _Link, correlation_id: int | None) -> None:
        """A request is forwarded whose answer the client waits for."""
        with link.lock:
            link.order.append((correlation_id, None))

    def _reject(self, link: _Link, request: ProduceRequestInfo, errors: dict[str, int]) -> None:
        """Answer ``request`` from the relay (if its acks want an answer), after the answers
        the client is still waiting for on this connection."""
        with self._lock:
            self.requests_matched += 1
            self.requests_rejected += 1
        if request.acks == 0:
            return
        answer = produce_error_response(request, errors)
        with link.lock:
            if link.stalled:  # an earlier answer was dropped: this one would follow it
                with self._lock:
                    self.responses_held += 1
            elif link.order:
                link.order.append((request.correlation_id, answer))
                with self._lock:
                    self.answers_deferred += 1
            else:
                link.client.sendall(answer)

    def _responses(self, link: _Link) -> None:
        """Broker -> client: fault the answers to noted requests, forward the others, and
        send the synthesized answers that were waiting for them."""
        try:
            for frame in _frames(link.server):
                with link.lock:  # the order, and the client's writes, are shared with _reject
                    for out in self._in_order(link, frame):
                        link.client.sendall(out)
        except (OSError, ValueError):
            pass
        self._end(link)

    def _in_order(self, link: _Link, frame: bytes) -> list[bytes]:
        """What to send the client for the broker's answer ``frame``, in order: synthesized
        answers due before it, its own (unless faulted away), those due right after it. The
        broker answers in request order, so forwarded requests noted ahead of its correlation
        id got no answer (or had an unreadable header): they are passed over. On a stalled
        connection nothing goes out. Called under ``link.lock``."""
        correlation_id = int.from_bytes(frame[4:8], "big", signed=True)
        frames: list[bytes] = []

        def release(answer: bytes) -> None:
            if link.stalled:
                with self._lock:
                    self.responses_held += 1
            else:
                frames.append(answer)

        if (correlation_id, None) in link.order:
            while link.order:
                c, answer = link.order.popleft()
                if answer is not None:
                    release(answer)
                elif c == correlation_id:
                    break
        out = self._on_response(link, frame)  # counts its own held or dropped answer
        if out is not None:
            frames.append(out)
        while link.order:
            _, answer = link.order[0]
            if answer is None:
                break
            link.order.popleft()
            release(answer)
        return frames

    def _on_response(self, link: _Link, frame: bytes) -> bytes | None:
        correlation_id = int.from_bytes(frame[4:8], "big", signed=True)
        with self._lock:
            if link.stalled:
                self.responses_held += 1
                return None
            pending = link.pending.pop(correlation_id, None)
            if pending is not None and pending.drop:
                link.stalled = True
                self.responses_dropped += 1
                return None
        if pending is None:
            return frame
        try:
            out, n = rewrite_produce_response(frame, pending.version, pending.errors)
        except ValueError as exc:
            self._problem(f"unreadable Produce v{pending.version} response: {exc}; passed unfaulted")
            return frame
        with self._lock:
            self.responses_rewritten += 1
            self.partitions_rewritten += n
        return out

    def _end(self, link: _Link) -> None:
        """One direction ended: end both (no half-open connection); the last pump closes."""
        link.shutdown()
        with self._lock:
            link.pumps_left -= 1
            last = link.pumps_left == 0
            if last:
                self._links.remove(link)
        if last:
            link.client.close()
            link.server.close()


class FaultBroker(EmbeddedBroker):
    """An embedded broker behind a :class:`KafkaFaultRelay` (``self.relay``): tansu
    advertises the relay's port, so after bootstrap every client connection goes through
    it. Bootstrap through ``relay_bootstrap``/``relay_url`` so that the first one does too.
    A context manager: starts the relay and the broker, stops both (and raises the relay's
    problems, see :meth:`KafkaFaultRelay.check`)."""

    def __init__(self, log_path: Path | None = None, relay_port: int | None = None) -> None:
        self.relay = KafkaFaultRelay(port=relay_port)
        super().__init__(log_path=log_path, advertised=self.relay.bootstrap)
        self.relay_bootstrap = self.relay.bootstrap
        self.relay_url = f"kafka://{self.relay.bootstrap}"

    def _set_port(self, port: int) -> None:
        super()._set_port(port)
        self.relay.upstream = ("127.0.0.1", port)  # also when start() retries on another port

    def _spawn_and_wait(self, deadline: float) -> None:
        self.relay.start()  # the readiness check goes through it (and a retry restarts it)
        super()._spawn_and_wait(deadline)

    def stop(self, timeout: float = 10.0) -> None:
        try:
            super().stop(timeout)
        finally:
            self.relay.stop()

    def __enter__(self) -> FaultBroker:
        self.start()
        return self
