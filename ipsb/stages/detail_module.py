"""Stage 2 (DetailModule): bring back the target's attributes the 3DMM cannot see.

Starting from a trained stage-1 checkpoint (its :class:`~ipsb.nets.mapper.SwapEditor`: mapper +
basis, frozen unless ``finetune_mapper``), the swap is mixed per W+ layer with the target code::

    w_s->t = w_s + reshape(V c)                   (stage 1)
    w'     = lambda * w_s->t + (1 - lambda) * w_t (lambda [B,num_ws,1] in [0,1], LayerLambda)

``lambda`` starts at 1 on every layer (w' = w_s->t), optionally plus a per-pair head on the mapper's
3DMM features. Loss (docs/stages.md, section 2)::

    L = id_weight * L_id + perceptual_weight * L_p
        + attr_weight * (geo_weight * L_geo + render_weight * L_render)

``L_p`` = LPIPS (``backbone.perceptual``) between ``G(w')`` and the target image ``G(w_t)``, over
the whole image (``perceptual_region="all"``) or only outside the target's face mask
(``"outside_face"``, the default: the face itself must stay the swap's). ``L_id`` and ``L_attr`` as in
stage 1, on ``M(G(w'))`` = the 3DMM fit of the mixed image.

Logged (``train/``, ``val/``): every loss term, the per-step swap errors (``exp_error``,
``pose_error``, ``id_similarity``: :func:`ipsb.eval.swap_measures.backbone_swap_errors`),
``lpips_outside`` (LPIPS to the target outside the face mask) and in validation the same for the
stage-1 result (``*_stage1``) and the per-layer ``lambda/<i>``. The evaluation numbers come from the
:class:`~ipsb.callbacks.swap_evaluation.SwapEvaluation` callback (:meth:`DetailModule.swap_wplus`).
"""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Optional

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from ipsb.backbone.bundle import FaceBackbone
from ipsb.backbone.interfaces import freeze
from ipsb.checkpoints import load_stage_checkpoint
from ipsb.eval.swap_measures import ERRORS, StepMeans, backbone_swap_errors
from ipsb.losses.identity import identity_loss
from ipsb.losses.perceptual import perceptual_distance, perceptual_loss
from ipsb.nets.layer_lambda import LayerLambda
from ipsb.stages.mapping_module import attribute_terms, load_mapping_stage
from ipsb.stages.base import PairStageModule, adamw
from ipsb.nets.face_mask import raw_face_mask
from ipsb.stages.pair_batch import PairBatch, check_pair, measure_pairs

if TYPE_CHECKING:
    from ipsb.swap import FaceSwapper

REGIONS = ("all", "outside_face")
METRICS = ERRORS + ("lpips_outside",)


class DetailModule(PairStageModule):
    """Stage 2. Args (all from config):

    backbone: the frozen :class:`~ipsb.backbone.bundle.FaceBackbone` (needs ``perceptual``).
    mapping_checkpoint: a stage-1 (:class:`~ipsb.stages.mapping_module.MappingModule`) checkpoint.
    finetune_mapper: train the stage-1 mapper too (at ``mapper_lr``); default frozen.
    per_pair_lambda: add the per-pair lambda head (input: the mapper's 3DMM features).
    lambda_init: initial per-layer lambda (1: start at the stage-1 swap).
    perceptual_region: ``"all"`` or ``"outside_face"`` (L_p only outside the target's face mask).
    id_weight, perceptual_weight, attr_weight, geo_weight, render_weight: loss weights.
    mapper_lr: learning rate of the mapper's parameter group (with ``finetune_mapper``).
    noise_mode: generator noise mode.
    optimizer, lr_scheduler: see :class:`~ipsb.stages.base.StageModule` (default AdamW, lr 1e-2;
        groups: the lambdas at the optimizer's lr, the mapper at ``mapper_lr``).
    """

    checkpoint_label = "stage-2"
    input_files = ("mapping_checkpoint",)
    train_hint = "ipsb fit --config lightning_configs/toy/detail.yaml (or detail.yaml)"

    def __init__(self, backbone: FaceBackbone, mapping_checkpoint: str, finetune_mapper: bool = False,
                 per_pair_lambda: bool = False, lambda_init: float = 1.0,
                 perceptual_region: str = "outside_face", id_weight: float = 1.0, perceptual_weight: float = 1.0,
                 attr_weight: float = 1.0, geo_weight: float = 1.0, render_weight: float = 1.0,
                 mapper_lr: float = 1e-4, noise_mode: str = "const", optimizer: OptimizerCallable = adamw(1e-2),
                 lr_scheduler: Optional[LRSchedulerCallable] = None):
        super().__init__(backbone, optimizer, lr_scheduler)
        if perceptual_region not in REGIONS:
            raise ValueError(f"perceptual_region must be one of {REGIONS}, got {perceptual_region!r}")
        if getattr(self.backbone, "perceptual", None) is None:
            raise ValueError("DetailModule needs a backbone with a perceptual network (backbone.perceptual) for L_p")
        gen = self.backbone.generator
        self.num_ws, self.w_dim = int(gen.num_ws), int(gen.w_dim)
        self.editor = load_mapping_stage(mapping_checkpoint, self.backbone, "mapping_checkpoint").editor
        self.finetune_mapper = bool(finetune_mapper)
        if not self.finetune_mapper:
            freeze(self.editor)
        features = self.editor.mapper.in_dim if per_pair_lambda else 0
        self.layer_lambda = LayerLambda(self.num_ws, init=lambda_init, pair_features=features)
        self.per_pair_lambda = bool(per_pair_lambda)
        self.perceptual_region = perceptual_region
        self.weights = dict(id=id_weight, p=perceptual_weight, attr=attr_weight, geo=geo_weight,
                            render=render_weight)
        self.mapper_lr, self.noise_mode = mapper_lr, noise_mode
        self.train_metrics = StepMeans(METRICS)
        self.val_metrics = StepMeans(METRICS + tuple(m + "_stage1" for m in METRICS))

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.finetune_mapper:
            self.editor.eval()
        return self

    # ------------------------------------------------------------------ the swap
    def mix(self, pairs: PairBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """-> ``(w_s->t, w')``, both ``[B,num_ws,w_dim]``."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.finetune_mapper):
            w_st = self.editor(pairs.w_s, pairs.coeff_s, pairs.coeff_t)
        feats = self.editor.mapper.features(pairs.coeff_s, pairs.coeff_t) if self.per_pair_lambda else None
        return w_st, self.layer_lambda.mix(w_st, pairs.w_t, feats)

    def swap(self, w_s: torch.Tensor, w_t: torch.Tensor) -> torch.Tensor:
        """W+ of the stage-2 swap ``w'`` for source/target codes."""
        return self.mix(measure_pairs(self.backbone, w_s, w_t, self.noise_mode))[1]

    def outside_mask(self, pairs: PairBatch) -> torch.Tensor:
        """``1 - face mask`` of the target ``[B,1,R,R]`` in [0,1] (no gradient)."""
        with torch.no_grad():
            return 1 - raw_face_mask(self.backbone, pairs.image_t, coeffs=pairs.coeff_t)

    # ------------------------------------------------------------------ losses
    def losses(self, pairs: PairBatch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
        """-> (loss terms incl. ``loss``, per-sample swap metrics, mixed image)."""
        bb, w = self.backbone, self.weights
        _, w_mix = self.mix(pairs)
        image = bb.generator.synthesis(w_mix, noise_mode=self.noise_mode)
        coeff = bb.regressor(image)
        outside = self.outside_mask(pairs)
        lp_mask = outside if self.perceptual_region == "outside_face" else None
        terms = {"loss_id": identity_loss(bb.identity, image, pairs.id_s),
                 "loss_p": perceptual_loss(bb.perceptual, image, pairs.image_t, lp_mask)}
        attr = attribute_terms(bb, pairs, coeff, w["attr"] * w["render"] != 0)
        terms["loss_geo"], terms["loss_render"] = attr["geo"], attr["render"]
        terms["loss"] = (w["id"] * terms["loss_id"] + w["p"] * terms["loss_p"]
                         + w["attr"] * (w["geo"] * terms["loss_geo"] + w["render"] * terms["loss_render"]))
        with torch.no_grad():
            metrics = backbone_swap_errors(bb, image.detach(), pairs.reference, coeff.detach())
            metrics["lpips_outside"] = perceptual_distance(bb.perceptual, image.detach(), pairs.image_t, outside)
        return terms, metrics, image

    def eval_metrics(self, pairs: PairBatch, stage: str) -> dict[str, torch.Tensor]:
        """Stage 1's errors on the same pairs (``*_stage1``); also logs the mean lambda per layer."""
        bs = pairs.w_s.shape[0]
        w_st, _ = self.mix(pairs)
        img1 = self.backbone.generator.synthesis(w_st, noise_mode=self.noise_mode)
        m1 = backbone_swap_errors(self.backbone, img1, pairs.reference)
        m1["lpips_outside"] = perceptual_distance(self.backbone.perceptual, img1, pairs.image_t, self.outside_mask(pairs))
        lam = self.layer_lambda(bs, self.editor.mapper.features(pairs.coeff_s, pairs.coeff_t)
                                if self.per_pair_lambda else None).mean(0).flatten()
        self.log_dict({f"{stage}/lambda/{i}": v for i, v in enumerate(lam)}, batch_size=bs, sync_dist=True)
        return {k + "_stage1": v for k, v in m1.items()}

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.layer_lambda.project_()

    @torch.no_grad()
    def swap_wplus(self, w_s: torch.Tensor, w_t: torch.Tensor) -> dict[str, torch.Tensor]:
        """Swap W+ pairs ``[B,num_ws,w_dim]`` -> ``{"source", "target", "stage1", "swap"}`` images
        ``[B,3,R,R]`` in [-1,1]."""
        pairs = measure_pairs(self.backbone, w_s, w_t, self.noise_mode)
        w_st, w_mix = self.mix(pairs)
        synth = self.backbone.generator.synthesis
        return {"source": pairs.image_s, "target": pairs.image_t,
                "stage1": synth(w_st, noise_mode=self.noise_mode), "swap": synth(w_mix, noise_mode=self.noise_mode)}

    def face_swapper(self, **kwargs) -> "FaceSwapper":
        """The live stage as a :class:`~ipsb.swap.FaceSwapper` on images (frozen copies of the mapper and
        the lambdas; no stage 3). kwargs: its options."""
        from ipsb.swap import FaceSwapper

        stage2 = StageTwoSwap(copy.deepcopy(self.editor), copy.deepcopy(self.layer_lambda), self.per_pair_lambda)
        return FaceSwapper(self.backbone, stage2, None, **{"noise_mode": self.noise_mode, **kwargs})

    @torch.no_grad()
    def grid_images(self, batch: dict) -> dict[str, torch.Tensor]:
        """``{"source", "target", "stage1", "swap"}`` images ``[B,3,R,R]`` in [-1,1]."""
        return self.swap_wplus(*check_pair(batch, self.num_ws, self.w_dim))

    def optimizer_groups(self) -> list[dict]:
        """The per-layer lambdas (at the optimizer's lr) and, when fine-tuning, the mapper at ``mapper_lr``."""
        groups = [{"params": list(self.layer_lambda.parameters())}]
        if self.finetune_mapper:
            groups.append({"params": list(self.editor.parameters()), "lr": self.mapper_lr})
        return groups


class StageTwoSwap(nn.Module):
    """The frozen stages 1 + 2 as one module: ``(w_s, w_t, coeff_s, coeff_t) -> (w_s->t, w')``.

    ``editor`` a stage-1 :class:`~ipsb.nets.mapper.SwapEditor`, ``layer_lambda`` the stage-2
    :class:`~ipsb.nets.layer_lambda.LayerLambda`; ``per_pair_lambda``: its head takes the mapper's
    3DMM features. All W+ codes ``[B,num_ws,w_dim]``, coefficients ``[B,C]``.
    """

    def __init__(self, editor: nn.Module, layer_lambda: nn.Module, per_pair_lambda: bool = False):
        super().__init__()
        self.editor, self.layer_lambda, self.per_pair_lambda = editor, layer_lambda, bool(per_pair_lambda)
        freeze(self)

    def train(self, mode: bool = True) -> "StageTwoSwap":
        return super().train(False)

    def forward(self, w_s: torch.Tensor, w_t: torch.Tensor, coeff_s: torch.Tensor, coeff_t: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        w_st = self.editor(w_s, coeff_s, coeff_t)
        feats = self.editor.mapper.features(coeff_s, coeff_t) if self.per_pair_lambda else None
        return w_st, self.layer_lambda.mix(w_st, w_t, feats)


def load_detail_stage(path: str, backbone, mapping_checkpoint: Optional[str] = None,
                      role: Optional[str] = None) -> StageTwoSwap:
    """A trained :class:`DetailModule` checkpoint -> frozen :class:`StageTwoSwap` around ``backbone``.

    ``mapping_checkpoint`` overrides the stage-1 checkpoint path stored in it (e.g. after moving files).
    A missing, unreadable or wrong-kind file is named in one line
    (:func:`ipsb.checkpoints.load_stage_checkpoint`).
    """
    extra = {} if mapping_checkpoint is None else {"mapping_checkpoint": str(mapping_checkpoint)}
    detail = load_stage_checkpoint(path, DetailModule, role, backbone=backbone, **extra)
    return StageTwoSwap(detail.editor, detail.layer_lambda, detail.per_pair_lambda)
