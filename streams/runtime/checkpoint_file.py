"""A journal checkpoint on local disk: one changelog partition's records as of one offset.

Why: the in-memory journal store holds, per changelog partition, what a restore needs (month
and snapshot records, the event records no snapshot covers: streams/engine/journal.py). A
restart used to read the whole partition again to get there, every event record of 30 days
included. Written to the worker's ``data_dir`` with the offset of the last changelog record it
accounts for, it lets a restart on the same disk read the changelog from that offset on only:
what Kafka Streams' ``.checkpoint`` file and Faust's RocksDB store do with their offsets.

The file: a magic line; a header (msgpack: format, topic, partition, the offset and key of the
record at that offset, record count); the records, each as its key's and value's lengths
(two big-endian 32-bit numbers) then their bytes; and a trailer (count, CRC-32 of the
records' bytes). Written to a temporary name,
synced, then renamed over the last one, so a crash leaves the old file or the new one, never
half of either; a file that fails any check is refused whole (:class:`CheckpointError`).
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

MAGIC = b"PPJCKPT\n"
FORMAT = 1
"""Version of the file's layout; a file of another version is refused."""

_LENGTHS = struct.Struct(">II")
_SIZE = struct.Struct(">I")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: missing, damaged, or of another format."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """What a checkpoint file holds."""

    topic: str
    partition: int
    offset: int
    """Changelog offset of the last record the records account for."""
    key: bytes
    """Key of the record at ``offset``: a restart checks the changelog still has it there."""
    records: list[tuple[bytes, bytes]]


def path_for(directory: Path, topic: str, partition: int) -> Path:
    """The checkpoint file of one changelog partition."""
    return directory / f"{topic}-{partition}.ckpt"


def _framed(obj: Any) -> bytes:
    blob = msgspec.msgpack.encode(obj)
    return _SIZE.pack(len(blob)) + blob


def write(path: Path, checkpoint: Checkpoint) -> int:
    """Write the checkpoint atomically (temporary file, fsync, rename); returns its bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    header = {"format": FORMAT, "topic": checkpoint.topic, "partition": checkpoint.partition,
              "offset": checkpoint.offset, "key": checkpoint.key,
              "count": len(checkpoint.records)}
    crc = 0
    pack = _LENGTHS.pack
    try:
        with open(tmp, "wb") as f:
            f.write(MAGIC + _framed(header))
            for key, value in checkpoint.records:
                lengths = pack(len(key), len(value))
                crc = zlib.crc32(value, zlib.crc32(key, zlib.crc32(lengths, crc)))
                f.write(lengths)
                f.write(key)
                f.write(value)
            f.write(_framed({"count": len(checkpoint.records), "crc": crc}))
            f.flush()
            os.fsync(f.fileno())
            size = f.tell()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return size


def read(path: Path) -> Checkpoint:
    """The checkpoint in ``path``; :class:`CheckpointError` if it is missing or fails a check."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError("no checkpoint file") from None
    except OSError as exc:
        raise CheckpointError(f"unreadable: {exc}") from None
    try:
        return _parse(data)
    except CheckpointError:
        raise
    except (struct.error, msgspec.DecodeError, ValueError, TypeError) as exc:
        raise CheckpointError(f"damaged: {exc!r}") from None


def _parse(data: bytes) -> Checkpoint:
    if not data.startswith(MAGIC):
        raise CheckpointError("not a checkpoint file")
    header, pos = _unframe(data, len(MAGIC))
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        found = header.get("format") if isinstance(header, dict) else "?"
        raise CheckpointError(f"format {found}, not {FORMAT}")
    count = _int(header, "count")
    start = pos
    records: list[tuple[bytes, bytes]] = []
    unpack, size = _LENGTHS.unpack_from, _LENGTHS.size
    for _ in range(count):
        klen, vlen = unpack(data, pos)
        pos += size
        end = pos + klen + vlen
        if end > len(data):
            raise CheckpointError("damaged: truncated")
        records.append((data[pos:pos + klen], data[pos + klen:end]))
        pos = end
    crc = zlib.crc32(memoryview(data)[start:pos])
    trailer, pos = _unframe(data, pos)
    if not isinstance(trailer, dict) or trailer.get("count") != count or pos != len(data):
        raise CheckpointError("damaged: record count or length does not match")
    if trailer.get("crc") != crc:
        raise CheckpointError("damaged: CRC does not match")
    key = header.get("key")
    if not isinstance(key, bytes) or not isinstance(header.get("topic"), str):
        raise CheckpointError("damaged header")
    return Checkpoint(topic=header["topic"], partition=_int(header, "partition"),
                      offset=_int(header, "offset"), key=key, records=records)


def _unframe(data: bytes, pos: int) -> tuple[Any, int]:
    (n,) = _SIZE.unpack_from(data, pos)
    end = pos + _SIZE.size + n
    if end > len(data):
        raise CheckpointError("damaged: truncated")
    return msgspec.msgpack.decode(data[pos + _SIZE.size:end]), end


def _int(header: dict[str, Any], name: str) -> int:
    value = header.get(name)
    if not isinstance(value, int) or value < 0:
        raise CheckpointError(f"damaged header: {name}={value!r}")
    return value
