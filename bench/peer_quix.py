"""A peer users would pick instead: quixstreams on the same broker and events (e2e baseline).

``python -m bench.peer_quix --bootstrap HOST:PORT --topic T --n N --mode MODE --out FILE
--state-dir DIR``

quixstreams as its documentation shows it: one ``Application``, a ``StreamingDataFrame`` over
a topic of JSON events keyed by partner, the event time taken from each event's ``ts``, and
per ``MODE``: ``decode`` (nothing more), ``tumbling`` (a 1 h tumbling-window count per
partner), ``sliding`` (a 1 h sliding-window count per partner) or ``hopping`` (1 h windows
every minute). Windows emit only when they close (``.final()``), their state in quixstreams'
RocksDB store with its changelog topic, as it ships.

One change to the library, in this harness only: tansu answers DescribeConfigs with no
entries, and quixstreams reads a source topic's ``retention.ms`` unguarded when it derives its
changelog topic's config (``TopicManager.derive_topic_config``): missing, it is taken as -1
(infinite, the broker's default here), as it already does for ``retention.bytes``.

When the n-th message has gone through the dataframe it writes ``{"seconds", "messages"}`` to
``--out``: seconds from the first message to the n-th, and the messages in between (n - 1).
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

MODES = ("decode", "tumbling", "sliding", "hopping")


def _patch_retention() -> None:
    """Default a missing ``retention.ms`` (see the module docstring)."""
    from quixstreams.models.topics.manager import TopicManager

    derive = TopicManager.derive_topic_config.__func__  # type: ignore[attr-defined]

    def derive_with_default(cls: Any, topics: Any) -> Any:
        for topic in topics:
            topic.broker_config.extra_config.setdefault("retention.ms", "-1")
        return derive(cls, topics)

    TopicManager.derive_topic_config = classmethod(derive_with_default)  # type: ignore[method-assign,assignment]


def _event_ms(value: Any, headers: Any, timestamp: float, timestamp_type: Any) -> int:
    """The event's own time (``ts``: epoch ms, or RFC 3339 text), as the worker reads it."""
    ts = value["ts"]
    if isinstance(ts, int):
        return ts
    return int(datetime.fromisoformat(ts).timestamp() * 1000)


def run(bootstrap: str, topic_name: str, n: int, mode: str, out: Path, state_dir: Path) -> None:
    from quixstreams import Application

    _patch_retention()
    app = Application(broker_address=bootstrap, consumer_group=f"pp-bench-quix-{mode}",
                      auto_offset_reset="earliest", state_dir=str(state_dir),
                      loglevel="WARNING")
    topic = app.topic(topic_name, key_deserializer="bytes", value_deserializer="json",
                      timestamp_extractor=_event_ms)
    state = {"got": 0, "first": 0.0}

    def seen(value: Any) -> None:
        state["got"] += 1
        if state["got"] == 1:
            state["first"] = time.perf_counter()
        elif state["got"] == n:
            seconds = time.perf_counter() - state["first"]
            tmp = out.with_suffix(".tmp")
            tmp.write_text(f'{{"seconds": {seconds}, "messages": {n - 1}}}')
            os.replace(tmp, out)
            app.stop()

    sdf = app.dataframe(topic).update(seen)
    hour = timedelta(hours=1)
    if mode == "tumbling":
        sdf = sdf.tumbling_window(hour).count().final()
    elif mode == "sliding":
        sdf = sdf.sliding_window(hour).count().final()
    elif mode == "hopping":
        sdf = sdf.hopping_window(hour, step_ms=60_000).count().final()
    app.run()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peer_quix")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    args = parser.parse_args()
    run(args.bootstrap, args.topic, args.n, args.mode, args.out, args.state_dir)


if __name__ == "__main__":
    main()
