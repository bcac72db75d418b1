"""The Kafka fault relay itself: it fails (or swallows) the broker's answers to Produce
requests writing to one topic, or answers such requests itself without forwarding them, for
aiokafka (the client Faust uses), and leaves the rest alone.

No worker here: a plain aiokafka producer and consumer through :class:`FaultBroker`."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError, RequestTimedOutError
from aiokafka.protocol import produce as wire
from aiokafka.protocol.api import RequestHeader_v1
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.structs import RecordMetadata

from streams.runtime.kafka_admin import ensure_topics
from tests.harness import (
    MESSAGE_TOO_LARGE,
    FaultBroker,
    KafkaFaultRelay,
    parse_produce_request,
    poll,
    produce_acks,
    produce_error_response,
    rewrite_produce_response,
)

AIOKAFKA_PRODUCE_VERSION = 7  # aiokafka 0.14 against tansu (which offers Produce v0-v11)


@pytest.fixture(scope="module")
def fault_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultBroker]:
    with FaultBroker(log_path=tmp_path_factory.mktemp("fault-relay") / "tansu.log") as broker:
        yield broker


@pytest.fixture
def relay(fault_broker: FaultBroker) -> Iterator[KafkaFaultRelay]:
    fault_broker.relay.heal()
    yield fault_broker.relay
    fault_broker.relay.heal()  # also raises what the relay could not handle


def topics(broker: FaultBroker, *names: str) -> list[str]:
    """Fresh single-partition topics, created before any client names them."""
    unique = [f"{name}-{uuid.uuid4().hex[:8]}" for name in names]
    ensure_topics(broker.relay_bootstrap, dict.fromkeys(unique, 1))
    return unique


async def until(condition: Callable[[], Any], timeout: float, what: str) -> None:
    """Asyncio :func:`poll`: let the event loop run until ``condition()`` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.02)


async def with_producer(broker: FaultBroker, body: Callable[[AIOKafkaProducer], Awaitable[Any]],
                        **config: Any) -> Any:
    producer = AIOKafkaProducer(bootstrap_servers=broker.relay_bootstrap, acks=1, **config)
    await producer.start()
    try:
        return await body(producer)
    finally:
        await producer.stop()


async def read(broker: FaultBroker, topic: str, n: int, timeout: float = 15.0) -> list[bytes]:
    """The first ``n`` values of ``topic`` (one partition), read through the relay."""
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.relay_bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        values: list[bytes] = []
        deadline = time.monotonic() + timeout
        while len(values) < n and time.monotonic() < deadline:
            batches = await consumer.getmany(tp, timeout_ms=500)
            values += [m.value for m in batches.get(tp, []) if m.value is not None]
        return values
    finally:
        await consumer.stop()


def test_produce_to_the_faulted_topic_fails_with_the_code_and_other_topics_pass(
        fault_broker: FaultBroker, relay: KafkaFaultRelay) -> None:
    """Sends to A fail at once with aiokafka's class for the code (not retried); sends to B,
    carried in the same Produce requests, succeed and can be read back."""
    a, b = topics(fault_broker, "faulted", "healthy")
    relay.fail_produce(a, MESSAGE_TOO_LARGE)

    async def send(producer: AIOKafkaProducer) -> list[Any]:
        futures = [await producer.send(t, f"{t}:{i}".encode()) for i in range(3) for t in (a, b)]
        return list(await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 20))

    before = relay.stats()
    started = time.monotonic()
    results = asyncio.run(with_producer(fault_broker, send, linger_ms=50))
    elapsed = time.monotonic() - started
    to_a, to_b = results[0::2], results[1::2]
    assert all(isinstance(r, MessageSizeTooLargeError) for r in to_a), to_a
    assert all(isinstance(r, RecordMetadata) for r in to_b), to_b
    assert elapsed < 10, f"{elapsed:.1f} s: the error was retried, not final"
    stats = {k: v - before[k] for k, v in relay.stats().items() if isinstance(v, int)}
    assert stats["requests_matched"] >= 1 and stats["partitions_rewritten"] >= 1, stats
    assert stats["partitions_rewritten"] == stats["responses_rewritten"], stats  # one partition of A each
    # every Produce request carried A, so B's acknowledgements came in the rewritten answers
    assert stats["produce_requests"] == stats["requests_matched"], stats
    assert set(relay.produce_versions) == {AIOKAFKA_PRODUCE_VERSION}, relay.stats()
    assert asyncio.run(read(fault_broker, b, 3)) == [f"{b}:{i}".encode() for i in range(3)]
    # only the answer was changed: the broker took A's records all the same
    assert asyncio.run(read(fault_broker, a, 3)) == [f"{a}:{i}".encode() for i in range(3)]


def test_after_heal_produce_to_the_topic_succeeds(fault_broker: FaultBroker,
                                                  relay: KafkaFaultRelay) -> None:
    (a,) = topics(fault_broker, "healed")
    relay.fail_produce(a, MESSAGE_TOO_LARGE)
    rewritten = relay.responses_rewritten  # the counters add up over the module's tests

    async def fail_then_heal(producer: AIOKafkaProducer) -> RecordMetadata:
        with pytest.raises(MessageSizeTooLargeError):
            await asyncio.wait_for(producer.send_and_wait(a, b"while faulted"), 20)
        relay.heal()
        return await asyncio.wait_for(producer.send_and_wait(a, b"after heal"), 20)

    meta = asyncio.run(with_producer(fault_broker, fail_then_heal))
    assert meta.topic == a and meta.offset >= 0
    assert relay.responses_rewritten == rewritten + 1  # the send after heal() passed untouched


def test_dropped_answers_make_the_send_time_out_and_heal_lets_a_new_send_through(
        fault_broker: FaultBroker, relay: KafkaFaultRelay) -> None:
    (a,) = topics(fault_broker, "dropped")
    relay.drop_produce(a)
    timeout_s = 3.0

    async def hang_then_heal(producer: AIOKafkaProducer) -> tuple[BaseException, float, RecordMetadata]:
        sent = time.monotonic()
        future = await producer.send(a, b"swallowed")
        await until(lambda: relay.responses_dropped >= 1, 10, "the broker's answer to be swallowed")
        assert not future.done()  # the broker has answered; the client heard nothing
        try:
            await asyncio.wait_for(future, 20)
        except (KafkaTimeoutError, RequestTimedOutError) as exc:
            failed: BaseException = exc
        else:
            raise AssertionError("the send succeeded although its answer was dropped")
        waited = time.monotonic() - sent
        relay.heal()
        return failed, waited, await asyncio.wait_for(producer.send_and_wait(a, b"after heal"), 20)

    accepted = relay.accepted
    failed, waited, meta = asyncio.run(with_producer(
        fault_broker, hang_then_heal, request_timeout_ms=int(timeout_s * 1000)))
    assert waited >= timeout_s - 0.5, f"failed after {waited:.1f} s: {failed!r}"
    assert meta.topic == a and meta.offset >= 0
    assert relay.accepted > accepted  # the client gave up the hung connection and reconnected


def test_rejected_produce_never_reaches_the_broker_and_requests_without_the_topic_pass(
        fault_broker: FaultBroker, relay: KafkaFaultRelay) -> None:
    """In reject mode a send to A fails with aiokafka's class for the code, and the broker
    stores nothing of it: the first record of A (and of B) is one sent after. B written in the
    same Produce request as A fails too; B sent in requests of its own (another producer at the
    same time, or this one's later flushes) passes."""
    a, b = topics(fault_broker, "rejected", "beside")
    relay.reject_produce(a, MESSAGE_TOO_LARGE)

    async def gather(futures: list[asyncio.Future[RecordMetadata]]) -> list[Any]:
        return list(await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 20))

    async def body(producer: AIOKafkaProducer) -> tuple[list[Any], ...]:
        # A and B together (linger): one Produce request, answered by the relay
        together = await gather([await producer.send(t, f"{t}:together".encode()) for t in (a, b)])

        async def other_producer(other: AIOKafkaProducer) -> list[Any]:
            return await gather([await other.send(b, f"{b}:other:{i}".encode()) for i in range(3)])

        # A from this producer while another one writes B on its own connection
        to_a, beside = await asyncio.gather(
            gather([await producer.send(a, f"{a}:{i}".encode()) for i in range(3)]),
            with_producer(fault_broker, other_producer, linger_ms=50))
        # B alone from this producer, one flush each
        alone = [await asyncio.wait_for(producer.send_and_wait(b, f"{b}:alone:{i}".encode()), 20)
                 for i in range(3)]
        relay.heal()
        after = await asyncio.wait_for(producer.send_and_wait(a, f"{a}:after heal".encode()), 20)
        return together, to_a, beside, alone, [after]

    before = relay.stats()
    started = time.monotonic()
    together, to_a, beside, alone, (after,) = asyncio.run(
        with_producer(fault_broker, body, linger_ms=50))
    elapsed = time.monotonic() - started
    assert all(isinstance(r, MessageSizeTooLargeError) for r in together + to_a), (together, to_a)
    assert all(isinstance(r, RecordMetadata) for r in beside + alone), (beside, alone)
    assert elapsed < 15, f"{elapsed:.1f} s: the error was retried, not final"
    stats = {k: v - before[k] for k, v in relay.stats().items() if isinstance(v, int)}
    assert stats["requests_rejected"] >= 2, stats  # A with B, then A alone
    assert stats["requests_rejected"] == stats["requests_matched"], stats
    assert stats["responses_rewritten"] == stats["responses_dropped"] == 0, stats
    # nothing of the rejected requests was stored: the sends that passed took the first offsets
    assert after.topic == a and after.offset == 0, after
    assert sorted(m.offset for m in beside + alone) == list(range(6)), beside + alone
    assert asyncio.run(read(fault_broker, a, 1)) == [f"{a}:after heal".encode()]
    sent_b = [f"{b}:other:{i}".encode() for i in range(3)] + [f"{b}:alone:{i}".encode() for i in range(3)]
    in_offset_order = [v for _, v in sorted(zip([m.offset for m in beside + alone], sent_b, strict=True))]
    assert asyncio.run(read(fault_broker, b, 6)) == in_offset_order


def produce_batch(topic: str, value: bytes) -> wire.ProduceRequest:
    """A Produce request (acks=1) of one record to partition 0 of ``topic``, for
    :class:`AIOKafkaClient`, which sends it without waiting for earlier answers."""
    builder = DefaultRecordBatchBuilder(2, 0, 0, -1, -1, -1, 1 << 16)
    builder.append(0, None, None, value, [])
    return wire.ProduceRequest(None, 1, 5000, [(topic, [(0, bytes(builder.build()))])])


def test_a_rejected_request_is_answered_in_order_among_requests_in_flight(
        fault_broker: FaultBroker, relay: KafkaFaultRelay) -> None:
    """Produce requests to B in flight on one aiokafka connection with a rejected one to A
    between them: every answer arrives in request order (aiokafka would close the connection
    on a correlation id out of order, failing the sends with CorrelationIdError). aiokafka's
    producer keeps one Produce request in flight per broker, so this pipelines with its
    client. Repeated until the relay had to hold the relay's answer back at least once."""
    a, b = topics(fault_broker, "rejected-pipelined", "pipelined")
    relay.reject_produce(a, MESSAGE_TOO_LARGE)

    async def pipeline() -> list[list[Any]]:
        client = AIOKafkaClient(bootstrap_servers=fault_broker.relay_bootstrap)
        await client.bootstrap()
        try:
            node = next(iter(client.cluster.brokers())).nodeId
            assert await client.ready(node)
            accepted = relay.accepted
            rounds: list[list[Any]] = []
            for n in range(10):
                deferred = relay.answers_deferred
                sends = [client.send(node, produce_batch(b, f"{n}:{i}".encode())) for i in range(3)]
                sends.append(client.send(node, produce_batch(a, f"{n}:rejected".encode())))
                sends += [client.send(node, produce_batch(b, f"{n}:{i}".encode())) for i in (3, 4)]
                rounds.append(list(await asyncio.wait_for(asyncio.gather(*sends), 20)))
                if relay.answers_deferred > deferred:
                    break
            assert relay.accepted == accepted  # no new connection: the one in use stayed up
            return rounds
        finally:
            await client.close()

    rejected, deferred = relay.requests_rejected, relay.answers_deferred
    rounds = asyncio.run(pipeline())
    print(f"{len(rounds)} round(s) until a rejected answer waited for the broker's")
    assert relay.answers_deferred > deferred, "the broker always answered before the relay rejected"
    assert relay.requests_rejected == rejected + len(rounds)
    for responses in rounds:
        errors = [[p[1] for _, parts in r.topics for p in parts] for r in responses]
        assert errors == [[0]] * 3 + [[MESSAGE_TOO_LARGE]] + [[0]] * 2, errors
        assert [r.topics[0][0] for r in responses] == [b] * 3 + [a] + [b] * 2
    values = [f"{n}:{i}".encode() for n in range(len(rounds)) for i in range(5)]
    assert asyncio.run(read(fault_broker, b, len(values))) == values


# -- the relay on its own, no broker ---------------------------------------------------------

@pytest.mark.parametrize("version", range(9))
def test_the_parsers_read_what_aiokafka_encodes(version: int) -> None:
    """Request and response parsing checked against aiokafka's own encoders, for every
    non-flexible Produce version (the broker round trip above covers only v7)."""
    request_class = getattr(wire, f"ProduceRequest_v{version}")
    response_class = getattr(wire, f"ProduceResponse_v{version}")
    topic_data = [("a", [(0, b"records-a0"), (1, b"records-a1")]), ("b", [(0, b"records-b")])]
    args = [1, 5000, topic_data] if version < 3 else [None, 1, 5000, topic_data]
    body = request_class(*args)
    payload = RequestHeader_v1(body, correlation_id=42, client_id="test").encode() + body.encode()
    info = parse_produce_request(struct.pack(">i", len(payload)) + payload)
    assert (info.version, info.correlation_id, info.acks, info.topics) == (version, 42, 1, ("a", "b"))
    assert info.partitions == ((0, 1), (0,))
    assert produce_acks(struct.pack(">i", len(payload)) + payload) == 1

    def partition(i: int) -> tuple[Any, ...]:
        fields: tuple[Any, ...] = (i, 0, 100 + i)
        if version >= 2:
            fields += (1_700_000_000_000,)
        if version >= 5:
            fields += (7,)
        if version >= 8:
            fields += ([(3, "bad record")], None)
        return fields

    response_topics = [("a", [partition(0), partition(1)]), ("b", [partition(0)])]
    response = response_class(response_topics) if version == 0 else response_class(response_topics, 9)
    payload = struct.pack(">i", 42) + response.encode()
    frame, rewritten = rewrite_produce_response(struct.pack(">i", len(payload)) + payload,
                                                version, {"a": MESSAGE_TOO_LARGE})
    assert rewritten == 2
    decoded = response_class.decode(frame[8:])
    (name_a, parts_a), (name_b, parts_b) = decoded.topics
    assert (name_a, name_b) == ("a", "b")
    assert [p[1] for p in parts_a] == [MESSAGE_TOO_LARGE] * 2
    assert all(p[2] == -1 for p in parts_a)  # no offset for a failed write
    assert [tuple(p) for p in parts_b] == [partition(0)]  # the other topic untouched
    if version >= 1:
        assert decoded.throttle_time_ms == 9
    with pytest.raises(ValueError, match="left over"):  # a wrong version does not pass quietly
        rewrite_produce_response(struct.pack(">i", len(payload) + 4) + payload + b"junk",
                                 version, {"a": MESSAGE_TOO_LARGE})


class Upstream:
    """A loopback server that takes what comes and answers nothing."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4)
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        try:
            while True:
                self.held.append(self.listener.accept()[0])
        except OSError:
            return

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.listener.getsockname()
        return str(host), int(port)

    def close(self) -> None:
        self.listener.close()
        for sock in self.held:
            sock.close()


def frame(api_key: int, version: int, body: bytes = b"") -> bytes:
    payload = struct.pack(">hhih", api_key, version, 1, 1) + b"t" + body
    return struct.pack(">i", len(payload)) + payload


def test_stop_ends_a_connection_whose_client_waits_for_an_answer(tmp_path: Path) -> None:
    upstream = Upstream()
    relay = KafkaFaultRelay(upstream.address).start()
    client = socket.create_connection(("127.0.0.1", relay.port))
    try:
        client.sendall(frame(18, 0))  # ApiVersions, never answered
        poll(lambda: upstream.held and relay.accepted == 1, 10, "the relay to connect upstream")
        client.settimeout(10)  # a bound for the failure case: stop() is seen at once
        relay.stop()
        try:
            answer = client.recv(16)
        except TimeoutError:
            raise AssertionError("the client saw nothing of the stop") from None
        except ConnectionResetError:
            answer = b""
        assert answer == b""  # the end of the connection, not data
    finally:
        client.close()
        upstream.close()


def test_a_flexible_produce_to_a_faulted_topic_is_reported_not_passed_quietly() -> None:
    upstream = Upstream()
    relay = KafkaFaultRelay(upstream.address).start()
    client = socket.create_connection(("127.0.0.1", relay.port))
    try:
        relay.fail_produce("journal", MESSAGE_TOO_LARGE)
        # Produce v9: tagged fields, null transactional id, acks, timeout, one topic "journal"
        body = b"\x00" + b"\x00" + struct.pack(">hi", 1, 5000) + b"\x02" + b"\x08journal" + b"\x01\x00\x00"
        client.sendall(frame(0, 9, body))
        poll(lambda: relay.problems, 10, "the relay to report the flexible request")
        assert "Produce v9" in relay.problems[0]
        with pytest.raises(AssertionError, match="could not do its job"):
            relay.stop()
    finally:
        client.close()
        upstream.close()


def produce_frame(version: int, correlation_id: int, acks: int, topics: dict[str, list[int]]) -> bytes:
    """A Produce request frame as aiokafka encodes it (size prefix included)."""
    topic_data = [(t, [(p, b"records") for p in parts]) for t, parts in topics.items()]
    args = [acks, 5000, topic_data] if version < 3 else [None, acks, 5000, topic_data]
    body = getattr(wire, f"ProduceRequest_v{version}")(*args)
    payload = RequestHeader_v1(body, correlation_id=correlation_id, client_id="t").encode()
    return struct.pack(">i", len(payload + body.encode())) + payload + body.encode()


@pytest.mark.parametrize("version", range(9))
def test_the_relays_own_answer_is_a_produce_response_aiokafka_decodes(version: int) -> None:
    info = parse_produce_request(produce_frame(version, 77, -1, {"a": [0, 3], "b": [1]}))
    answer = produce_error_response(info, {"a": MESSAGE_TOO_LARGE, "b": 19})
    assert struct.unpack_from(">ii", answer) == (len(answer) - 4, 77)
    decoded = getattr(wire, f"ProduceResponse_v{version}").decode(answer[8:])
    failed: tuple[Any, ...] = (-1,) + (-1,) * (version >= 2) + (-1,) * (version >= 5)
    failed += ([], None) * (version >= 8)  # record_errors, error_message
    assert [(name, [tuple(p) for p in parts]) for name, parts in decoded.topics] == [
        ("a", [(0, MESSAGE_TOO_LARGE, *failed), (3, MESSAGE_TOO_LARGE, *failed)]),
        ("b", [(1, 19, *failed)]),
    ]
    if version >= 1:
        assert decoded.throttle_time_ms == 0
    assert len(decoded.encode()) == len(answer) - 8  # nothing left over


def test_produce_acks_of_a_flexible_request_with_header_tagged_fields() -> None:
    # header v2: client id, then tagged fields (one: tag 5, 2 bytes); transactional id "tx"
    payload = (struct.pack(">hhih", 0, 9, 1, 1) + b"t" + b"\x01\x05\x02xy" + b"\x03tx"
               + struct.pack(">hi", 0, 5000) + b"\x01\x00")
    assert produce_acks(struct.pack(">i", len(payload)) + payload) == 0


class ScriptedBroker:
    """A loopback upstream for one relayed connection: it keeps the frames it gets, and
    answers (a bare correlation id) only when the test says so."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.received: list[int] = []  # correlation ids, in arrival order
        self.conn: socket.socket | None = None
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        try:
            self.conn = self.listener.accept()[0]
            while True:
                payload = read_frame(self.conn, None)
                self.received.append(struct.unpack_from(">i", payload, 4)[0])
        except (OSError, EOFError):
            return

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.listener.getsockname()
        return str(host), int(port)

    def answer(self, correlation_id: int) -> None:
        assert self.conn is not None
        self.conn.sendall(struct.pack(">ii", 4 + 6, correlation_id) + b"answer")

    def close(self) -> None:
        self.listener.close()
        if self.conn is not None:
            self.conn.close()


def read_frame(sock: socket.socket, timeout: float | None) -> bytes:
    """One frame's payload (no size prefix); TimeoutError if it does not start in time."""
    sock.settimeout(timeout)

    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise EOFError("connection closed")
            data += chunk
        return data

    head = exactly(4)
    sock.settimeout(10)  # the rest of a frame that started
    return exactly(struct.unpack(">i", head)[0])


def test_the_relays_answers_keep_request_order_on_a_connection() -> None:
    """Frame by frame against a broker that answers when told: a rejected request's answer
    waits for the broker's answers to the requests sent before it on the connection and goes
    out right after them, before later ones; acks=0 requests get (and wait for) no answer."""
    broker = ScriptedBroker()
    relay = KafkaFaultRelay(broker.address).start()
    client = socket.create_connection(("127.0.0.1", relay.port))
    try:
        relay.reject_produce("a", MESSAGE_TOO_LARGE)
        api_versions = struct.pack(">hhih", 18, 0, 1, 1) + b"t"
        client.sendall(
            struct.pack(">i", len(api_versions)) + api_versions  # 1: forwarded
            + produce_frame(7, 2, 1, {"b": [0]})  # forwarded
            + produce_frame(7, 3, 1, {"a": [0, 1], "b": [0]})  # rejected: all of it fails
            + produce_frame(7, 4, 0, {"a": [0]})  # rejected, acks=0: no answer
            + produce_frame(7, 5, 0, {"b": [0]})  # forwarded, acks=0: no answer
            + produce_frame(7, 6, -1, {"b": [0]})  # forwarded
            + produce_frame(8, 7, 1, {"a": [2]}))  # rejected
        poll(lambda: broker.received == [1, 2, 5, 6] and relay.requests_rejected == 3, 10,
             "the relay to forward 1, 2, 5, 6 and reject 3, 4, 7")

        def answers(wait: float = 0.3) -> list[int]:
            """Correlation ids of the answers the client has got by now (``wait`` after the last)."""
            got = []
            with contextlib.suppress(TimeoutError):
                while True:
                    got.append(struct.unpack_from(">i", read_frame(client, wait))[0])
            return got

        assert answers() == []  # 3 waits behind the broker's answers to 1 and 2
        broker.answer(1)
        assert answers() == [1]
        broker.answer(2)
        assert answers() == [2, 3]
        broker.answer(6)
        assert answers() == [6, 7]
        assert relay.answers_deferred == 2
        # nothing awaited (5 had acks=0): a rejected request is answered at once
        client.sendall(produce_frame(7, 8, 0, {"b": [0]}) + produce_frame(7, 9, 1, {"a": [0]}))
        assert answers() == [9]
        relay.heal()
        client.sendall(produce_frame(7, 10, 1, {"a": [0]}))
        poll(lambda: broker.received == [1, 2, 5, 6, 8, 10], 10, "the healed request forwarded")
        broker.answer(10)
        assert answers() == [10]
        assert relay.requests_rejected == 4 and relay.answers_deferred == 2
        relay.stop()  # raises the relay's problems: none
    finally:
        client.close()
        broker.close()
