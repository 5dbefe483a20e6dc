"""InversionModule: photos -> W+ codes of the backbone's generator, as a Lightning predict run.

``ipsb predict --config lightning_configs/invert.yaml`` runs it over a folder of aligned photos
(:class:`ipsb.data.image_folder.FFHQDataModule`). Each batch ``{"image": [B,3,S,S] in [-1,1],
"sample_index": [B], "name", "path"}`` becomes ``{"wplus": [B,num_ws,w_dim] float32 on CPU,
"sample_index", "name", "path"}``, which :class:`ipsb.callbacks.wplus_writer.WPlusWriter` (attached
by :meth:`configure_callbacks`) writes as resumable shards and merges into one file at the end.

Codes start from the backbone's encoder (``init: encoder``, e.g. e4e: image resized to the
encoder's ``input_size``, W+ = offsets + ``latent_avg``) or from the generator's mean W in every row
(``init: mean``), then ``steps`` Adam steps on the W+ codes minimise, per image,
``mse_weight * mean((G(w) - x)^2) + lpips_weight * LPIPS(G(w), x)`` with ``G(w)`` resized to the
photo's size (antialiased bilinear). The loss is summed over the batch, so every image's codes
follow their own gradient. Batched kernels still round differently at different batch positions,
and Adam amplifies round-off, so the data module gives fixed batches (the same for any number of
processes and after a resume): the codes are reproducible for a given batch size. ``num_ws`` and
``w_dim`` are the generator's; an encoder whose codes have another shape is refused with one line.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule

from ipsb.backbone.bundle import FaceBackbone

INITS = ("encoder", "mean")


def _resize(image: torch.Tensor, size: int) -> torch.Tensor:
    """``[B,3,H,W]`` -> ``[B,3,size,size]`` (antialiased bilinear; unchanged when already that size)."""
    if tuple(image.shape[-2:]) == (size, size):
        return image
    return F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


class InversionModule(LightningModule):
    """Predict-only module: a batch of photos -> W+ codes (see the module docstring).

    ``backbone_components``: the backbone parts it uses (a CLI that builds backbones part by part
    needs no others).

    Args:
        backbone: the frozen networks; uses ``generator``, ``encoder`` (``init: encoder``) and
            ``perceptual`` (``lpips_weight > 0`` with ``steps > 0``).
        output: the W+ file to write (``{"wplus": [N,num_ws,w_dim], "names": [N]}``); its manifest
            goes next to it as ``<stem>.manifest.json``, shards under ``<output>.shards/``.
        init: ``encoder`` or ``mean`` (the generator's mean W; needs ``steps > 0``).
        steps, lr: optimisation refinement (0 = the encoder's codes as they are).
        mse_weight, lpips_weight: loss weights of the refinement.
        noise_mode: the generator's noise during refinement (``const``: reproducible).
        overwrite: replace an existing ``output`` (and discard shards of a different run).
    """

    backbone_components = ("generator", "encoder", "perceptual")

    def __init__(self, backbone: FaceBackbone, output: str = "outputs/ffhq1024/e4e_ffhq_wplus.pt",
                 init: str = "encoder", steps: int = 0, lr: float = 0.01, mse_weight: float = 1.0,
                 lpips_weight: float = 1.0, noise_mode: str = "const", overwrite: bool = False):
        super().__init__()
        if not isinstance(backbone, FaceBackbone):
            raise ValueError(f"backbone must be a FaceBackbone, got {type(backbone).__name__}")
        if init not in INITS:
            raise ValueError(f"model.init must be one of {INITS}, got {init!r}")
        if steps < 0 or lr <= 0 or mse_weight < 0 or lpips_weight < 0:
            raise ValueError(f"need steps >= 0, lr > 0 and loss weights >= 0; got steps={steps}, lr={lr}, "
                             f"mse_weight={mse_weight}, lpips_weight={lpips_weight}")
        self.backbone = backbone
        self.output, self.init, self.steps, self.lr = str(output), init, int(steps), float(lr)
        self.mse_weight, self.lpips_weight = float(mse_weight), float(lpips_weight)
        self.noise_mode, self.overwrite = noise_mode, bool(overwrite)
        g = backbone.generator
        self.num_ws, self.w_dim = int(g.num_ws), int(g.w_dim)
        if init == "encoder":
            encoder = backbone.encoder
            if encoder is None:
                raise ValueError("model.init is 'encoder' but the backbone has no encoder: add one to the backbone "
                                 "config, or set --model.init_args.init mean with --model.init_args.steps > 0")
            shape = (getattr(encoder, "num_ws", self.num_ws), getattr(encoder, "w_dim", self.w_dim))
            self._check_shape(shape, "the backbone's encoder")
        elif self.steps == 0:
            raise ValueError("model.init 'mean' without refinement gives every photo the same code; set "
                             "--model.init_args.steps > 0")
        if self.steps and lpips_weight > 0 and backbone.perceptual is None:
            raise ValueError("lpips_weight > 0 needs the backbone's perceptual component; add it to the backbone "
                             "config or set --model.init_args.lpips_weight 0")
        self.save_hyperparameters(ignore=["backbone"])

    def _check_shape(self, shape: tuple[int, int], what: str) -> None:
        if tuple(int(s) for s in shape) != (self.num_ws, self.w_dim):
            res = getattr(self.backbone.generator, "resolution", "?")
            raise ValueError(f"{what} gives W+ codes of [{shape[0]},{shape[1]}] (num_ws, w_dim) but the "
                             f"{res} px generator takes [{self.num_ws},{self.w_dim}]: use an encoder trained "
                             f"for this generator (e4e: stylegan_size {res})")

    # ------------------------------------------------------------------ run settings
    def run_settings(self) -> dict:
        """What decides the codes (a resumed run must match it): settings, shape and backbone files."""
        return {"init": self.init, "steps": self.steps, "lr": self.lr, "mse_weight": self.mse_weight,
                "lpips_weight": self.lpips_weight, "noise_mode": self.noise_mode, "num_ws": self.num_ws,
                "w_dim": self.w_dim, "backbone_files": self.backbone.file_hashes()}

    def configure_callbacks(self):
        from ipsb.callbacks.wplus_writer import WPlusWriter

        return [WPlusWriter(self.output, overwrite=self.overwrite)]

    # ------------------------------------------------------------------ inversion
    def initial_codes(self, image: torch.Tensor) -> torch.Tensor:
        """image ``[B,3,S,S]`` in [-1,1] -> starting W+ ``[B,num_ws,w_dim]``."""
        if self.init == "mean":
            w = self.backbone.generator.mean_latent().reshape(1, 1, self.w_dim).to(image)
            return w.expand(image.shape[0], self.num_ws, self.w_dim).clone()
        size = getattr(self.backbone.encoder, "input_size", None)
        x = _resize(image, size) if isinstance(size, int) else image
        with torch.no_grad():
            w = self.backbone.encode(x)
        self._check_shape(tuple(w.shape[1:]), "the backbone's encoder")
        return w

    def image_loss(self, wplus: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-image refinement loss ``[B]`` of codes ``[B,num_ws,w_dim]`` against photos ``[B,3,S,S]``."""
        image = _resize(self.backbone.synthesize(wplus, noise_mode=self.noise_mode), target.shape[-1])
        loss = self.mse_weight * (image - target).square().mean((1, 2, 3))
        if self.lpips_weight > 0:
            loss = loss + self.lpips_weight * self.backbone.lpips(image, target)
        return loss

    def refine(self, wplus: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``steps`` Adam steps on ``wplus`` (works inside Lightning's inference mode)."""
        with torch.inference_mode(False), torch.enable_grad():
            w = wplus.detach().clone().requires_grad_(True)
            target = target.detach().clone()
            opt = torch.optim.Adam([w], lr=self.lr)
            for _ in range(self.steps):
                opt.zero_grad(set_to_none=True)
                self.image_loss(w, target).sum().backward()
                opt.step()
            return w.detach().clone()

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        image = batch["image"]
        w = self.initial_codes(image)
        if self.steps:
            w = self.refine(w, image)
        return {"wplus": w.float().cpu(), "sample_index": batch["sample_index"].cpu(),
                "name": list(batch["name"]), "path": [str(Path(p)) for p in batch["path"]]}

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image ``[B,3,S,S]`` in [-1,1] -> W+ ``[B,num_ws,w_dim]`` (initial codes + refinement)."""
        w = self.initial_codes(image)
        return self.refine(w, image) if self.steps else w
