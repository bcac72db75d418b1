"""Where a running worker spends its time: py-spy's samples, sorted into the worker's parts.

A sampling profiler outside the process (``py-spy record --pid``): the worker runs unchanged,
no profiling hook in its code, at the cost of a little CPU in another process. Its samples are
whole stacks; each is counted in one part (:func:`part_of`), so the parts add up to the
samples.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

JUDGING = "judging"
"""Samples with a frame of the judgement (a Watch judging a partner, the integrity lens): judging
calls the engine's ``evaluate``, and those samples are judging's, not the engine's."""
OWN_PARTS: tuple[tuple[str, str], ...] = (
    ("engine", "streams/engine/"),
    ("journal_write", "streams/runtime/journal_table.py"),
    ("decode", "streams/ingest/"),
)
"""(part, path fragment) of the worker's own code, matched on a sample's innermost own frame;
an own frame matching none is ``pipeline``: the agent's batching, dedup bookkeeping, commit
guard, checkpoints, wall history (and what it awaits in Faust, such as acks)."""
PIPELINE = "pipeline"
OWN = "streams/"
ENTRY = ("streams/cli.py", "streams/__main__.py")
"""The worker's entry point: at the root of every stack of its event loop, so not a part."""
LIBRARY_PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("producer", ("aiokafka/producer/", "faust/transport/producer.py")),
    ("faust_and_aiokafka", ("faust/", "mode/", "aiokafka/")),
)
"""Samples with no own frame: sending (changelog records, alerts), then Faust's stream,
consumer, conductor and the client's fetches. What is left (``other``) is the event loop itself
and threads waiting in C."""
OTHER = "other"
PART_NAMES = (JUDGING, *(name for name, _ in OWN_PARTS), PIPELINE,
              *(name for name, _ in LIBRARY_PARTS), OTHER)


def part_of(frames: list[str]) -> str:
    """The part one sample (its stack, outermost frame first) is counted in."""
    if any("streams/judgement/" in f for f in frames):
        return JUDGING
    own = [f for f in frames if OWN in f and not any(e in f for e in ENTRY)]
    if own:
        return next((name for name, where in OWN_PARTS if where in own[-1]), PIPELINE)
    return next((name for name, where in LIBRARY_PARTS
                 if any(w in f for f in frames for w in where)), OTHER)


@dataclass
class Profile:
    """Samples of one recording, by part and by function."""

    samples: int = 0
    parts: Counter[str] = field(default_factory=Counter)
    self_time: Counter[str] = field(default_factory=Counter)
    """Samples whose innermost frame is the function (``name (file)``)."""

    def share(self, part: str) -> float:
        return self.parts[part] / self.samples if self.samples else 0.0


def _function(frame: str) -> str:
    """``name (path:line)`` -> ``name (path)``: py-spy's --function still names a line."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if where else name


def parse(raw: str) -> Profile:
    """py-spy's ``--format raw`` (collapsed stacks: ``frame;frame;... count`` a line)."""
    profile = Profile()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        profile.samples += n
        profile.parts[part_of(frames)] += n
        profile.self_time[_function(frames[-1])] += n
    return profile


def load(path: Path) -> Profile:
    """:func:`parse` of a recording's file. ``--nonblocking`` reads the worker's memory while it
    runs, so a frame's name can be caught half-written and hold bytes that are not UTF-8 (CI
    once saw 0xf6): they are replaced, and the sample is still counted."""
    return parse(path.read_bytes().decode("utf-8", errors="replace"))


def available() -> bool:
    return shutil.which("py-spy") is not None


class Recording:
    """``py-spy record`` of process ``pid`` from ``start()`` to ``stop()``."""

    def __init__(self, pid: int, out: Path, rate_hz: int = 250) -> None:
        self.cmd = ["py-spy", "record", "--pid", str(pid), "--rate", str(rate_hz),
                    "--format", "raw", "--function", "--nonblocking", "--output", str(out)]
        self.out = out
        self.log = out.with_suffix(".log")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Recording:
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=log)
        return self

    def stop(self) -> Profile:
        """Stop recording (py-spy writes its file on SIGINT) and read it; RuntimeError if
        py-spy could not record (no ptrace permission, say)."""
        if self.proc is None:
            raise RuntimeError("not started")
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if not self.out.exists():
            raise RuntimeError(f"py-spy wrote no samples: {self.log.read_text()[-500:]}")
        return load(self.out)
