"""The fault-injection harness itself: a cut must be seen by every client at once."""

from __future__ import annotations

import socket
import threading

from tests.harness import TcpProxy, poll


def test_a_cut_ends_a_connection_whose_client_waits_for_an_answer() -> None:
    """A client that sent a request and waits for the answer (nothing more to send) must see
    the connection end when the relay cuts it. Closing the relayed sockets alone left that
    client waiting: the relay's thread blocked in recv() kept the connection open (a worker's
    producer once waited there for a metadata answer until its test gave up)."""
    upstream = socket.socket()
    upstream.bind(("127.0.0.1", 0))
    upstream.listen(1)
    held: list[socket.socket] = []
    # an upstream that takes the request and never answers
    threading.Thread(target=lambda: held.append(upstream.accept()[0]), daemon=True).start()
    relay = TcpProxy(upstream.getsockname()).start()
    client = socket.create_connection(("127.0.0.1", relay.port))
    try:
        client.sendall(b"request")
        poll(lambda: held and relay.accepted == 1, 10, "the relay to connect the client upstream")
        client.settimeout(10)  # a bound for the failure case: a cut is seen at once
        assert relay.cut() == 1
        try:
            answer = client.recv(16)
        except TimeoutError:
            raise AssertionError("the client saw nothing of the cut") from None
        except ConnectionResetError:
            answer = b""
        assert answer == b""  # the end of the connection, not data
    finally:
        relay.close()
        client.close()
        upstream.close()
        for sock in held:
            sock.close()
