"""Read the history of an offline W&B run from its run folder (what a test checks the run kept).

An offline run keeps its logged values only in the run's transaction log ``run-<id>.wandb`` (recent
wandb versions write no ``wandb-summary.json`` offline) and wandb ships no public reader for that
file, so this is written here: the file is a LevelDB-style log (a 7-byte header ``:W&B`` + key +
version, then 32 KiB blocks of chunks ``crc32 (4) | length (2, LE) | type (1: full, 2 first,
3 middle, 4 last) | data``) whose records are ``wandb_internal_pb2.Record`` protobufs (the message
definitions wandb ships). Only history records are decoded; checksums are not verified.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK = 32768
HEADER = 7


def _records(data: bytes):
    pos, parts = HEADER, []
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:                       # block trailer: padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        chunk = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind == 0 and length == 0:
            continue
        parts.append(chunk)
        if kind in (1, 4):                      # full record, or the last chunk of one
            yield b"".join(parts)
            parts = []


def history(run_dir: str | Path) -> list[dict]:
    """Every history row (``{key: value}``, values decoded from JSON) of the run in ``run_dir``."""
    from wandb.proto import wandb_internal_pb2 as pb

    path = next(Path(run_dir).glob("run-*.wandb"))
    rows = []
    for blob in _records(path.read_bytes()):
        rec = pb.Record()
        rec.ParseFromString(blob)
        if rec.WhichOneof("record_type") == "history":
            rows.append({(item.key or "/".join(item.nested_key)): json.loads(item.value_json)
                         for item in rec.history.item})
    return rows
