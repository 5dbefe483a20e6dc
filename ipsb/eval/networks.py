"""The networks the evaluation metrics use, built from config (never chosen silently).

:class:`MetricNetworks` bundles, frozen:

* ``identity`` (:class:`IdentityEncoder`): ID retrieval and ID cosine. FF++: CosFace sphere20
  (``ipsb.backbone.identity_sphere.load_sphere20``); CelebA-HQ: ArcFace IR-SE50
  (``ipsb.backbone.identity_irse.load_ir_se50``). Named alternative: dlib's ResNet descriptor
  (``ipsb.backbone.dlib_identity.DlibResNetIdentity``; numbers not comparable with papers).
* ``regressor`` (:class:`CoeffRegressor`) + ``expression_slice``: the expression coefficients
  (Deep3D ``epoch_20.pth``: 64 coefficients at ``[80,144)``, the default for a 257-wide output;
  a regressor with ``coeff_groups`` gives its own ``exp`` slice). Deep3D expects its own alignment;
  on FFHQ-aligned crops its numbers differ from those on Deep3D crops (as in the papers' code,
  which feeds FFHQ-style crops too).
* ``pose`` (:class:`PoseEstimator`): HopeNet (``ipsb.backbone.pose.load_hopenet``); when the
  network has a ``logits(image) -> [B,3,66]`` method both pose forms are reported, else only
  degrees (e.g. :class:`ipsb.eval.adapters.RegressorAnglePose`, the toy world's pose).
* ``fid`` (optional, CelebA-HQ): a feature network ``image -> [B,D]`` for :class:`ipsb.metrics.FID`
  (``ipsb.backbone.fid_inception.FIDHelperInception``, or :class:`ipsb.eval.adapters.CoeffFeatures`
  in the toy world).

Config (a dict or a YAML file): ``{component: {class_path, init_args}}`` plus ``expression_slice``;
``class_path`` may name a class or a factory function whose declared return type fits (built by
:mod:`ipsb.config_objects`: allowlisted, type-checked before the call). :meth:`MetricNetworks.file_hashes` gives the sha256 of
every file a network loaded, for the results table.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from ipsb.backbone.interfaces import freeze
from ipsb.checkpoints import sha256_file
from ipsb.config_objects import build_components, read_mapping

COMPONENTS = ("identity", "regressor", "pose", "fid")
DEEP3D_EXP_SLICE = (80, 144)
_HASHES: dict[tuple[str, int, int], str] = {}


def _files_of(module: nn.Module) -> list[str]:
    """Existing files recorded by a module or its sub-modules (``checkpoint_path`` / ``checkpoint``)."""
    found: list[str] = []
    for sub in module.modules():
        for attr in ("checkpoint_path", "checkpoint_paths", "checkpoint"):
            value = getattr(sub, attr, None)
            values = value if isinstance(value, (list, tuple)) else [value]
            for v in values:
                if isinstance(v, (str, os.PathLike)) and Path(v).is_file() and str(v) not in found:
                    found.append(str(v))
    name = type(module).__name__
    if not found and name == "FIDHelperInception":
        from ipsb.backbone.fid_inception import find_fid_helper_file

        found.append(str(find_fid_helper_file()))
    if not found and name == "DlibResNetIdentity":
        from ipsb.backbone.dlib_identity import _model_paths

        found += list(_model_paths(None, None))
    return found


def _sha256_cached(path: str) -> str:
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = sha256_file(path)
    return _HASHES[key]


class MetricNetworks(nn.Module):
    """Frozen metric networks; see the module docstring. All images ``[B,3,H,W]`` in [-1,1].

    Each network is a built module or its ``{class_path, init_args}`` spec; specs are built here
    (:func:`ipsb.config_objects.build_components`: allowlisted, type-checked before the call, every
    missing checkpoint file named in one error), which is what a config gives.
    """

    def __init__(self, identity: Union[dict, nn.Module], regressor: Union[dict, nn.Module],
                 pose: Union[dict, nn.Module, None] = None, fid: Union[dict, nn.Module, None] = None,
                 expression_slice: Optional[Sequence[int]] = None):
        super().__init__()
        given = {"identity": identity, "regressor": regressor, "pose": pose, "fid": fid}
        specs = {name: v for name, v in given.items() if isinstance(v, Mapping)}
        if specs:
            given.update(build_components(specs, MetricNetworks, "metric networks"))
        identity, regressor, pose, fid = given["identity"], given["regressor"], given["pose"], given["fid"]
        for name, value in (("identity", identity), ("regressor", regressor), ("pose", pose), ("fid", fid)):
            if value is not None and not isinstance(value, nn.Module):
                raise ValueError(f"metric network {name!r} must be an nn.Module, got {type(value).__name__}")
        self.identity, self.regressor, self.pose, self.fid = identity, regressor, pose, fid
        if expression_slice is None:
            groups = getattr(regressor, "coeff_groups", None)
            if isinstance(groups, dict) and "exp" in groups:
                expression_slice = groups["exp"]
            elif getattr(regressor, "num_coeffs", None) == 257:
                expression_slice = DEEP3D_EXP_SLICE
            else:
                raise ValueError(f"cannot tell where the expression coefficients of {type(regressor).__name__} "
                                 f"are; set expression_slice: [start, end]")
        a, b = (int(v) for v in expression_slice)
        if not 0 <= a < b:
            raise ValueError(f"expression_slice must be [start, end) with 0 <= start < end, got {expression_slice}")
        self.expression_slice = (a, b)
        self.config: Optional[dict] = ({**specs, "expression_slice": expression_slice}
                                       if len(specs) == sum(v is not None for v in (identity, regressor, pose, fid))
                                       else None)
        freeze(self)

    def train(self, mode: bool = True) -> "MetricNetworks":
        """Always eval (frozen)."""
        return super().train(False)

    @classmethod
    def from_config(cls, config: Union[str, os.PathLike, Mapping[str, Any]]) -> "MetricNetworks":
        """Build from ``{identity: spec, regressor: spec, pose: spec, fid: spec, expression_slice}``
        (a dict or a YAML path); every missing checkpoint file is named in one MissingCheckpointError."""
        config = read_mapping(config, "metric networks config")
        if "class_path" in config:   # the full form {class_path: MetricNetworks, init_args: {...}}
            config = dict(config.get("init_args") or {})
        unknown = set(config) - set(COMPONENTS) - {"expression_slice"}
        if unknown:
            raise ValueError(f"unknown metric network entries {sorted(unknown)}; expected {list(COMPONENTS)} "
                             f"and expression_slice")
        for need in ("identity", "regressor"):
            if config.get(need) is None:
                raise ValueError(f"the metric networks config needs an {need!r} entry")
        nets = cls(**config)
        nets.config = config
        return nets

    # ------------------------------------------------------------------ measurements
    @property
    def pose_has_logits(self) -> bool:
        return self.pose is not None and callable(getattr(self.pose, "logits", None))

    def embed(self, image: torch.Tensor) -> torch.Tensor:
        """image -> identity embedding ``[B,D]``."""
        return self.identity(image)

    def expression(self, image: torch.Tensor) -> torch.Tensor:
        """image -> expression coefficients ``[B,E]``."""
        a, b = self.expression_slice
        coeffs = self.regressor(image)
        if coeffs.shape[1] < b:
            raise ValueError(f"expression_slice {self.expression_slice} is outside the regressor's "
                             f"{coeffs.shape[1]} coefficients")
        return coeffs[:, a:b]

    def head_pose(self, image: torch.Tensor) -> Optional[torch.Tensor]:
        """image -> ``[B,3,66]`` bin logits (when the pose net has them) or ``[B,3]`` degrees; None without a pose net."""
        if self.pose is None:
            return None
        return self.pose.logits(image) if self.pose_has_logits else self.pose(image)

    # ------------------------------------------------------------------ provenance
    def checkpoint_files(self) -> dict[str, list[str]]:
        """``{component: [files it loaded]}``."""
        return {name: _files_of(getattr(self, name)) for name in COMPONENTS if getattr(self, name) is not None}

    def file_hashes(self) -> dict[str, dict[str, str]]:
        """``{component: {file name: sha256}}`` of every file the metric networks loaded."""
        return {name: {Path(f).name: _sha256_cached(f) for f in files}
                for name, files in self.checkpoint_files().items()}

    def describe(self) -> dict[str, str]:
        """``{component: class name}`` (for the table's provenance)."""
        return {name: type(getattr(self, name)).__name__ for name in COMPONENTS if getattr(self, name) is not None}
