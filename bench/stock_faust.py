"""A stock Faust agent that only decodes each event: the baseline of the e2e benchmark.

``python -m bench.stock_faust --broker URL --app-id ID --n N --out FILE [--table]``

Faust as its documentation shows it: one ``@app.agent`` over the four input topics, iterating
``async for value in stream`` and ``orjson.loads``-ing each value, nothing else. With ``--table``
the agent also writes one record per event into a memory table (changelog-backed), as the
worker's journal does. The group timings are the worker's shipped ones (they only change how
fast the group forms on the embedded broker); every other setting is Faust's default. Its own
app id, so its own consumer group and internal topics.

When the n-th message is processed it writes ``{"seconds", "messages"}`` to ``--out``: seconds
from the first processed message to the n-th, and the messages in between (n - 1).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import faust
import orjson

from streams.ingest.contract import TOPICS


def build(broker: str, app_id: str, n: int, out: Path, table: bool, data_dir: Path) -> faust.App:
    session = 6.0  # the worker's shipped group timing (streams/runtime/faust_app.py)
    app = faust.App(
        app_id, broker=broker, store="memory://", datadir=str(data_dir), web_enabled=False,
        topic_partitions=4, topic_replication_factor=1, table_standby_replicas=0,
        broker_rebalance_timeout=60.0, broker_session_timeout=session,
        broker_heartbeat_interval=session / 3, broker_max_poll_interval=300.0,
        consumer_auto_offset_reset="earliest",
    )
    source = app.topic(*TOPICS, key_type=bytes, value_type=bytes,
                       key_serializer="raw", value_serializer="raw")
    journal: Any = app.Table("journal", partitions=4, key_type=bytes, value_type=bytes) \
        if table else None
    state = {"got": 0, "first": 0.0}

    @app.agent(source)
    async def decode(stream: faust.StreamT) -> None:
        async for event in stream.events():
            value = orjson.loads(event.value)
            if journal is not None:
                journal[f"{value['partner_id']}\x1f{value['event_id']}".encode()] = event.value
            state["got"] += 1
            if state["got"] == 1:
                state["first"] = time.perf_counter()
            elif state["got"] == n:
                seconds = time.perf_counter() - state["first"]
                tmp = out.with_suffix(".tmp")
                tmp.write_bytes(orjson.dumps({"seconds": seconds, "messages": n - 1}))
                os.replace(tmp, out)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.stock_faust")
    parser.add_argument("--broker", required=True)
    parser.add_argument("--app-id", required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--table", action="store_true")
    args = parser.parse_args()
    app = build(args.broker, args.app_id, args.n, args.out, args.table, args.data_dir)
    worker = faust.Worker(app, loglevel="WARNING", override_logging=True, quiet=True)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
