"""FID with a configurable feature network, exact under DDP, with cached real-image statistics.

:class:`FID` is torchmetrics' ``FrechetInceptionDistance`` (its feature-network handling and its
``_compute_fid``) with three changes, each needed by the evaluation protocol:

* features are kept per sample in ``cat`` states with their ``sample_index`` instead of running sums,
  so the duplicates a ``DistributedSampler`` pads with are dropped at ``compute()`` (sums cannot be
  de-duplicated) and 2 processes give exactly the result of 1;
* ``reset_real_features=False`` always: :meth:`reset` clears only the fake (generated) side;
* the real statistics (mean ``[D]`` float64, covariance ``[D,D]`` float64, count) can be saved to and
  loaded from disk under a hash of the dataset list and of the feature network's weights
  (:meth:`FID.use_cached_real_statistics`): when the hash matches they are never recomputed.

Images given to :meth:`FID.update` are ``[B,3,H,W]`` float in [-1,1] (the project convention).
``feature`` is either an ``nn.Module`` taking such images and returning ``[B,D]`` (for example
:class:`ipsb.backbone.fid_inception.FIDHelperInception`, or a small seeded network in tests), or an
int (64/192/768/2048) selecting torchmetrics' torch-fidelity InceptionV3 -- which needs its weight
file (``feature_extractor_weights_path``); images are then converted to uint8 for it.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence, Union

import torch
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance, _compute_fid

from ipsb.metrics.sample_dedup import cat_state, check_sample_index, dedup_by_index

_SUM_STATES = ("real_features_sum", "real_features_cov_sum", "real_features_num_samples",
               "fake_features_sum", "fake_features_cov_sum", "fake_features_num_samples")


def module_fingerprint(module: nn.Module) -> str:
    """sha256 over a module's class name and its state dict (names, shapes, dtypes, values)."""
    if isinstance(module, _MinusOneOneFeatures):
        module = module.net
    h = hashlib.sha256(type(module).__qualname__.encode())
    for name, t in module.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{list(t.shape)}|{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def dataset_list_hash(items: Sequence[str], feature_fingerprint: str) -> str:
    """sha256 of the sorted dataset list (file names, ids...) together with the feature network's hash."""
    blob = json.dumps({"items": sorted(str(i) for i in items), "feature": feature_fingerprint},
                      sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


class _MinusOneOneFeatures(nn.Module):
    """Wraps a feature network taking [-1,1] images; exposes ``num_features`` for torchmetrics."""

    def __init__(self, net: nn.Module, num_features: int):
        super().__init__()
        self.net = net
        self.num_features = num_features

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def _mean_cov(feats: Tensor) -> tuple[Tensor, Tensor]:
    feats = feats.double()
    mean = feats.mean(0)
    centred = feats - mean
    return mean, centred.t() @ centred / (feats.shape[0] - 1)


class FID(FrechetInceptionDistance):
    """Frechet distance between real and generated image features; ``compute()`` -> scalar tensor."""

    full_state_update = False

    def __init__(self, feature: Union[nn.Module, int] = 2048, input_size: int = 299,
                 feature_extractor_weights_path: Optional[str] = None, **kwargs):
        if kwargs.pop("reset_real_features", False):
            raise ValueError("FID keeps its real statistics across reset() (reset_real_features=False); "
                             "call clear_real_statistics() to drop them")
        if isinstance(feature, nn.Module):
            if isinstance(getattr(feature, "num_features", None), int):
                num = feature.num_features
            else:
                with torch.no_grad():
                    dev = next((t.device for t in [*feature.parameters(), *feature.buffers()]), None)
                    num = feature(torch.zeros(1, 3, input_size, input_size, device=dev)).shape[-1]
            feature = _MinusOneOneFeatures(feature, int(num))
            super().__init__(feature=feature, reset_real_features=False, normalize=False, **kwargs)
        else:
            super().__init__(feature=feature, reset_real_features=False, normalize=False,
                             feature_extractor_weights_path=feature_extractor_weights_path, **kwargs)
        for name in _SUM_STATES:  # replaced by per-sample states below
            self._defaults.pop(name)
            self._reductions.pop(name)
            self._persistent.pop(name, None)
            delattr(self, name)
        for name in ("real_feats", "real_index", "fake_feats", "fake_index"):
            self.add_state(name, default=[], dist_reduce_fx="cat")
        self._real_stats: Optional[tuple[Tensor, Tensor, int]] = None

    # ------------------------------------------------------------------ features
    def _features(self, images: Tensor) -> Tensor:
        if images.dim() != 4 or images.shape[1] != 3 or not images.dtype.is_floating_point:
            raise ValueError(f"FID.update: expected float images [B,3,H,W] in [-1,1], got "
                             f"{images.dtype} {list(images.shape)}")
        x = images.detach()
        if not self.used_custom_model:  # torch-fidelity Inception: uint8 [0,255]
            x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        f = self.inception(x)
        return f.reshape(f.shape[0], -1).double()

    def update(self, images: Tensor, real: bool, sample_index: Tensor) -> None:  # type: ignore[override]
        """images ``[B,3,H,W]`` in [-1,1]; ``real`` selects the side; sample_index ``[B]`` int."""
        idx = check_sample_index(sample_index, images.shape[0], "FID.update").to(images.device)
        feats = self._features(images)
        if real:
            if self._real_stats is not None:
                raise RuntimeError("FID.update(real=True): real statistics were loaded from a cache; "
                                   "call clear_real_statistics() first to recompute them")
            self.real_feats.append(feats)
            self.real_index.append(idx)
        else:
            self.fake_feats.append(feats)
            self.fake_index.append(idx)

    # ------------------------------------------------------------------ statistics
    def _local_stats(self, feats_state, index_state, what: str) -> tuple[Tensor, Tensor, int]:
        idx = cat_state(index_state)
        if idx.numel() < 2:
            raise RuntimeError(f"FID: at least 2 distinct {what} samples are needed, got {idx.numel()}")
        _, feats = dedup_by_index(idx, cat_state(feats_state), what=f"FID {what}")
        if feats.shape[0] < 2:
            raise RuntimeError(f"FID: at least 2 distinct {what} samples are needed, got {feats.shape[0]}")
        mean, cov = _mean_cov(feats)
        return mean, cov, feats.shape[0]

    def compute(self) -> Tensor:
        mean_f, cov_f, _ = self._local_stats(self.fake_feats, self.fake_index, "generated")
        if self._real_stats is not None:
            mean_r, cov_r, _ = (t.to(mean_f.device) if isinstance(t, Tensor) else t for t in self._real_stats)
        else:
            mean_r, cov_r, _ = self._local_stats(self.real_feats, self.real_index, "real")
        return _compute_fid(mean_r, cov_r, mean_f, cov_f).float()

    def real_statistics(self) -> tuple[Tensor, Tensor, int]:
        """(mean ``[D]``, covariance ``[D,D]``, count) of the real side, synced over processes."""
        if self._real_stats is not None:
            return self._real_stats
        with self.sync_context():
            return self._local_stats(self.real_feats, self.real_index, "real")

    def clear_real_statistics(self) -> None:
        """Forget real features and any loaded statistics."""
        self._real_stats = None
        self.real_feats, self.real_index = [], []

    def reset(self) -> None:
        """Clear the generated side only (``reset_real_features=False``)."""
        keep = (list(self.real_feats), list(self.real_index))  # Metric.reset clears lists in place
        super(FrechetInceptionDistance, self).reset()
        self.real_feats, self.real_index = keep

    # ------------------------------------------------------------------ cache
    def save_real_statistics(self, path: Union[str, os.PathLike], dataset_hash: str = "") -> None:
        """Write the real statistics to ``path`` (rank 0 only; others just return)."""
        mean, cov, n = self.real_statistics()
        if torch.distributed.is_available() and torch.distributed.is_initialized() \
                and torch.distributed.get_rank() != 0:
            return
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
        torch.save({"mean": mean.cpu(), "cov": cov.cpu(), "n": int(n), "dataset_hash": dataset_hash,
                    "feature": module_fingerprint(self.inception)}, tmp)
        os.replace(tmp, path)

    def load_real_statistics(self, path: Union[str, os.PathLike]) -> None:
        """Use the statistics stored at ``path``; ValueError if they belong to another feature network."""
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
            mean, cov, n, feat = data["mean"], data["cov"], int(data["n"]), data["feature"]
        except Exception as e:
            raise ValueError(f"FID: could not read real statistics from '{path}' ({type(e).__name__}: {e}); "
                             f"delete the file to recompute them") from e
        if feat != module_fingerprint(self.inception):
            raise ValueError(f"FID: real statistics in '{path}' were computed with another feature network "
                             f"(fingerprint {feat[:12]}...); delete the file or use the matching network")
        d = mean.shape[0]
        if mean.dim() != 1 or cov.shape != (d, d):
            raise ValueError(f"FID: real statistics in '{path}' have inconsistent shapes {list(mean.shape)}, "
                             f"{list(cov.shape)}")
        self.set_real_statistics(mean, cov, n)

    def set_real_statistics(self, mean: Tensor, cov: Tensor, n: int) -> None:
        """Use these real statistics (mean ``[D]``, covariance ``[D,D]``, sample count) instead of
        real features, e.g. ones computed once and shared by several FID metrics."""
        self.real_feats, self.real_index = [], []
        self._real_stats = (mean.double(), cov.double(), int(n))

    def use_cached_real_statistics(self, cache_dir: Union[str, os.PathLike], dataset_list: Sequence[str],
                                   real_batches: Callable[[], Iterable[tuple[Tensor, Tensor]]]) -> tuple[Path, bool]:
        """Load real statistics for ``dataset_list`` from ``cache_dir`` or compute and store them.

        ``real_batches()`` yields ``(images [B,3,H,W] in [-1,1], sample_index [B])`` and is only called
        on a cache miss. Returns ``(cache file, hit)``. The file name is
        ``fid_real_<dataset_list_hash>.pt`` (the hash covers the list and the feature network).
        """
        key = dataset_list_hash(dataset_list, module_fingerprint(self.inception))
        path = Path(cache_dir) / f"fid_real_{key}.pt"
        if path.is_file():
            self.load_real_statistics(path)
            return path, True
        self.clear_real_statistics()
        for images, index in real_batches():
            self.update(images, real=True, sample_index=index)
        self.save_real_statistics(path, dataset_hash=key)
        return path, False
