"""WPlusWriter: W+ predictions -> resumable shards -> one W+ file plus a manifest.

A Lightning :class:`BasePredictionWriter` (``write_interval="batch"``) for predict runs whose
``predict_step`` returns ``{"wplus": [B,num_ws,w_dim], "sample_index": [B], "name": [B], "path":
[B]}`` (:class:`ipsb.inversion.InversionModule`). Files, for ``output = dir/codes.pt``:

* ``dir/codes.pt.shards/``: ``run.json`` (what decides the codes: the module's ``run_settings()``,
  the data module's hyper-parameters and the list of sample names) and one shard per batch,
  ``<first sample index>.pt`` = ``{"wplus", "sample_index", "name", "sha256"}`` (sha256 of each
  source file), written atomically (temporary file + rename), so a kill never leaves a half shard;
* at the end (every rank done): ``dir/codes.pt`` = ``{"wplus": [N,num_ws,w_dim] float32, "names":
  [N]}`` in sample order (what :class:`ipsb.data.latents.LatentFileDataModule` reads) and
  ``dir/codes.manifest.json`` (an :class:`ipsb.data.manifest.Manifest` of kind ``wplus``: every source
  file with its sha256, the run record, the shape and the sha256 of the code tensor); the shards
  folder is then removed.

Resume: a rerun with the same settings keeps the finished shards and asks the data module to leave
those samples out (``exclude_from_predict(indices)``), so only the rest is computed; the merged file
is the same as an uninterrupted run's when the data module's batches are fixed groups
(:class:`ipsb.data.batch_groups.BatchGroups`), whatever the number of processes. A shards folder of
different settings is refused (or discarded with ``overwrite``); an existing output is never replaced
without ``overwrite``. Under DDP every rank writes its own batches; rank 0 merges after a barrier.

The data module must provide ``predict_names() -> list[str]`` (names in sample-index order) and
``exclude_from_predict(indices)`` (:class:`ipsb.data.image_folder.FFHQDataModule` does).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from ipsb.checkpoints import sha256_file

RUN_FILE = "run.json"
#: data module hyper-parameters that do not change the codes (a resumed run may change them); the
#: batch size does (a sample's batch and position in it change its float values at round-off level).
FREE_DATA_SETTINGS = ("num_workers",)


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _plain(value: Any) -> Any:
    """A JSON round trip (tuples -> lists, paths and other objects -> str), as run.json stores it."""
    return json.loads(json.dumps(value, default=str))


class WPlusWriter(BasePredictionWriter):
    """Write W+ predictions as resumable shards, merged into ``output`` (see the module docstring).

    Args:
        output: the merged ``.pt`` file.
        manifest: its manifest (default ``<output stem>.manifest.json`` next to it).
        overwrite: replace an existing ``output``; discard shards written with other settings.
    """

    def __init__(self, output: str, manifest: Optional[str] = None, overwrite: bool = False):
        super().__init__(write_interval="batch")
        self.output = Path(output)
        self.shards = self.output.with_name(self.output.name + ".shards")
        self.manifest = Path(manifest) if manifest else self.output.with_name(self.output.stem + ".manifest.json")
        self.overwrite = bool(overwrite)
        self.record: Optional[dict] = None

    # ------------------------------------------------------------------ run record / resume
    def _run_record(self, trainer, pl_module) -> dict:
        dm = trainer.datamodule
        for need in ("predict_names", "exclude_from_predict"):
            if dm is None or not callable(getattr(dm, need, None)):
                raise TypeError(f"WPlusWriter needs a data module with predict_names() and exclude_from_predict() "
                                f"(e.g. ipsb.data.image_folder.FFHQDataModule), got {type(dm).__name__}")
        names = list(dm.predict_names())
        data = {k: v for k, v in dict(getattr(dm, "hparams", {})).items() if k not in FREE_DATA_SETTINGS}
        settings = pl_module.run_settings() if callable(getattr(pl_module, "run_settings", None)) else {}
        return {"model": _plain(settings), "data": _plain(data), "count": len(names),
                "names_sha256": hashlib.sha256("\n".join(names).encode()).hexdigest(), "names": names}

    def finished_indices(self) -> list[int]:
        """Sample indices of every finished shard (sorted)."""
        done: list[int] = []
        for shard in sorted(self.shards.glob("*.pt")):
            done += torch.load(shard, map_location="cpu", weights_only=True, mmap=True)["sample_index"].tolist()
        return sorted(done)

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "predict":
            return
        if self.output.exists() and not self.overwrite:
            raise FileExistsError(f"'{self.output}' exists; pass --model.init_args.overwrite true to replace it "
                                  f"or choose another --model.init_args.output")
        self.record = self._run_record(trainer, pl_module)
        old = None
        if (self.shards / RUN_FILE).is_file():
            old = json.loads((self.shards / RUN_FILE).read_text())
        resume = old == self.record
        if old is not None and not resume and not self.overwrite:
            differ = sorted(k for k in set(old) | set(self.record) if old.get(k) != self.record.get(k))
            raise ValueError(f"'{self.shards}' holds shards of a run with other settings (they differ in: "
                             f"{', '.join(differ)}); delete that folder, choose another --model.init_args.output, "
                             f"or pass --model.init_args.overwrite true to discard them")
        done = self.finished_indices() if resume else []
        trainer.strategy.barrier("wplus_writer_read")
        if trainer.is_global_zero:
            if old is not None and not resume:
                shutil.rmtree(self.shards)
            self.shards.mkdir(parents=True, exist_ok=True)
            if not resume:
                (self.shards / RUN_FILE).write_text(json.dumps(self.record, indent=1, sort_keys=True))
        trainer.strategy.barrier("wplus_writer_ready")
        if done:
            trainer.datamodule.exclude_from_predict(done)

    # ------------------------------------------------------------------ shards
    def write_on_batch_end(self, trainer, pl_module, prediction: dict, batch_indices: Optional[Sequence[int]],
                           batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        index = prediction["sample_index"].long().cpu()
        shard = {"wplus": prediction["wplus"].float().cpu().contiguous(), "sample_index": index,
                 "name": list(prediction["name"]), "sha256": [sha256_file(p) for p in prediction["path"]]}
        if shard["wplus"].shape[0] != index.shape[0]:
            raise ValueError(f"prediction has {shard['wplus'].shape[0]} codes for {index.shape[0]} samples")
        _atomic_save(shard, self.shards / f"{int(index.min()):09d}.pt")

    # ------------------------------------------------------------------ merge
    def teardown(self, trainer, pl_module, stage: str) -> None:
        """After a successful predict run (Lightning calls no teardown hook after an exception)."""
        if stage != "predict" or self.record is None:
            return
        trainer.strategy.barrier("wplus_writer_merge")
        if trainer.is_global_zero:
            self.merge()
        trainer.strategy.barrier("wplus_writer_merged")

    def merge(self) -> Path:
        """Shards -> ``output`` + manifest; removes the shards folder. Refuses missing or repeated samples."""
        from ipsb.data.manifest import Manifest

        record = self.record if self.record is not None else json.loads((self.shards / RUN_FILE).read_text())
        parts = [torch.load(p, map_location="cpu", weights_only=True) for p in sorted(self.shards.glob("*.pt"))]
        index = torch.cat([p["sample_index"] for p in parts]) if parts else torch.zeros(0, dtype=torch.long)
        count = int(record["count"])
        if sorted(index.tolist()) != list(range(count)):
            missing = sorted(set(range(count)) - set(index.tolist()))
            raise RuntimeError(f"'{self.shards}' does not hold every sample once ({index.numel()} codes for {count} "
                               f"samples, missing e.g. {missing[:5]}); rerun the same command to finish")
        order = torch.argsort(index)
        wplus = torch.cat([p["wplus"] for p in parts])[order].contiguous()
        names = [n for p in parts for n in p["name"]]
        sha = [s for p in parts for s in p["sha256"]]
        names, sha = [names[i] for i in order.tolist()], [sha[i] for i in order.tolist()]
        if names != record["names"]:
            raise RuntimeError(f"the shards in '{self.shards}' name other files than the data module lists")
        config = {k: v for k, v in record.items() if k != "names"}
        data = {"output": str(self.output), "shape": list(wplus.shape),
                "wplus_sha256": hashlib.sha256(wplus.numpy().tobytes()).hexdigest(), "names": names}
        Manifest(kind="wplus", config=config, files={n: {"sha256": s} for n, s in zip(names, sha)},
                 data=data).save(self.manifest)
        self.output.parent.mkdir(parents=True, exist_ok=True)
        _atomic_save({"wplus": wplus, "names": names}, self.output)
        shutil.rmtree(self.shards)
        return self.output
