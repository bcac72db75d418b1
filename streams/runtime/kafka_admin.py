"""Talking to a Kafka cluster as an administrator: bootstrap URLs, readiness, topic creation.

Used by the worker (it creates its topics at start), by the embedded broker of the tools (its
readiness check) and by the producer commands. Nothing here imports Faust.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import time
from collections.abc import Iterator, Mapping
from typing import Any

POLL_S = 0.05
"""Seconds between readiness probes."""


class BrokerError(RuntimeError):
    """The embedded broker could not be started or did not become ready."""

    def __init__(self, message: str, *, addr_in_use: bool = False) -> None:
        super().__init__(message)
        self.addr_in_use = addr_in_use


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
        time.sleep(POLL_S)


@contextlib.contextmanager
def admin_client(bootstrap: str, deadline: float, alive: Any = None,
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
    (:func:`streams.config.kafka_auth.client_kwargs`).  New topics get
    ``replication_factor`` replicas and ``configs`` (name -> topic configs);
    existing ones are not changed.  A cluster with fewer brokers than
    ``replication_factor`` refuses to create the topic.
    """
    if not topics:
        return
    _check_specs(topics, replication_factor)
    deadline = time.monotonic() + timeout
    with admin_client(bootstrap, deadline, security=security) as admin:
        _create_missing(admin, topics, configs or {}, replication_factor)
        problems = _wait_until_led(admin, topics, deadline)
    if not problems:
        return
    mismatched = {n: p for n, p in problems.items() if p.endswith(" partitions")}
    if mismatched:
        raise ValueError(f"topics with a different partition count: {mismatched}")
    raise TimeoutError(f"topics not ready on {bootstrap} after {timeout}s: {problems}")


def _check_specs(topics: dict[str, int], replication_factor: int) -> None:
    if replication_factor < 1:
        raise ValueError(f"replication factor {replication_factor} is below 1")
    for name, n in topics.items():
        if not name or not isinstance(n, int) or n < 1:
            raise ValueError(f"bad topic spec {name!r}: {n!r}")


def _create_missing(admin: Any, topics: dict[str, int], configs: dict[str, dict[str, str]],
                    replication_factor: int) -> None:
    """Create the topics that do not exist; an existing one with another partition count is a
    :class:`ValueError` (existing topics are never changed)."""
    from kafka.errors import TopicAlreadyExistsError

    names = list(topics)
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


def _wait_until_led(admin: Any, topics: dict[str, int], deadline: float) -> dict[str, str]:
    """Poll metadata until every topic has all its partitions led; the problems left at the
    deadline (empty once ready)."""
    names = list(topics)
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
        if not problems or time.monotonic() >= deadline:
            return problems
        time.sleep(POLL_S)
