"""Stage 3 (BlendModule): Masked Spatial Feature Transform blending.

Starting from a trained stage-2 checkpoint (:class:`~ipsb.stages.detail_module.DetailModule`; its
stage-1 editor and per-layer lambda are loaded and frozen), the swap code ``w'`` of a pair is
synthesised with the trainable :class:`~ipsb.nets.msft.MSFT` modulating the generator's feature maps
from the target image ``I_t`` and its face mask ``m`` (:class:`~ipsb.nets.face_mask.FaceRegionMask`,
dilated and feathered)::

    I_result = G(w'; MSFT(I_t, m))
    L = background_weight * L_b + perceptual_weight * L_p
    L_b = masked L1 (1 - m) * |I_result - I_t|            (ipsb.losses.background)
    L_p = LPIPS(I_result, I_t) outside the face (perceptual_region "outside_face", default) or over
          the whole image ("all")

Inside the face the MSFT leaves the features alone, so the face stays the stage-2 swap's.
A batch is ``{"w_s", "w_t"}`` (the stage-2 code is computed on the fly) and may carry a precomputed
stage-2 code ``"w_swap"`` ``[B,num_ws,w_dim]``.

Logged (``train/``, ``val/``): ``loss``, ``loss_b``, ``loss_p`` and ``bg_mae`` (mean abs error to the
target outside the face, = L_b); validation adds the per-step swap errors ``id_similarity``,
``exp_error``, ``pose_error`` (:func:`ipsb.eval.swap_measures.backbone_swap_errors`) and all of them for
the stage-2 image (``*_stage2``). The evaluation numbers come from the
:class:`~ipsb.callbacks.swap_evaluation.SwapEvaluation` callback (:meth:`BlendModule.swap_wplus`).
"""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Optional, Sequence

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from ipsb.backbone.bundle import FaceBackbone
from ipsb.eval.swap_measures import BackboneNetworks, backbone_swap_errors, measure_reference
from ipsb.losses.background import background_l1, background_loss
from ipsb.losses.perceptual import perceptual_loss
from ipsb.nets.face_mask import FaceRegionMask
from ipsb.nets.msft import MSFT
from ipsb.stages.base import PairStageModule, adamw
from ipsb.stages.detail_module import load_detail_stage
from ipsb.stages.pair_batch import check_pair

if TYPE_CHECKING:
    from ipsb.swap import FaceSwapper

REGIONS = ("all", "outside_face")


class BlendModule(PairStageModule):
    """Stage 3. Args (all from config):

    backbone: the frozen :class:`~ipsb.backbone.bundle.FaceBackbone` (``perceptual`` needed when
        ``perceptual_weight > 0``; ``masker`` for ``mask_source="parser"``).
    detail_checkpoint: a stage-2 (DetailModule) checkpoint; ``mapping_checkpoint`` overrides the
        stage-1 path stored inside it.
    resolutions: generator feature resolutions the MSFT modulates (default: all of them).
    hidden, trunk_depth, input_size: the MSFT encoder (:class:`~ipsb.nets.msft.MSFT`).
    mask_source, mask_dilate, mask_feather, mask_threshold: the face mask
        (:class:`~ipsb.nets.face_mask.FaceRegionMask`).
    background_weight, perceptual_weight, perceptual_region: the loss (module docstring).
    noise_mode: generator noise mode.
    optimizer, lr_scheduler: see :class:`~ipsb.stages.base.StageModule` (default AdamW over the
        MSFT, lr 1e-3).
    """

    checkpoint_label = "stage-3"
    input_files = ("detail_checkpoint", "mapping_checkpoint")
    train_hint = "ipsb fit --config lightning_configs/toy/blend.yaml (or blend.yaml)"

    def __init__(self, backbone: FaceBackbone, detail_checkpoint: str, mapping_checkpoint: Optional[str] = None,
                 resolutions: Optional[Sequence[int]] = None, hidden: int = 32, trunk_depth: int = 2,
                 input_size: int = 64, mask_source: str = "parser", mask_dilate: float = 8.0,
                 mask_feather: float = 4.0, mask_threshold: float = 0.5, background_weight: float = 1.0,
                 perceptual_weight: float = 1.0, perceptual_region: str = "outside_face",
                 noise_mode: str = "const", optimizer: OptimizerCallable = adamw(1e-3),
                 lr_scheduler: Optional[LRSchedulerCallable] = None):
        super().__init__(backbone, optimizer, lr_scheduler)
        if perceptual_region not in REGIONS:
            raise ValueError(f"perceptual_region must be one of {REGIONS}, got {perceptual_region!r}")
        if perceptual_weight > 0 and getattr(self.backbone, "perceptual", None) is None:
            raise ValueError("BlendModule with perceptual_weight > 0 needs a backbone with a perceptual "
                             "network (backbone.perceptual) for L_p")
        gen = self.backbone.generator
        self.num_ws, self.w_dim = int(gen.num_ws), int(gen.w_dim)
        self.stage2 = load_detail_stage(detail_checkpoint, self.backbone, mapping_checkpoint, "detail_checkpoint")
        res = tuple(gen.feature_resolutions) if resolutions is None else tuple(int(r) for r in resolutions)
        self.msft = MSFT.for_generator(gen, res, hidden=hidden, trunk_depth=trunk_depth, input_size=input_size)
        self.face_mask = FaceRegionMask(mask_source, mask_dilate, mask_feather, mask_threshold)
        self.weights = dict(b=background_weight, p=perceptual_weight)
        self.perceptual_region = perceptual_region
        self.noise_mode = noise_mode

    # ------------------------------------------------------------------ the swap
    @torch.no_grad()
    def prepare(self, batch: dict) -> dict[str, torch.Tensor]:
        """Frozen part of a step: source/target images, stage-1/2 codes, the target's face mask."""
        w_s, w_t = check_pair(batch, self.num_ws, self.w_dim)
        bb = self.backbone
        images = bb.generator.synthesis(torch.cat([w_s, w_t]), noise_mode=self.noise_mode)
        b = w_s.shape[0]
        image_s, image_t = images[:b], images[b:]
        if "w_swap" in batch:
            w_st, w_mix = None, batch["w_swap"]
            if w_mix.shape != w_s.shape:
                raise ValueError(f"batch['w_swap'] must be {list(w_s.shape)}, got {list(w_mix.shape)}")
        else:
            coeffs = bb.regressor(images)
            w_st, w_mix = self.stage2(w_s, w_t, coeffs[:b], coeffs[b:])
        mask = self.face_mask(bb, image_t)
        return {"w_s": w_s, "w_t": w_t, "w_st": w_st, "w_swap": w_mix, "image_s": image_s, "image_t": image_t,
                "mask": mask}

    def blend(self, w_swap: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Stage 3: ``G(w_swap)`` with MSFT from ``target`` ``[B,3,R,R]`` and ``mask`` ``[B,1,R,R]``."""
        return self.msft(self.backbone.generator, w_swap, target, mask, noise_mode=self.noise_mode)

    # ------------------------------------------------------------------ losses
    def losses(self, prep: dict) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """-> (loss terms incl. ``loss``, blended image)."""
        outside = 1 - prep["mask"]
        image = self.blend(prep["w_swap"], prep["image_t"], prep["mask"])
        terms = {"loss_b": background_loss(image, prep["image_t"], outside)}
        if self.weights["p"] > 0:
            lp_mask = outside if self.perceptual_region == "outside_face" else None
            terms["loss_p"] = perceptual_loss(self.backbone.perceptual, image, prep["image_t"], lp_mask)
        else:
            terms["loss_p"] = image.new_zeros(())
        terms["loss"] = self.weights["b"] * terms["loss_b"] + self.weights["p"] * terms["loss_p"]
        return terms, image

    @torch.no_grad()
    def measure(self, image: torch.Tensor, prep: dict) -> dict[str, torch.Tensor]:
        """Per-sample ``bg_mae`` and swap errors (``id_similarity``, ``exp_error``, ``pose_error``) ``[B]``
        of an image against the pair (the pair's reference is read once and kept in ``prep``)."""
        bb = self.backbone
        if "reference" not in prep:
            prep["reference"] = measure_reference(BackboneNetworks(bb), prep["image_s"], prep["image_t"])
        return {"bg_mae": background_l1(image, prep["image_t"], 1 - prep["mask"]),
                **backbone_swap_errors(bb, image, prep["reference"])}

    def _step(self, batch: dict, stage: str) -> torch.Tensor:
        prep = self.prepare(batch)
        terms, image = self.losses(prep)
        bs = prep["w_s"].shape[0]
        values = dict(terms)
        if stage != "train":
            values.update({k: v.mean() for k, v in self.measure(image, prep).items()})
            with torch.no_grad():
                img2 = self.backbone.generator.synthesis(prep["w_swap"], noise_mode=self.noise_mode)
            values.update({k + "_stage2": v.mean() for k, v in self.measure(img2, prep).items()})
        else:
            values["bg_mae"] = terms["loss_b"].detach()
        self.log_step(stage, values, bs)
        return terms["loss"]

    @torch.no_grad()
    def swap_wplus(self, w_s: torch.Tensor, w_t: torch.Tensor) -> dict[str, torch.Tensor]:
        """Swap W+ pairs ``[B,num_ws,w_dim]`` -> ``{"source", "target", "stage1", "stage2", "swap"}``
        images ``[B,3,R,R]`` in [-1,1]."""
        return self.grid_images({"w_s": w_s, "w_t": w_t})

    def face_swapper(self, **kwargs) -> "FaceSwapper":
        """The live stage as a :class:`~ipsb.swap.FaceSwapper` on images (its frozen stages 1-2, a frozen
        copy of the MSFT, its face mask). kwargs: its options."""
        from ipsb.swap import FaceSwapper

        return FaceSwapper(self.backbone, self.stage2, copy.deepcopy(self.msft), copy.deepcopy(self.face_mask),
                           **{"noise_mode": self.noise_mode, **kwargs})

    @torch.no_grad()
    def grid_images(self, batch: dict) -> dict[str, torch.Tensor]:
        """``{"source", "target", "stage1", "stage2", "swap"}`` images ``[B,3,R,R]`` in [-1,1]."""
        prep = self.prepare(batch)
        synth = self.backbone.generator.synthesis
        out = {"source": prep["image_s"], "target": prep["image_t"]}
        if prep["w_st"] is not None:
            out["stage1"] = synth(prep["w_st"], noise_mode=self.noise_mode)
        out["stage2"] = synth(prep["w_swap"], noise_mode=self.noise_mode)
        out["swap"] = self.blend(prep["w_swap"], prep["image_t"], prep["mask"])
        return out
