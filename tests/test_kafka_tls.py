"""Every Kafka client a worker opens speaks TLS when the settings say SSL (issue 14).

The embedded broker (tansu) does not terminate TLS, so a relay does, in front of it, and the
broker advertises the relay in its metadata: every client, after bootstrapping, connects
there. A client opened without the TLS settings fails its handshake at the relay, which
records it. The worker runs as a subprocess (topic creation with kafka-python, Faust's
consumer and producer, then after a restart the journal's bulk loader and the changelog-tail
reader), so a client added later without the settings fails this test too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from kafka import KafkaProducer

from streams.config.kafka_auth import client_kwargs
from streams.config.settings import KafkaClientSettings
from streams.tools.broker import EmbeddedBroker, free_port
from tests.harness import Worker, poll

pytestmark = pytest.mark.slow
PARTNERS = ["acme", "bluefiber", "northwind-telecom", "zeta-9"]


class TlsRelay:
    """A loopback relay that terminates TLS and passes the plaintext on to ``upstream()``.

    asyncio in a thread of its own, not a thread per direction as in ``TcpProxy``: an
    ``SSLSocket`` must not be read and written from two threads at once. ``refused`` holds
    one line per connection whose TLS handshake failed: a client without the TLS settings.
    """

    def __init__(self, upstream: Callable[[], tuple[str, int]], context: ssl.SSLContext,
                 port: int) -> None:
        self.upstream, self.context, self.port = upstream, context, port
        self.handshakes = 0
        self.refused: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tls-relay",
                                        daemon=True)
        self._server: asyncio.Server | None = None

    def start(self) -> TlsRelay:
        self._thread.start()
        listen = asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self._server = asyncio.run_coroutine_threadsafe(listen, self._loop).result(10)
        return self

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            await writer.start_tls(self.context, ssl_handshake_timeout=10)
        except OSError as exc:  # SSLError and TimeoutError among them
            self.refused.append(f"{peer}: {exc!r}")
            writer.close()
            return
        self.handshakes += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream())
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))

    @staticmethod
    async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except OSError:
            pass
        finally:
            dst.close()  # one side gone: the relayed connection is over

    def close(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@dataclass
class Secured:
    relay: TlsRelay
    url: str
    """The worker's broker URL: the relay (plain clients bootstrapping there fail too)."""
    security: dict[str, object]
    env: dict[str, str]


@pytest.fixture
def secured(pki: dict[str, Path], tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[Secured]:
    """The embedded broker reachable only through TLS (as far as the worker can tell)."""
    for name in list(os.environ):  # nothing from the host's environment changes the worker's
        if name.startswith("PARTNERPULSE_KAFKA_"):
            monkeypatch.delenv(name)
    env = {"PARTNERPULSE_KAFKA_SECURITY_PROTOCOL": "SSL",
           "PARTNERPULSE_KAFKA_SSL_CAFILE": str(pki["ca_pem"])}
    security = client_kwargs(KafkaClientSettings(kafka_security_protocol="SSL",
                                                 kafka_ssl_cafile=pki["ca_pem"]))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(str(pki["server_pem"]), str(pki["server_key"]))
    relay_port = free_port()
    broker = EmbeddedBroker(log_path=tmp_path / "broker.log",
                            advertised=f"127.0.0.1:{relay_port}", security=security)
    # the broker's port is read at each connection: start() may move it (port taken meanwhile)
    relay = TlsRelay(lambda: ("127.0.0.1", broker.port), server, relay_port).start()
    try:
        with broker:
            yield Secured(relay, f"kafka://127.0.0.1:{relay_port}", security, env)
    finally:
        relay.close()


def _calls(prefix: str, n: int) -> list[tuple[str, bytes, bytes]]:
    """n distinct valid events (recent, so in every window), keyed by partner."""
    now = int(time.time() * 1000)
    out = []
    for i in range(n):
        partner = PARTNERS[i % len(PARTNERS)]
        event = {"event_id": f"{prefix}-{i}", "type": "queued", "partner_id": partner,
                 "call_id": f"{prefix}-call-{i}", "ts": now - 60_000 + i}
        out.append(("calls", partner.encode(), orjson.dumps(event)))
    return out


def _produce(secured: Secured, messages: list[tuple[str, bytes, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=secured.url.removeprefix("kafka://"), acks=1,
                             linger_ms=5, **secured.security)
    futures = [producer.send(topic, key=key, value=value) for topic, key, value in messages]
    producer.flush()
    producer.close()
    assert all(f.succeeded() for f in futures), [f.exception for f in futures if f.failed()]


def _wait(worker: Worker, relay: TlsRelay, condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition``; fail at once when a client went without TLS or the worker died."""

    def check() -> bool:
        assert not relay.refused, f"a Kafka client connected without TLS: {relay.refused}"
        assert worker.alive, f"worker exited:\n{worker.log_tail()}"
        return condition()

    poll(check, 60, what)


def _accepted(worker: Worker) -> int:
    try:
        return worker.counts().get("calls:accepted", 0)
    except (OSError, ValueError):  # not answering yet
        return 0


def test_every_kafka_client_of_the_worker_uses_tls(secured: Secured, tmp_path: Path) -> None:
    relay = secured.relay
    extra = ["--store", "memory"]  # the bulk loader is the memory store's
    first = Worker(secured.url, tmp_path, app_id="pp-tls", extra=extra, env=secured.env).spawn()
    try:
        _wait(first, relay, lambda: bool(first.ready_or_none()), "the first worker ready")
        before = _calls("tls-a", 40)
        _produce(secured, before)
        _wait(first, relay, lambda: _accepted(first) == len(before), "the first events")
    finally:
        first.stop()
    # the restart recovers from the changelog: the bulk loader and the changelog-tail reader
    second = Worker(secured.url, tmp_path, app_id="pp-tls", name="worker-2", extra=extra,
                    env=secured.env).spawn()
    try:
        _wait(second, relay, lambda: bool(second.ready_or_none()), "the restarted worker ready")
        status = second.ready()
        assert status["recovery"]["bulk_load_done_at"] > 0  # the bulk loader did read
        assert status["recovered_events"] == len(before)
        after = _calls("tls-b", 12)
        _produce(secured, after)
        _wait(second, relay, lambda: _accepted(second) == len(after), "events after the restart")
    finally:
        second.stop()
    assert relay.refused == []
    assert relay.handshakes > 0
