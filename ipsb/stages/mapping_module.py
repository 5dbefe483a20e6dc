"""Stage 1 (MappingModule): 3DMM coefficients -> coordinates in the StyleIPSB basis.

For a pair of W+ codes (source ``w_s``, target ``w_t``, each ``[B,num_ws,w_dim]``) the frozen
backbone renders both and fits their 3DMM coefficients ``a^s``, ``a^t`` ``[B,C]``; the trainable
:class:`~ipsb.nets.mapper.CoeffMapper` predicts ``c [B,K]`` and the swap is

    w_s->t = w_s + reshape(V c)                 (mode "basis", V the basis [num_ws*w_dim, K])
    w_s->t = w_s + mapper offset                (mode "free": the paper's "no basis" ablation,
                                                 a free offset on the same W+ layers)

Loss (docs/stages.md, section 1)::

    L = id_weight * L_id + attr_weight * (geo_weight * L_geo + render_weight * L_render)
        + offset_weight * mean ||w_s->t - w_s||^2

with ``L_id = 1 - cos(E(G(w_s->t)), E(G(w_s)))`` and ``L_geo``/``L_render`` from
:mod:`ipsb.losses.attribute` on ``a^st`` = the fit of ``G(w_s->t)``. Logged (``train/`` and ``val/``):
``loss``, ``loss_id``, ``loss_geo``, ``loss_render``, ``loss_offset``, and the per-step swap errors
``exp_error``, ``pose_error``, ``id_similarity`` (:func:`ipsb.eval.swap_measures.backbone_swap_errors`);
validation also logs the "no swap" values (``G(w_s)`` measured against the target) as ``*_noswap``.
The evaluation numbers (FID, ID retrieval, both forms of expression and pose error) come from the
:class:`~ipsb.callbacks.swap_evaluation.SwapEvaluation` callback, which swaps pairs with :meth:`swap_wplus`.

The mapper and the basis columns live in ``self.editor`` (:class:`~ipsb.nets.mapper.SwapEditor`,
``V`` a buffer), so the stage-1 weights carry the basis they were trained with; stage 2 reuses the
editor (:func:`load_mapping_stage`).
"""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Optional, Sequence, Union

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from ipsb.backbone.bundle import FaceBackbone
from ipsb.basis.artifact import Basis
from ipsb.basis.layers import layer_mask
from ipsb.checkpoints import load_stage_checkpoint, sha256_file
from ipsb.eval.swap_measures import ERRORS, StepMeans, backbone_swap_errors
from ipsb.losses.attribute import attribute_losses, geometry_loss, render_loss
from ipsb.losses.identity import identity_loss
from ipsb.nets.mapper import DEFAULT_SOURCE_GROUPS, DEFAULT_TARGET_GROUPS, CoeffMapper, SwapEditor
from ipsb.stages.base import PairStageModule, adamw
from ipsb.stages.pair_batch import PairBatch, check_pair, measure_pairs

if TYPE_CHECKING:
    from ipsb.swap import FaceSwapper

METRICS = ERRORS


def attribute_terms(backbone, pairs: PairBatch, coeff_swap: torch.Tensor, render_grad: bool = True
                    ) -> dict[str, torch.Tensor]:
    """L_geo and L_render of a swap; with ``render_grad=False`` (its weight is 0) L_render is still
    measured for the logs, but without building its graph (its backward is the costliest part)."""
    if render_grad:
        return attribute_losses(backbone.face_model, backbone.renderer, pairs.coeff_s, pairs.coeff_t, coeff_swap)
    geo = geometry_loss(backbone.face_model, pairs.coeff_s, pairs.coeff_t, coeff_swap)
    with torch.no_grad():
        render = render_loss(backbone.face_model, backbone.renderer, pairs.coeff_s, pairs.coeff_t, coeff_swap)
    return {"geo": geo, "render": render}


class MappingModule(PairStageModule):
    """Stage 1. Args (all from config):

    backbone: the frozen :class:`~ipsb.backbone.bundle.FaceBackbone`.
    basis: path of a basis file (:class:`~ipsb.basis.artifact.Basis`); required for ``mode="basis"``,
        and for ``mode="free"`` it supplies the layer set unless ``layers`` is given.
    mode: ``"basis"`` or ``"free"`` (ablation).
    basis_groups: use only these basis groups' columns (default: all).
    layers: W+ layers of a free offset (``"3..7"`` or a list) when no basis is given.
    hidden_dim, depth, source_groups, target_groups: the mapper (:class:`CoeffMapper`).
    id_weight, attr_weight, geo_weight, render_weight, offset_weight: loss weights.
    noise_mode: the generator's noise mode during training and validation.
    optimizer, lr_scheduler: see :class:`~ipsb.stages.base.StageModule` (default AdamW, lr 1e-3).
    """

    checkpoint_label = "stage-1"
    input_files = ("basis",)
    train_hint = "ipsb fit --config lightning_configs/toy/mapping.yaml (or mapping.yaml)"

    def __init__(self, backbone: FaceBackbone, basis: Optional[str] = None, mode: str = "basis",
                 basis_groups: Optional[list[str]] = None, layers: Union[None, str, list[int]] = None,
                 hidden_dim: int = 256, depth: int = 3,
                 source_groups: Sequence[str] = DEFAULT_SOURCE_GROUPS,
                 target_groups: Sequence[str] = DEFAULT_TARGET_GROUPS,
                 id_weight: float = 1.0, attr_weight: float = 1.0, geo_weight: float = 1.0,
                 render_weight: float = 1.0, offset_weight: float = 0.0, noise_mode: str = "const",
                 optimizer: OptimizerCallable = adamw(1e-3),
                 lr_scheduler: Optional[LRSchedulerCallable] = None):
        super().__init__(backbone, optimizer, lr_scheduler)
        gen, fm = self.backbone.generator, self.backbone.face_model
        self.num_ws, self.w_dim = int(gen.num_ws), int(gen.w_dim)
        basis_obj = None
        if basis is not None:
            basis_obj = Basis.load(basis)
            if (basis_obj.num_ws, basis_obj.w_dim) != (self.num_ws, self.w_dim):
                raise ValueError(f"basis '{basis}' is for W+ [{basis_obj.num_ws},{basis_obj.w_dim}] but the "
                                 f"generator has [{self.num_ws},{self.w_dim}]")
            if basis_groups:
                basis_obj = basis_obj.restrict(basis_groups)
        if mode == "basis":
            if basis_obj is None:
                raise ValueError("MappingModule(mode='basis') needs basis=<path of a basis file>")
            V, mask = basis_obj.V.clone(), basis_obj.layer_mask.clone()
        elif mode == "free":
            mask = basis_obj.layer_mask.clone() if (basis_obj is not None and layers is None) \
                else layer_mask(layers, self.num_ws)
            V = torch.zeros(self.num_ws * self.w_dim, 0)
        else:
            raise ValueError(f"mode must be 'basis' or 'free', got {mode!r}")
        mapper = CoeffMapper(fm.coeff_groups, fm.num_coeffs, out_dim=V.shape[1], mode=mode,
                             layer_mask=mask, w_dim=self.w_dim, hidden_dim=hidden_dim, depth=depth,
                             source_groups=source_groups, target_groups=target_groups)
        self.editor = SwapEditor(mapper, V, self.num_ws, self.w_dim)
        self.mode = mode
        self.basis_sha256 = sha256_file(basis) if basis is not None else None
        self.weights = dict(id=id_weight, attr=attr_weight, geo=geo_weight, render=render_weight,
                            offset=offset_weight)
        self.noise_mode = noise_mode
        self.train_metrics = StepMeans(METRICS)
        self.val_metrics = StepMeans(METRICS + tuple(m + "_noswap" for m in METRICS))

    # ------------------------------------------------------------------ the swap
    def edit(self, w_s: torch.Tensor, coeff_s: torch.Tensor, coeff_t: torch.Tensor) -> torch.Tensor:
        """``w_s->t = w_s + offset``, ``[B,num_ws,w_dim]``."""
        return self.editor(w_s, coeff_s, coeff_t)

    def swap(self, w_s: torch.Tensor, w_t: torch.Tensor) -> torch.Tensor:
        """W+ of the stage-1 swap for source/target codes (renders and fits both; no grad needed)."""
        pairs = measure_pairs(self.backbone, w_s, w_t, self.noise_mode)
        return self.edit(w_s, pairs.coeff_s, pairs.coeff_t)

    # ------------------------------------------------------------------ losses
    def losses(self, pairs: PairBatch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
        """-> (loss terms incl. ``loss``, per-sample swap metrics, swap image)."""
        bb, w = self.backbone, self.weights
        dw = self.editor.offset(pairs.coeff_s, pairs.coeff_t)
        image = bb.generator.synthesis(pairs.w_s + dw, noise_mode=self.noise_mode)
        coeff_st = bb.regressor(image)
        terms = {"loss_id": identity_loss(bb.identity, image, pairs.id_s)}
        attr = attribute_terms(bb, pairs, coeff_st, w["attr"] * w["render"] != 0)
        terms["loss_geo"], terms["loss_render"] = attr["geo"], attr["render"]
        terms["loss_offset"] = dw.pow(2).sum((1, 2)).mean()
        terms["loss"] = (w["id"] * terms["loss_id"]
                         + w["attr"] * (w["geo"] * terms["loss_geo"] + w["render"] * terms["loss_render"])
                         + w["offset"] * terms["loss_offset"])
        with torch.no_grad():
            metrics = backbone_swap_errors(bb, image.detach(), pairs.reference, coeff_st.detach())
        return terms, metrics, image

    def eval_metrics(self, pairs: PairBatch, stage: str) -> dict[str, torch.Tensor]:
        """The errors of no swap at all (the source as it is), as ``*_noswap``."""
        return {k + "_noswap": v for k, v in backbone_swap_errors(self.backbone, pairs.image_s, pairs.reference).items()}

    @torch.no_grad()
    def swap_wplus(self, w_s: torch.Tensor, w_t: torch.Tensor) -> dict[str, torch.Tensor]:
        """Swap W+ pairs ``[B,num_ws,w_dim]`` -> ``{"source", "target", "swap"}`` images ``[B,3,R,R]`` in [-1,1]."""
        pairs = measure_pairs(self.backbone, w_s, w_t, self.noise_mode)
        swap = self.backbone.generator.synthesis(self.edit(w_s, pairs.coeff_s, pairs.coeff_t),
                                                 noise_mode=self.noise_mode)
        return {"source": pairs.image_s, "target": pairs.image_t, "swap": swap}

    def face_swapper(self, **kwargs) -> "FaceSwapper":
        """The live stage as a :class:`~ipsb.swap.FaceSwapper` on images (a frozen copy of the mapper;
        stage 2 left at lambda = 1, i.e. the stage-1 swap; no stage 3). kwargs: its options."""
        from ipsb.nets.layer_lambda import LayerLambda
        from ipsb.stages.detail_module import StageTwoSwap
        from ipsb.swap import FaceSwapper

        stage2 = StageTwoSwap(copy.deepcopy(self.editor), LayerLambda(self.num_ws, init=1.0))
        return FaceSwapper(self.backbone, stage2, None, **{"noise_mode": self.noise_mode, **kwargs})

    @torch.no_grad()
    def grid_images(self, batch: dict) -> dict[str, torch.Tensor]:
        """``{"source", "target", "swap"}`` images ``[B,3,R,R]`` in [-1,1] for the image-grid callback."""
        return self.swap_wplus(*check_pair(batch, self.num_ws, self.w_dim))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["ipsb_basis"] = {"path": self.hparams.get("basis"), "sha256": self.basis_sha256,
                                    "mode": self.mode}


def load_mapping_stage(path: str, backbone, role: Optional[str] = None) -> MappingModule:
    """Rebuild a trained :class:`MappingModule` from its checkpoint around an existing ``backbone``.

    The backbone's checkpoint-file hashes must equal those recorded in the checkpoint (else ValueError
    naming the file); the basis file named in its hyperparameters must still exist. A missing,
    unreadable or wrong-kind file is named in one line (:func:`ipsb.checkpoints.load_stage_checkpoint`).
    """
    return load_stage_checkpoint(path, MappingModule, role, backbone=backbone)
