"""A frozen evaluation list as JSON, with checksums, so two runs are comparable.

A :class:`Manifest` holds ``kind`` (e.g. ``"ffpp"``), the ``config`` that built it, ``files``
(relative path -> ``{"sha256": ...}`` of every input file the list depends on) and ``data`` (the
list itself: pairs, frames, items; any JSON). ``list_sha256`` is the sha256 of the canonical JSON of
those four fields: equal hashes mean the same evaluation list over the same bytes. Loading checks the
stored hash against the content (a hand-edited manifest is refused) and :meth:`Manifest.verify_files`
re-hashes the files under a root (a changed or missing video is refused, by name).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ipsb.checkpoints import sha256_file

FORMAT_VERSION = 1


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON bytes (sorted keys, no whitespace)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


@dataclass
class Manifest:
    """kind, config, files ``{relpath: {"sha256": hex, ...}}``, data (JSON); see module docstring."""

    kind: str
    config: dict
    files: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)

    @property
    def list_sha256(self) -> str:
        return hashlib.sha256(canonical_json(
            {"version": FORMAT_VERSION, "kind": self.kind, "config": self.config,
             "files": self.files, "data": self.data})).hexdigest()

    def to_json(self) -> dict:
        return {"version": FORMAT_VERSION, "kind": self.kind, "list_sha256": self.list_sha256,
                "config": self.config, "files": self.files, "data": self.data}

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically (indent 1, sorted keys); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(self.to_json(), indent=1, sort_keys=True))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, kind: str | None = None) -> "Manifest":
        """Read a manifest; ValueError if unreadable, of another kind, or its content fails its hash."""
        try:
            raw = json.loads(Path(path).read_text())
            m = cls(kind=raw["kind"], config=raw["config"], files=raw["files"], data=raw["data"])
            stored, version = raw["list_sha256"], raw["version"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"cannot read manifest '{path}': {type(e).__name__}: {e}") from e
        if version != FORMAT_VERSION:
            raise ValueError(f"manifest '{path}' has format version {version}, expected {FORMAT_VERSION}")
        if kind is not None and m.kind != kind:
            raise ValueError(f"manifest '{path}' is a {m.kind!r} manifest, expected {kind!r}")
        if m.list_sha256 != stored:
            raise ValueError(f"manifest '{path}' was modified: its content hashes to {m.list_sha256[:16]}..., "
                             f"the stored list_sha256 is {stored[:16]}...; rebuild it")
        return m

    def verify_files(self, root: str | os.PathLike) -> None:
        """Re-hash every listed file under ``root``; ValueError naming the first missing/changed one."""
        root = Path(root)
        for rel, info in sorted(self.files.items()):
            p = root / rel
            if not p.is_file():
                raise ValueError(f"manifest file '{rel}' is missing under '{root}'")
            got = sha256_file(p)
            if got != info["sha256"]:
                raise ValueError(f"file '{p}' changed since the manifest was built: sha256 {got[:16]}..., "
                                 f"manifest has {info['sha256'][:16]}...; rebuild the manifest")
