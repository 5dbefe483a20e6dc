"""The networks the evaluation metrics use, built from config (never chosen silently).

:class:`MetricNetworks` bundles, frozen:

* ``identity`` (:class:`IdentityEncoder`): ID retrieval and ID cosine. FF++: CosFace sphere20
  (``ipsb.backbone.identity_sphere.load_sphere20``); CelebA-HQ: ArcFace IR-SE50
  (``ipsb.backbone.identity_irse.load_ir_se50``). Named alternative: dlib's ResNet descriptor
  (``ipsb.backbone.dlib_identity.DlibResNetIdentity``; numbers not comparable with papers).
* ``regressor`` (:class:`CoeffRegressor`) + ``expression_slice``: the expression coefficients
  (Deep3D ``epoch_20.pth``: 64 coefficients at ``[80,144)``, the default for a 257-wide output;
  a regressor with ``coeff_groups`` gives its own ``exp`` slice). Deep3D expects its own 5-point
  alignment: :class:`ipsb.eval.deep3d_aligned.AlignedDeep3DRegressor` (both presets) does it;
  :class:`ipsb.backbone.recon.Deep3DRegressor` only resizes the frame.
* ``pose`` (:class:`PoseEstimator`): HopeNet (``ipsb.backbone.pose.load_hopenet``); when the
  network has a ``logits(image) -> [B,3,66]`` method the bin forms are reported too, else only
  degrees (e.g. :class:`ipsb.eval.adapters.RegressorAnglePose`, the toy world's pose).
* ``fid`` (optional, CelebA-HQ): a feature network ``image -> [B,D]`` for :class:`ipsb.metrics.FID`
  (``ipsb.backbone.fid_inception.FIDHelperInception``, or :class:`ipsb.eval.adapters.CoeffFeatures`
  in the toy world).

Config (a dict or a YAML file): ``{component: {class_path, init_args}}`` plus ``expression_slice``
and ``preset``; ``class_path`` may name a class or a factory function whose declared return type fits
(built by :mod:`ipsb.config_objects`: allowlisted, type-checked before the call).
:meth:`MetricNetworks.file_hashes` gives the sha256 of
every file a network loaded, for the results table.

Presets (:data:`PRESETS`, ``preset: NAME`` in the config; docs/evaluation.md says what each one
does and why): a named set of metric networks *and* of the formulas the harness applies to their
outputs, named in every results-table row.

* ``reliableswap`` -- ReliableSwap's ``inference/ffplus/eval.py``, the only public FF++ evaluation
  code, reproduced with its quirks: sphere20 on the whole frame resized to 112 (no crop, no mirror);
  retrieval against each item's own source image grouped by target video; the printed ID cosine
  over the first tenth of the items; HopeNet fed the [-1,1] 256 px frame; pose
  ``mean_angles sqrt(MSE_a * 66) / 2`` of raw logits; Deep3D on its own 5-point alignment of the
  truncated uint8 frame; expression ``sqrt(MSE * 64)``. The published FF++ numbers are comparable
  to this preset.
* ``clean`` -- the corrected form: sphere20 on the face crop with its mirror, retrieval against all
  selected source frames (top-1, top-5), cosine over all items; HopeNet at 224 px in [0,1], pose as
  the mean L2 of (yaw, pitch, roll) in degrees; Deep3D aligned (rounded uint8); expression as the
  mean L2 of the 64 coefficients.
* no preset (``custom``): the networks the config names, every form the harness can compute.

A component the config gives with a ``class_path`` replaces the preset's network (recorded as
``replaced``, e.g. the toy networks with ``preset: clean``); one given as ``{init_args: {...}}``
only overrides those arguments of the preset's network (e.g. another checkpoint path).
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
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

#: Row keys of the results table a preset may report (:mod:`ipsb.eval.table` gives their headers).
METRIC_COLUMNS = ("id_top1_pct", "id_top5_pct", "id_cosine", "exp_l2", "exp_sqrt_mse", "pose_deg",
                  "pose_bin_sqrt_mse", "pose_logit_l2", "fid")
ID_GALLERIES = ("source_frames", "item_sources")


@dataclass(frozen=True)
class MetricPreset:
    """A named set of metric networks and formulas (see the module docstring).

    Attributes:
        name / summary: how the results table names and describes it.
        networks: ``{component: {class_path, init_args}}`` built unless the config replaces them.
        id_gallery: ``"source_frames"`` (the FF++ gallery loader: every selected frame of every
            source video, labelled by source video) or ``"item_sources"`` (each item's own source
            image labelled by the item's target video, queries likewise: ReliableSwap's retrieval).
        id_cosine_first_items_divisor: ``None`` (ID cosine over all items) or ``d`` (over the first
            ``N // d`` items, ReliableSwap's printed cosine).
        columns: the row keys the preset reports; the other columns stay empty.
        benchmarks: where the preset applies.
        requires_pose_logits: the pose network must give HopeNet's 66-bin logits.
    """

    name: str
    summary: str
    networks: Mapping[str, Mapping] = field(default_factory=dict)
    id_gallery: str = "source_frames"
    id_cosine_first_items_divisor: Optional[int] = None
    columns: tuple[str, ...] = METRIC_COLUMNS
    benchmarks: tuple[str, ...] = ("ffpp", "celebahq")
    requires_pose_logits: bool = False


_SPHERE20 = "ipsb.backbone.identity_sphere.load_sphere20"
_ALIGNED_DEEP3D = "ipsb.eval.deep3d_aligned.AlignedDeep3DRegressor"
_HOPENET = "ipsb.backbone.pose.load_hopenet"
_FILES = {"identity": "net_sphere20_data_vggface2_acc_9955.pth", "regressor": "epoch_20.pth",
          "pose": "hopenet_robust_alpha1.pkl", "lm3d": "similarity_Lm3D_all.mat"}


def _ffpp_networks(crop: str, mirror: bool, to_uint8: str, pose_input: str) -> dict[str, dict]:
    """The FF++ metric networks (sphere20, Deep3D on its 5-point alignment, HopeNet) with a preset's
    conventions: sphere20's ``crop``/``mirror``, the frame's ``to_uint8`` rounding before Deep3D, and
    HopeNet's ``preprocessing``."""
    return {"identity": {"class_path": _SPHERE20,
                         "init_args": {"checkpoint": _FILES["identity"], "crop": crop, "mirror": mirror}},
            "regressor": {"class_path": _ALIGNED_DEEP3D,
                          "init_args": {"checkpoint": _FILES["regressor"], "lm3d": _FILES["lm3d"],
                                        "detector": "dlib", "no_face": "ffhq_points", "to_uint8": to_uint8}},
            "pose": {"class_path": _HOPENET, "init_args": {"checkpoint": _FILES["pose"], "preprocessing": pose_input}}}


#: The named presets (``preset: NAME``); ``custom`` is the absence of one.
PRESETS: dict[str, MetricPreset] = {p.name: p for p in [
    MetricPreset(
        name="reliableswap",
        summary="ReliableSwap's inference/ffplus/eval.py reproduced with its conventions (the published "
                "FF++ numbers rest on them): whole frame -> sphere20 112x112, no mirror; retrieval against "
                "the items' own source images; ID cosine over the first N/10 items; HopeNet on the [-1,1] "
                "256 px frame, pose = mean over angles of sqrt(MSE*66)/2 of raw logits; Deep3D on its 5-point "
                "alignment of the truncated uint8 frame, expression = sqrt(MSE*64)",
        networks=_ffpp_networks(crop="resize", mirror=False, to_uint8="truncate", pose_input="reliableswap"),
        id_gallery="item_sources", id_cosine_first_items_divisor=10,
        columns=("id_top1_pct", "id_cosine", "exp_sqrt_mse", "pose_logit_l2"),
        benchmarks=("ffpp",), requires_pose_logits=True),
    MetricPreset(
        name="clean",
        summary="corrected conventions: sphere20 on the face crop with its mirror; retrieval against all "
                "selected source frames; ID cosine over all items; HopeNet at 224 px in [0,1], pose = mean "
                "L2 of (yaw, pitch, roll) in degrees; Deep3D on its 5-point alignment, expression = mean L2",
        networks=_ffpp_networks(crop="ffhq", mirror=True, to_uint8="round", pose_input="imagenet224"),
        columns=("id_top1_pct", "id_top5_pct", "id_cosine", "exp_l2", "pose_deg", "fid")),
]}
#: No preset: the configured networks, every form the harness computes.
CUSTOM = MetricPreset(name="custom", summary="no named preset: the configured networks, every form computed")


def get_preset(preset: Union[None, str, MetricPreset]) -> MetricPreset:
    """``None`` -> :data:`CUSTOM`; a name -> :data:`PRESETS` entry (ValueError listing the names)."""
    if preset is None:
        return CUSTOM
    if isinstance(preset, MetricPreset):
        return preset
    if preset not in PRESETS:
        raise ValueError(f"unknown metric preset {preset!r}; choose one of {sorted(PRESETS)} or leave "
                         f"'preset' out to use the configured networks as they are")
    return PRESETS[preset]


def preset_specs(config: Mapping[str, Any]) -> tuple[MetricPreset, dict[str, Any], list[str]]:
    """``(preset, {component: spec}, replaced components)`` of a metric networks config.

    The preset's network specs, where the config's entry with a ``class_path`` replaces one and an
    entry ``{init_args: {...}}`` overrides those arguments of the preset's spec.
    """
    preset = get_preset(config.get("preset"))
    specs: dict[str, Any] = {}
    replaced: list[str] = []
    for name in COMPONENTS:
        base, given = preset.networks.get(name), config.get(name)
        if given is None:
            specs[name] = copy.deepcopy(dict(base)) if base is not None else None
        elif isinstance(given, Mapping) and "class_path" in given:
            specs[name] = given
            if base is not None:
                replaced.append(name)
        elif isinstance(given, Mapping) and set(given) <= {"init_args"}:
            if base is None:
                raise ValueError(f"metric network {name!r} gives only init_args, but "
                                 f"{'no preset is set' if preset is CUSTOM else f'the {preset.name} preset has no {name} network'}; "
                                 f"give a class_path")
            spec = copy.deepcopy(dict(base))
            spec["init_args"] = {**dict(spec.get("init_args") or {}), **dict(given.get("init_args") or {})}
            specs[name] = spec
        else:
            raise ValueError(f"metric network {name!r} must be {{class_path, init_args}} or {{init_args}} "
                             f"(overriding the preset's arguments), got {given!r}")
    return preset, specs, replaced


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

    Each network is a built module, its ``{class_path, init_args}`` spec, ``{init_args}`` (overrides
    of the preset's network) or ``None`` (the preset's network, if it has one). Specs are built here
    (:func:`ipsb.config_objects.build_components`: allowlisted, type-checked before the call, every
    missing checkpoint file named in one error), which is what a config gives.
    """

    def __init__(self, identity: Union[dict, nn.Module, None] = None, regressor: Union[dict, nn.Module, None] = None,
                 pose: Union[dict, nn.Module, None] = None, fid: Union[dict, nn.Module, None] = None,
                 expression_slice: Optional[Sequence[int]] = None, preset: Optional[str] = None,
                 replaced: Sequence[str] = ()):
        super().__init__()
        self.preset = get_preset(preset)
        given = {"identity": identity, "regressor": regressor, "pose": pose, "fid": fid}
        modules = {n: v for n, v in given.items() if isinstance(v, nn.Module)}
        _, specs, spec_replaced = preset_specs({**{n: v for n, v in given.items() if n not in modules},
                                                "preset": preset})
        specs = {n: v for n, v in specs.items() if n not in modules and v is not None}
        self.replaced = tuple(dict.fromkeys([*replaced, *spec_replaced,
                                             *(n for n in modules if self.preset.networks.get(n) is not None)]))
        for need in ("identity", "regressor"):
            if need not in modules and need not in specs:
                raise ValueError(f"the metric networks config needs an {need!r} entry (or a preset)")
        given.update(modules)
        given.update(build_components(specs, MetricNetworks, "metric networks") if specs else {})
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
        if self.preset.requires_pose_logits and not self.pose_has_logits:
            raise ValueError(f"the {self.preset.name!r} preset reports pose from HopeNet's 66-bin logits: its pose "
                             f"network needs a logits(image) method, got "
                             f"{'none' if pose is None else type(pose).__name__}")
        self.config: Optional[dict] = None if modules else {**specs, "expression_slice": expression_slice,
                                                            "preset": preset}
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
        unknown = set(config) - set(COMPONENTS) - {"expression_slice", "preset"}
        if unknown:
            raise ValueError(f"unknown metric network entries {sorted(unknown)}; expected {list(COMPONENTS)}, "
                             f"expression_slice and preset")
        nets = cls(**config)
        nets.config = config
        return nets

    @classmethod
    def from_backbone(cls, backbone: nn.Module, fid: bool = True) -> "MetricNetworks":
        """A stage's frozen backbone as metric networks (no preset: every form the networks allow).

        ``identity`` and ``regressor`` are the backbone's (expression = the face model's ``exp``
        group); ``pose`` its pose network, else the regressor's ``angle`` group in degrees
        (:class:`~ipsb.eval.adapters.RegressorAnglePose`); with ``fid``, FID features are the
        regressor's coefficients (:class:`~ipsb.eval.adapters.CoeffFeatures`: FIDs comparable only with
        each other; an Inception FID needs its own ``fid`` network in a config).
        """
        from ipsb.eval.adapters import CoeffFeatures, RegressorAnglePose

        groups = dict(getattr(backbone.face_model, "coeff_groups", None) or {})
        if "exp" not in groups:
            raise ValueError(f"the backbone's face model has no 'exp' coefficient group (has {sorted(groups)})")
        pose = getattr(backbone, "pose", None)
        if pose is None:
            pose = RegressorAnglePose(backbone.regressor, groups.get("angle"))
        return cls(identity=backbone.identity, regressor=backbone.regressor, pose=pose,
                   fid=CoeffFeatures(backbone.regressor) if fid else None, expression_slice=groups["exp"])

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

    def describe_preset(self) -> dict[str, Any]:
        """``{name, summary, replaced}`` of the preset (for the table's provenance)."""
        return {"name": self.preset.name, "summary": self.preset.summary, "replaced": list(self.replaced)}
