"""Measuring swaps: the one implementation behind ``ipsb test``, the evaluation callback and the stages' logs.

:class:`~ipsb.eval.evaluator.EvaluationModule` (``ipsb test``), the
:class:`~ipsb.callbacks.swap_evaluation.SwapEvaluation` callback (inside training runs) and the stages'
per-step swap errors all go through this module. Images are ``[B,3,H,W]`` in [-1,1].

**Networks** are anything with ``embed(image) -> [B,D]``, ``expression(image) -> [B,E]`` and
``head_pose(image) -> [B,3,66]`` bin logits, ``[B,3]`` degrees or ``None``:
:class:`~ipsb.eval.networks.MetricNetworks` (the config of ``ipsb test``, presets included), or
:class:`BackboneNetworks`, a stage's frozen backbone read the same way (its identity network, the
``exp`` group of its 3DMM regressor, its pose network or else the regressor's angles). The
stages read coefficients they already have through ``coeffs=`` instead of running the regressor again.

**What a swap is measured against** (:class:`PairReference`, measured once per batch of pairs and
shared by every row): the source's identity embedding, the target's expression and pose, the label
the ID retrieval ranks by and the pairs' sample indices. :func:`read_face` reads a swap
(:class:`FaceReading`); :func:`swap_errors` gives the per-sample values ``id_similarity``,
``exp_error`` and ``pose_error``, i.e. what a row's ``id_cosine``, ``exp_l2`` and ``pose_deg``
average (the formulas live in :mod:`ipsb.metrics`).

**A results row** (:class:`RowMetrics`): the DDP-exact metrics of :mod:`ipsb.metrics` (ID retrieval,
ID similarity, expression error, pose error, optionally FID) and :meth:`RowMetrics.row`, the row dict
of the results table (keys :data:`~ipsb.eval.networks.METRIC_COLUMNS`; the preset fills only its
columns), plus ``preset`` and ``num_items``.

**Several rows on the same pairs** (:class:`PairEvaluation`): the retrieval gallery policy
(:data:`GALLERIES`), :meth:`~PairEvaluation.gallery_step` for a loader of gallery frames,
:meth:`~PairEvaluation.pairs_step` for a batch of pairs and the swaps of every row, and
:meth:`~PairEvaluation.rows` (collective under DDP: every process calls it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Protocol, Sequence

import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric, Metric

from ipsb.eval.networks import METRIC_COLUMNS, MetricNetworks, MetricPreset
from ipsb.losses.identity import identity_cosine
from ipsb.metrics import FID, ExpressionError, IDRetrieval, IDSimilarity, PoseError
from ipsb.metrics.expression_error import expression_sq_distance
from ipsb.metrics.pose_error import pose_degree_distance
from ipsb.metrics.sample_dedup import cat_state, check_sample_index, per_sample_states

#: Retrieval gallery policies. ``source_frames``: a separate loader of gallery frames (FF++'s selected
#: frames of every source video), queries labelled by ``source_id``. ``item_sources``: each item's
#: source image labelled by the item's target video (``target_id``), queries likewise (ReliableSwap).
#: ``pair_sources``: each pair's source image labelled by ``source_id`` and counted once per source
#: (CelebA-HQ's distinct source images; a training run's held-out W+ pairs).
GALLERIES = ("source_frames", "item_sources", "pair_sources")
#: Per-sample swap errors (:func:`swap_errors`), in the order of :class:`PerPairValues`' columns.
ERRORS = ("id_similarity", "exp_error", "pose_error")


class MeasureNetworks(Protocol):
    """What the measurements need from networks (module docstring)."""

    def embed(self, image: Tensor) -> Tensor: ...

    def expression(self, image: Tensor) -> Tensor: ...

    def head_pose(self, image: Tensor) -> Optional[Tensor]: ...


class BackboneNetworks:
    """A stage's frozen :class:`~ipsb.backbone.bundle.FaceBackbone` read as metric networks.

    ``embed`` = ``backbone.identity``; ``expression`` = the ``exp`` group of the 3DMM coefficients;
    ``head_pose`` = ``backbone.pose`` (degrees) when the backbone has one, else the coefficients'
    ``angle`` group in degrees. ``coeffs`` ``[B,C]``: coefficients of the image already computed.
    A plain object: it registers nothing, so a stage holding one keeps no extra module or state.
    """

    def __init__(self, backbone: nn.Module):
        self.backbone = backbone
        groups = getattr(backbone.face_model, "coeff_groups", None) or {}
        if "exp" not in groups:
            raise ValueError(f"the face model has no 'exp' coefficient group (has {sorted(groups)})")
        self.groups = dict(groups)

    def _group(self, coeffs: Tensor, name: str) -> Tensor:
        if name not in self.groups:
            raise ValueError(f"the face model has no {name!r} coefficient group (has {sorted(self.groups)})")
        a, b = self.groups[name]
        return coeffs[:, a:b]

    def embed(self, image: Tensor) -> Tensor:
        return self.backbone.identity(image)

    def expression(self, image: Tensor, coeffs: Optional[Tensor] = None) -> Tensor:
        return self._group(self.backbone.regressor(image) if coeffs is None else coeffs, "exp")

    def head_pose(self, image: Tensor, coeffs: Optional[Tensor] = None) -> Tensor:
        pose_net = getattr(self.backbone, "pose", None)
        if pose_net is not None:
            return pose_net(image)
        coeffs = self.backbone.regressor(image) if coeffs is None else coeffs
        return self._group(coeffs, "angle") * (180.0 / math.pi)


@dataclass
class PairReference:
    """What the swaps of a batch of pairs are measured against.

    ``source_embedding`` ``[B,D]``; ``target_expression`` ``[B,E]``; ``target_pose`` ``[B,3,66]`` /
    ``[B,3]`` or None; ``label`` ``[B]`` the retrieval id of each pair's true source; ``sample_index``
    ``[B]`` (both None where only per-sample errors are wanted).
    """

    source_embedding: Tensor
    target_expression: Tensor
    target_pose: Optional[Tensor]
    label: Optional[Tensor] = None
    sample_index: Optional[Tensor] = None


@dataclass
class FaceReading:
    """A swap as the networks see it: embedding ``[B,D]``, expression ``[B,E]``, pose (or None)."""

    embedding: Tensor
    expression: Tensor
    pose: Optional[Tensor]


def _coeff_kwargs(coeffs: Optional[Tensor]) -> dict:
    return {} if coeffs is None else {"coeffs": coeffs}


def read_face(nets: MeasureNetworks, image: Tensor, coeffs: Optional[Tensor] = None) -> FaceReading:
    """The networks' reading of ``image`` (``coeffs``: its 3DMM coefficients, :class:`BackboneNetworks` only)."""
    kw = _coeff_kwargs(coeffs)
    return FaceReading(nets.embed(image), nets.expression(image, **kw), nets.head_pose(image, **kw))


def measure_reference(nets: MeasureNetworks, source: Tensor, target: Tensor, label: Optional[Tensor] = None,
                      sample_index: Optional[Tensor] = None, target_coeffs: Optional[Tensor] = None,
                      source_embedding: Optional[Tensor] = None) -> PairReference:
    """Read the sources' identity and the targets' expression and pose once for a batch of pairs."""
    kw = _coeff_kwargs(target_coeffs)
    emb = nets.embed(source) if source_embedding is None else source_embedding
    return PairReference(emb, nets.expression(target, **kw), nets.head_pose(target, **kw), label, sample_index)


def swap_errors(reading: FaceReading, ref: PairReference) -> dict[str, Tensor]:
    """Per-sample ``{"id_similarity", "exp_error", "pose_error"}`` ``[B]`` of a swap against its pairs
    (``pose_error`` only with a pose network): cosine to the source's embedding, L2 of the expression
    coefficients and of (yaw, pitch, roll) in degrees to the target's."""
    out = {"id_similarity": identity_cosine(reading.embedding, ref.source_embedding),
           "exp_error": expression_sq_distance(reading.expression, ref.target_expression).sqrt()}
    if reading.pose is not None and ref.target_pose is not None:
        out["pose_error"] = pose_degree_distance(reading.pose, ref.target_pose)
    return out


def backbone_swap_errors(backbone: nn.Module, swap: Tensor, ref: PairReference,
                         coeffs: Optional[Tensor] = None) -> dict[str, Tensor]:
    """:func:`swap_errors` of a swap read by a stage's backbone (:class:`BackboneNetworks`); ``coeffs``:
    the swap's 3DMM coefficients when already computed. What the stages log per step."""
    return swap_errors(read_face(BackboneNetworks(backbone), swap, coeffs), ref)


class StepMeans(nn.Module):
    """A torchmetrics ``MeanMetric`` per named per-sample value, for a stage's per-step logs.

    ``update({name: [B]})``; each metric is logged with ``LightningModule.log(name, metric)``.
    """

    def __init__(self, names: Sequence[str]):
        super().__init__()
        self.metrics = nn.ModuleDict({n: MeanMetric() for n in names})

    def update(self, values: dict[str, Tensor]) -> None:
        for name, v in values.items():
            if name not in self.metrics:
                raise KeyError(f"StepMeans tracks {list(self.metrics)}, not {name!r}")
            self.metrics[name].update(v.detach().float())


class PerPairValues(Metric):
    """Per-pair values ``[B,K]`` with their sample index; :meth:`compute` -> ``(index [N], values [N,K])``
    sorted by index, one row per index, gathered over processes (the per-pair table of a run)."""

    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("values", default=[], dist_reduce_fx="cat")
        self.add_state("sample_index", default=[], dist_reduce_fx="cat")

    def update(self, values: Tensor, sample_index: Tensor) -> None:
        self.values.append(values.detach().double())
        self.sample_index.append(check_sample_index(sample_index, values.shape[0], "PerPairValues").to(values.device))

    def compute(self) -> tuple[Tensor, Tensor]:
        return per_sample_states(self.sample_index, self.values, what="PerPairValues")


def _scalar(x: Tensor) -> float:
    return float(x.detach().cpu())


class RowMetrics(nn.Module):
    """The metrics of one results row (module docstring).

    Args:
        networks: the :class:`MetricNetworks` (its preset decides the ID cosine's items and the columns).
        top_k: ID retrieval ranks (the table's columns are top-1 and top-5).
        fid: also FID of the swaps, with ``networks.fid`` as the feature network.
    """

    def __init__(self, networks: MetricNetworks, top_k: Sequence[int] = (1, 5), fid: bool = False):
        super().__init__()
        self.preset: MetricPreset = networks.preset
        self.top_k = tuple(int(k) for k in top_k)
        a, b = networks.expression_slice
        self.retrieval = IDRetrieval(top_k=self.top_k)
        self.similarity = IDSimilarity(first_items_divisor=self.preset.id_cosine_first_items_divisor)
        self.expression = ExpressionError(num_coeffs=b - a)
        self.pose = None if networks.pose is None else PoseError(
            inputs="logits" if networks.pose_has_logits else "degrees")
        if fid and networks.fid is None:
            raise ValueError("FID needs a 'fid' feature network in the metric networks")
        self.fid = FID(feature=networks.fid) if fid else None

    def update_gallery(self, embeddings: Tensor, labels: Tensor, sample_index: Tensor) -> None:
        self.retrieval.update_gallery(embeddings, labels, sample_index)

    def update(self, swap: Tensor, reading: FaceReading, ref: PairReference) -> dict[str, Tensor]:
        """Add a batch of swaps ``[B,3,H,W]`` read as ``reading``; returns their :func:`swap_errors`."""
        idx = ref.sample_index
        self.retrieval.update(reading.embedding, ref.label, idx)
        self.similarity.update(reading.embedding, ref.source_embedding, idx)
        self.expression.update(reading.expression, ref.target_expression, idx)
        if self.pose is not None:
            self.pose.update(reading.pose, ref.target_pose, idx)
        if self.fid is not None:
            self.fid.update(swap, real=False, sample_index=idx)
        return swap_errors(reading, ref)

    def row(self, name: str) -> dict[str, Any]:
        """The results-table row (collective under DDP): ``method``, the metric columns, ``preset``, ``num_items``."""
        ret = self.retrieval.compute()
        exp = self.expression.compute()
        row = {"method": name, "source": "measured",
               "id_top1_pct": 100 * _scalar(ret["top1"]), "id_top5_pct": 100 * _scalar(ret["top5"]),
               "id_cosine": _scalar(self.similarity.compute()),
               "exp_l2": _scalar(exp["l2"]), "exp_sqrt_mse": _scalar(exp["sqrt_mse"])}
        for k in self.top_k:
            row[f"id_top{k}_pct"] = 100 * _scalar(ret[f"top{k}"])
        if self.pose is not None:
            pose = self.pose.compute()
            row["pose_deg"] = _scalar(pose["deg_l2"])
            row["pose_bin_sqrt_mse"] = _scalar(pose["bin_sqrt_mse"]) if "bin_sqrt_mse" in pose else None
            row["pose_logit_l2"] = _scalar(pose["logit_angle_l2"]) if "logit_angle_l2" in pose else None
        if self.fid is not None:
            row["fid"] = _scalar(self.fid.compute())
        row = {k: (v if k not in METRIC_COLUMNS or k in self.preset.columns else None) for k, v in row.items()}
        row["preset"] = self.preset.name
        with self.similarity.sync_context(should_sync=True):
            row["num_items"] = int(torch.unique(cat_state(self.similarity.sample_index)).numel())
        return row

    def reset(self) -> None:
        """Clear every metric (FID keeps its real side)."""
        for m in (self.retrieval, self.similarity, self.expression, self.pose, self.fid):
            if m is not None:
                m.reset()


class PairEvaluation(nn.Module):
    """Rows measured on the same pairs (module docstring).

    Args:
        networks: the :class:`MetricNetworks`.
        row_names: one :class:`RowMetrics` per name.
        gallery: a :data:`GALLERIES` policy.
        top_k, fid: as :class:`RowMetrics`.
        per_pair: also keep every pair's :func:`swap_errors` per row (:meth:`per_pair_values`).

    A pairs batch holds ``source``, ``target`` ``[B,3,H,W]``, ``sample_index`` ``[B]`` and the labels
    the gallery policy reads (``source_id`` or ``target_id`` ``[B]``); a gallery batch ``image``,
    ``video_id`` and ``sample_index``.
    """

    def __init__(self, networks: MetricNetworks, row_names: Sequence[str], gallery: str,
                 top_k: Sequence[int] = (1, 5), fid: bool = False, per_pair: bool = False):
        super().__init__()
        if gallery not in GALLERIES:
            raise ValueError(f"gallery must be one of {GALLERIES}, got {gallery!r}")
        if len(set(row_names)) != len(row_names) or not row_names:
            raise ValueError(f"row names must be unique and at least one, got {list(row_names)}")
        self.networks, self.gallery = networks, gallery
        self.row_names = list(row_names)
        self.row_metrics = nn.ModuleList([RowMetrics(networks, top_k, fid) for _ in self.row_names])
        self.per_pair = nn.ModuleList([PerPairValues() for _ in self.row_names]) if per_pair else None

    @property
    def gallery_from_loader(self) -> bool:
        """True when the gallery comes from a separate loader (:meth:`gallery_step`)."""
        return self.gallery == "source_frames"

    def gallery_step(self, batch: dict) -> None:
        """Add a batch of gallery frames (ignored unless the gallery comes from a loader)."""
        if not self.gallery_from_loader:
            return
        emb = self.networks.embed(batch["image"])
        for row in self.row_metrics:
            row.update_gallery(emb, batch["video_id"], batch["sample_index"])

    def reference(self, batch: dict) -> PairReference:
        """The batch's :class:`PairReference`; adds the pairs' sources to the gallery when the policy says so."""
        idx = batch["sample_index"]
        label = batch["target_id"] if self.gallery == "item_sources" else batch["source_id"]
        ref = measure_reference(self.networks, batch["source"], batch["target"], label, idx)
        if not self.gallery_from_loader:
            gallery_index = idx if self.gallery == "item_sources" else label
            for row in self.row_metrics:
                row.update_gallery(ref.source_embedding, label, gallery_index)
        return ref

    def pairs_step(self, batch: dict, swaps: Sequence[Tensor]) -> list[dict[str, Tensor]]:
        """Measure the swaps ``[B,3,H,W]`` of every row (in row order) on a batch of pairs; returns
        each row's per-sample :func:`swap_errors`."""
        if len(swaps) != len(self.row_names):
            raise ValueError(f"{len(swaps)} swap batches for {len(self.row_names)} rows {self.row_names}")
        ref = self.reference(batch)
        out = []
        for i, (row, swap) in enumerate(zip(self.row_metrics, swaps)):
            errors = row.update(swap, read_face(self.networks, swap), ref)
            if self.per_pair is not None:
                values = torch.stack([errors[k].double() for k in ERRORS if k in errors], 1)
                self.per_pair[i].update(values, ref.sample_index)
            out.append(errors)
        return out

    # ------------------------------------------------------------------ FID real side
    def add_real(self, images: Tensor, sample_index: Tensor) -> None:
        """Real images ``[B,3,H,W]`` of the FID (kept by the first row; :meth:`share_real_statistics`)."""
        self.row_metrics[0].fid.update(images, real=True, sample_index=sample_index)

    def share_real_statistics(self) -> None:
        """Fix the first row's real FID statistics (collective) and give them to every row."""
        stats = self.row_metrics[0].fid.real_statistics()
        for row in self.row_metrics:
            row.fid.set_real_statistics(*stats)

    # ------------------------------------------------------------------ results
    def rows(self) -> list[dict[str, Any]]:
        """Every row's results-table dict (collective under DDP)."""
        return [row.row(name) for name, row in zip(self.row_names, self.row_metrics)]

    def per_pair_values(self, i: int = 0) -> tuple[Tensor, list[str], Tensor]:
        """Row ``i``'s ``(sample_index [N], column names, values [N,K])`` over all processes (collective)."""
        if self.per_pair is None:
            raise RuntimeError("PairEvaluation(per_pair=False) keeps no per-pair values")
        index, values = self.per_pair[i].compute()
        names = [k for k in ERRORS if k != "pose_error" or self.networks.pose is not None]
        return index, names, values

    def reset(self) -> None:
        """Clear every row (FID keeps its real side) and the per-pair values."""
        for row in self.row_metrics:
            row.reset()
        for m in self.per_pair or []:
            m.reset()
