"""bench/spy.py: py-spy's collapsed stacks sorted into the worker's parts (the expected parts
are written out by hand from the rules in bench/spy.py's docstrings)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import spy

ROOT = ("_run_module_as_main (<frozen runpy>:198);run_worker (streams/cli.py:150);"
        "run_forever (asyncio/base_events.py:607)")
AGENT = ROOT + ";_process (streams/runtime/pipeline.py:382)"
RAW = "\n".join([
    # judging calls the engine's evaluate: judging's sample, not the engine's
    f"{AGENT};judge_partner (streams/judgement/watch.py:163);evaluate (streams/engine/core.py:321) 7",
    f"{AGENT};apply (streams/engine/core.py:190);add (streams/engine/windows.py:123) 5",
    f"{AGENT};write (streams/runtime/journal_table.py:260);send (faust/tables/base.py:10) 3",
    # the engine called from the journal would be the engine's: the innermost own frame counts
    f"{AGENT};write (streams/runtime/journal_table.py:260);encode (streams/engine/journal.py:9) 2",
    f"{AGENT};decode (streams/ingest/contract.py:305) 2",
    f"{AGENT} 3",
    # what the agent awaits in Faust is the agent's
    f"{AGENT};ack (faust/streams.py:700) 1",
    f"{ROOT};_send_pending (faust/transport/producer.py:97);send (aiokafka/producer/producer.py:1) 6",
    f"{ROOT};_drain_messages (faust/transport/consumer.py:1220) 8",
    f"{ROOT};_run (asyncio/events.py:80) 9",
    "_bootstrap (threading.py:1002) 1",
    "not a sample line",
    "",
])


def test_each_sample_is_counted_in_the_first_part_its_stack_belongs_to() -> None:
    profile = spy.parse(RAW)
    want = {"judging": 7, "engine": 5 + 2, "journal_write": 3, "decode": 2, "pipeline": 3 + 1,
            "producer": 6, "faust_and_aiokafka": 8, "other": 9 + 1}
    assert dict(profile.parts) == want
    assert set(want) == set(spy.PART_NAMES)
    assert profile.samples == sum(want.values()) == 47
    assert profile.share("judging") == pytest.approx(7 / 47)
    assert sum(profile.share(p) for p in want) == pytest.approx(1.0)
    # by innermost function, the line number dropped
    assert profile.self_time["evaluate (streams/engine/core.py)"] == 7
    assert profile.self_time["_process (streams/runtime/pipeline.py)"] == 3
    assert profile.self_time.most_common(1) == [("_run (asyncio/events.py)", 9)]


def test_an_empty_recording_has_no_shares() -> None:
    profile = spy.parse("")
    assert profile.samples == 0 and profile.share("engine") == 0.0


def test_a_recording_with_bytes_that_are_not_utf8_is_still_read(tmp_path: Path) -> None:
    # --nonblocking can catch a name half-written: CI once got byte 0xf6 in a frame
    path = tmp_path / "raw.txt"
    path.write_bytes(RAW.encode() + f"\n{AGENT};na\xf6me (streams/engine/core.py:1) 4\n"
                     .encode("latin-1"))
    profile = spy.load(path)
    assert profile.samples == 47 + 4
    assert profile.parts["engine"] == 5 + 2 + 4
