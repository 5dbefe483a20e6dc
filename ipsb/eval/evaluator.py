"""EvaluationModule: ``ipsb test`` runs the FF++ or CelebA-HQ protocol and writes the results table.

Rows (one per swap producer, all measured on the same items in one pass):

* the data's own swaps, when batches carry ``"swap"`` (FF++ ``swaps: manipulated`` -- FF++'s
  Deepfakes/FaceSwap/FaceShifter videos, the paper's baseline rows -- or a folder of precomputed
  swaps for FF++ or CelebA-HQ); named ``data_swaps_name`` (default: the FF++ method or the folder name);
* each :class:`ipsb.eval.methods.SwapMethod` in ``methods`` (the ipsb swapper from stage checkpoints,
  trivial bounds...), applied to the batch's aligned source/target.

FF++ (``benchmark: ffpp``, :class:`ipsb.data.ffpp.FFPPDataModule`, loaders ``[pairs, gallery]``):
per pair item the swap's identity embedding is ranked against the gallery -> ID retrieval top-k,
and compared with the source image's -> ID cosine; expression and pose are compared with the target
frame's. The metric networks' preset (:mod:`ipsb.eval.networks`) picks the formulas: the gallery
(all selected source frames, or each item's own source image grouped by target video, in which case
the DataModule's gallery loader is switched off), the items the ID cosine averages, and the columns
each row reports; every row names its preset. CelebA-HQ (``benchmark: celebahq``,
:class:`ipsb.data.celebahq.CelebAHQDataModule`): the same plus FID of the swaps against the image
folder (real statistics cached under ``fid_cache_dir`` by a hash of the image list and the feature
network); the retrieval gallery is the distinct source images of the pairs list.

The measuring itself (metric set of a row, its update from a batch, the row) is
:mod:`ipsb.eval.swap_measures`, shared with the training-time evaluation callback.

DDP: every metric keeps per-sample states de-duplicated by ``sample_index`` (exact whatever the
sampler padding); ``compute()`` runs on every rank (collective), only rank 0 writes the table.
An existing table is refused at the start (before any work) unless ``overwrite: true``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import torch
from lightning.pytorch import LightningModule
from torch import nn

from ipsb.checkpoints import sha256_file
from ipsb.config_objects import build
from ipsb.eval.methods import SwapMethod
from ipsb.eval.networks import MetricNetworks
from ipsb.eval.swap_measures import PairEvaluation
from ipsb.eval.table import build_table, check_benchmark, check_writable, table_paths, write_table


class EvaluationModule(LightningModule):
    """See the module docstring.

    Args:
        networks: the metric networks: built (LightningCLI builds them from the config's
            ``{identity: spec, regressor: spec, ...}``, each class path allowlisted and type-checked
            before anything is called) or, from Python, their config dict or YAML path
            (:meth:`MetricNetworks.from_config`).
        benchmark: ``ffpp`` or ``celebahq``.
        methods: swap methods (instances, or ``{class_path, init_args}`` specs built as
            :class:`SwapMethod`), one row each.
        data_swaps_name: row name of the data's own swaps (default derived from the DataModule).
        output_dir / table_name / overwrite: where the ``.md`` + ``.json`` go (default name = benchmark).
        top_k: ID retrieval ranks reported (top-1 and top-5 are the table's columns).
        fid_cache_dir: folder of cached real FID statistics (CelebA-HQ); None: recompute every run.
        fid_batch_size: batch size when computing the real statistics.
        notes: free-text lines added to the table.
    """

    def __init__(self, networks: MetricNetworks, benchmark: str = "ffpp",
                 methods: Optional[Sequence[SwapMethod]] = None, data_swaps_name: Optional[str] = None,
                 output_dir: str = "outputs/eval", table_name: Optional[str] = None, overwrite: bool = False,
                 top_k: Sequence[int] = (1, 5), fid_cache_dir: Optional[str] = None, fid_batch_size: int = 16,
                 notes: Sequence[str] = ()):
        super().__init__()
        self.benchmark = check_benchmark(benchmark)
        self.networks = networks if isinstance(networks, MetricNetworks) else MetricNetworks.from_config(networks)
        built = [m if isinstance(m, nn.Module) else build(m, SwapMethod, "swap method") for m in (methods or [])]
        for m in built:
            if not isinstance(m, SwapMethod):
                raise ValueError(f"methods must be SwapMethod instances/specs, got {type(m).__name__}")
        names = [m.name for m in built]
        if len(set(names)) != len(names):
            raise ValueError(f"swap method names must be unique, got {names}")
        self.methods = nn.ModuleList(built)
        self.data_swaps_name = data_swaps_name
        self.output_dir, self.table_name, self.overwrite = output_dir, table_name or benchmark, overwrite
        self.top_k = tuple(int(k) for k in top_k)
        if 1 not in self.top_k or 5 not in self.top_k:
            raise ValueError(f"top_k must include 1 and 5 (the table's columns), got {self.top_k}")
        preset = self.networks.preset
        if self.benchmark not in preset.benchmarks:
            raise ValueError(f"the {preset.name!r} metric preset applies to {list(preset.benchmarks)}, not to the "
                             f"{self.benchmark!r} benchmark")
        if self.benchmark == "celebahq" and self.networks.fid is None:
            raise ValueError("the CelebA-HQ benchmark reports FID: add a 'fid' feature network to the metric networks")
        self.fid_cache_dir, self.fid_batch_size, self.notes = fid_cache_dir, int(fid_batch_size), list(notes)
        self.row_names: list[str] = []
        self.evaluation: Optional[PairEvaluation] = None
        self.results: list[dict] = []
        self.written: Optional[tuple[Path, Path]] = None
        self._gallery_ids: dict[str, int] = {}

    # ------------------------------------------------------------------ setup
    def _datamodule(self):
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None:
            raise ValueError("EvaluationModule needs a DataModule (FFPPDataModule or CelebAHQDataModule) "
                             "passed to trainer.test(model, datamodule=...)")
        return dm

    def _data_swaps_row(self, dm) -> Optional[str]:
        swaps = getattr(dm, "swaps", None)
        if swaps is None:
            return None
        if self.data_swaps_name:
            return self.data_swaps_name
        if swaps == "manipulated":
            return f"{getattr(dm, 'method', 'manipulated')} (dataset videos)"
        return f"{Path(str(swaps)).name} (precomputed)"

    @property
    def _gallery(self) -> str:
        """The retrieval gallery policy (:data:`ipsb.eval.swap_measures.GALLERIES`)."""
        if self.benchmark == "celebahq":
            return "pair_sources"
        return "item_sources" if self.networks.preset.id_gallery == "item_sources" else "source_frames"

    @property
    def _item_source_gallery(self) -> bool:
        return self._gallery == "item_sources"

    def setup(self, stage: str) -> None:
        """The FF++ gallery loader is read only when the preset's gallery is the source frames."""
        dm = getattr(self._trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "gallery_loader"):
            dm.gallery_loader = not self._item_source_gallery

    def on_test_start(self) -> None:
        check_writable(self.output_dir, self.table_name, self.overwrite,   # every rank: fail before work
                       "add --model.init_args.overwrite true (overwrite: true in the config)")
        dm = self._datamodule()
        rows = ([self._data_swaps_row(dm)] if self._data_swaps_row(dm) else []) + [m.name for m in self.methods]
        if not rows:
            raise ValueError("nothing to evaluate: the DataModule provides no swaps (set its swaps option) and "
                             "no swap methods are configured (methods: [...])")
        if len(set(rows)) != len(rows):
            raise ValueError(f"row names must be unique, got {rows}; set data_swaps_name")
        self.row_names = rows
        self.evaluation = PairEvaluation(self.networks, rows, self._gallery, self.top_k,
                                         fid=self.benchmark == "celebahq").to(self.device)
        self.results, self.written = [], None
        if self.benchmark == "celebahq":
            dm.setup("test")
            sources = sorted({s for s, _ in dm.dataset.pairs})
            self._gallery_ids = {s: i for i, s in enumerate(sources)}
            self._prepare_fid(dm)

    def _prepare_fid(self, dm) -> None:
        """Real-image FID statistics of the CelebA-HQ folder (this rank's share, synced), shared by all rows."""
        from ipsb.data.image_folder import load_image

        files = dm.dataset.files()
        world, rank = self.trainer.world_size, self.trainer.global_rank
        mine = list(range(rank, len(files), world))
        size = dm.dataset.image_size

        def batches():
            for s in range(0, len(mine), self.fid_batch_size):
                idx = mine[s:s + self.fid_batch_size]
                imgs = torch.stack([load_image(dm.dataset.root / files[i], size) for i in idx]).to(self.device)
                yield imgs, torch.tensor(idx, device=self.device)

        with torch.no_grad():
            if self.fid_cache_dir:
                self.evaluation.row_metrics[0].fid.use_cached_real_statistics(self.fid_cache_dir, files, batches)
            else:
                for imgs, idx in batches():
                    self.evaluation.add_real(imgs, idx)
            self.evaluation.share_real_statistics()   # collective: every rank gets the global statistics

    # ------------------------------------------------------------------ steps
    def _swaps(self, batch: dict) -> list[torch.Tensor]:
        out = []
        if "swap" in batch:
            out.append(batch["swap"])
        elif self.row_names and len(self.row_names) > len(self.methods):
            raise ValueError("the DataModule was configured with swaps but a batch has no 'swap' entry")
        for m in self.methods:
            out.append(m(batch["source"], batch["target"]))
        for name, s in zip(self.row_names, out):
            if s.shape != batch["target"].shape:
                raise ValueError(f"swap method {name!r} returned {list(s.shape)}, expected the target's "
                                 f"{list(batch['target'].shape)}")
        return out

    @torch.no_grad()
    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.benchmark == "ffpp" and dataloader_idx == 1:           # the gallery of source frames
            self.evaluation.gallery_step(batch)
            return
        if self.benchmark == "celebahq":     # the retrieval label: the source's place among the distinct sources
            ids = [self._gallery_ids[n] for n in batch["source_name"]]
            batch = {**batch, "source_id": torch.tensor(ids, device=batch["sample_index"].device)}
        self.evaluation.pairs_step(batch, self._swaps(batch))

    def _manifest_record(self, dm) -> Optional[dict]:
        m = getattr(dm, "manifest", None)
        if m is not None:
            path = getattr(dm, "manifest_path", None)
            return {"path": path, "sha256": sha256_file(path) if path and Path(path).is_file() else None,
                    "list_sha256": m.list_sha256, "counts": m.data.get("counts"), "config": m.config}
        ds = getattr(dm, "dataset", None)
        if ds is not None and hasattr(ds, "pairs"):
            import hashlib
            import json

            pf = getattr(dm, "pairs_file", None)
            listing = hashlib.sha256(json.dumps(ds.files()).encode()).hexdigest()
            return {"path": str(pf), "sha256": sha256_file(pf) if pf and Path(pf).is_file() else None,
                    "list_sha256": listing, "counts": {"pairs": len(ds.pairs), "images": len(ds.files())}}
        return None

    def on_test_epoch_end(self) -> None:
        self.results = self.evaluation.rows()  # collective
        if not self.trainer.is_global_zero:
            return
        dm = self._datamodule()
        networks = {"preset": self.networks.describe_preset(),
                    "classes": self.networks.describe(), "files": self.networks.file_hashes(),
                    "expression_slice": list(self.networks.expression_slice),
                    "pose_form": "logits" if self.networks.pose_has_logits else "degrees"}
        settings = {"world_size": self.trainer.world_size, "top_k": list(self.top_k),
                    "datamodule": type(dm).__name__,
                    **{k: getattr(dm, k) for k in ("method", "frames_per_video", "source_frame", "image_size",
                                                   "swaps", "limit_pairs") if hasattr(dm, k)}}
        settings = {k: (str(v) if isinstance(v, os.PathLike) else v) for k, v in settings.items()}
        table = build_table(self.benchmark, self.results, networks, self._manifest_record(dm), settings, self.notes)
        self.written = write_table(table, self.output_dir, self.table_name, self.overwrite)
        print(f"[ipsb] {self.benchmark} results table: {self.written[0]} and {self.written[1]}")

    def table_files(self) -> tuple[Path, Path]:
        """``(markdown, json)`` paths of this module's table."""
        return table_paths(self.output_dir, self.table_name)
