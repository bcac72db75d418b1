"""Reading an export: rows of CSV or JSON Lines, gzipped or not, each with its line number."""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from streams.tools.replay.mapping import Mapping


@dataclass(frozen=True, slots=True)
class Skip:
    """A row (or one event of a row) that could not be mapped, with the reason."""

    line: int
    reason: str


Row = tuple[int, dict[str, Any]]


def _open_text(path: Path, encoding: str) -> IO[str]:
    with path.open("rb") as probe:
        magic = probe.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding=encoding, newline="")
    return path.open(encoding=encoding, newline="")


def file_format(path: Path, mapping: Mapping) -> str:
    """csv or jsonl: the mapping's ``format``, else from the file name."""
    if mapping.raw.format:
        return mapping.raw.format
    name = path.name.lower().removesuffix(".gz")
    return "jsonl" if name.endswith((".jsonl", ".ndjson", ".json")) else "csv"


def read_rows(source: IO[str], fmt: str = "csv", delimiter: str = ",") -> Iterator[Row | Skip]:
    """Rows as (line number, dict); rows that cannot be read are Skips. Line 1 is a CSV's header."""
    if fmt == "jsonl":
        yield from _json_lines(source)
    else:
        yield from _csv_rows(source, delimiter)


def _json_lines(source: IO[str]) -> Iterator[Row | Skip]:
    for line_no, line in enumerate(source, 1):
        if not line.strip():
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            yield Skip(line_no, f"not JSON: {exc}")
            continue
        if isinstance(value, dict):
            yield line_no, value
        else:
            yield Skip(line_no, "not a JSON object")


def _csv_rows(source: IO[str], delimiter: str) -> Iterator[Row | Skip]:
    # a row's line is where it starts: a quoted field may span lines
    reader = csv.reader(source, delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        yield Skip(1, f"unreadable CSV header: {exc}")
        return
    width = len(header)
    previous = reader.line_num
    while True:
        start = previous + 1
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield Skip(start, f"unreadable CSV row: {exc}")
            previous = reader.line_num
            continue
        previous = reader.line_num
        if not record:
            continue
        if len(record) != width:
            yield Skip(start, f"{len(record)} fields where the header has {width}")
            continue
        yield start, dict(zip(header, record, strict=True))


def rows_from_text(text: str, fmt: str = "csv", delimiter: str = ",") -> list[Row | Skip]:
    """Rows of CSV or JSON Lines text (for tests and small inputs)."""
    return list(read_rows(io.StringIO(text, newline=""), fmt, delimiter))


def read_file(path: Path, mapping: Mapping) -> Iterator[Row | Skip]:
    """Rows of a CSV or JSON Lines file, gzipped or not."""
    with _open_text(path, mapping.raw.encoding) as source:
        yield from read_rows(source, file_format(path, mapping), mapping.raw.delimiter)

