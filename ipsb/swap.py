"""FaceSwapper: the whole StyleIPSB pipeline on images and videos, built from the stage checkpoints.

Per (source, target) pair::

    align (dlib + FFHQ crop, ipsb.data.align)       -> aligned crops, original->crop matrix
    invert (backbone.encoder, e.g. e4e; or optimise W+ against the crop: MSE + LPIPS)
                                                    -> w_s, w_t [1,num_ws,w_dim]
    stage 1 + 2 (frozen StageTwoSwap)               -> w_s->t, w'   (3DMM coefficients measured on
                                                       the reconstructions G(w_s), G(w_t), as in training)
    stage 3 (MSFT from the real target crop + its dilated, feathered face mask) -> final crop
    paste: final crop composited into the target frame through the inverse warp and the feathered
           face mask (times a border ramp); pixels the warped mask does not reach stay bit-identical.

Videos go frame by frame: landmarks and target latents are smoothed over time by exponential moving
averages (reset after a frame without a face or a jump of the face), each inversion warm-starts
from the previous frame's code, frames with no face are written unchanged and counted.

:func:`swap_pairs` runs stages 1-3 on aligned images or W+ codes and returns every intermediate, for
demo grids (source | target | stage 1 | stage 2 | final).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ipsb.backbone.bundle import FaceBackbone
from ipsb.data import ffhq_alignment as fa
from ipsb.data.align import FaceAligner, NoFaceError
from ipsb.data.image_reader import image_to_tensor, load_rgb, to_rgb_uint8
from ipsb.nets.face_mask import FaceRegionMask
from ipsb.nets.msft import MSFT
from ipsb.stages.blend_module import BlendModule
from ipsb.stages.detail_module import StageTwoSwap, load_detail_stage

INVERSIONS = ("auto", "encoder", "optimize")


def resize_image(image: torch.Tensor, size: int) -> torch.Tensor:
    """``[B,C,H,W]`` -> ``[B,C,size,size]`` (antialiased bilinear; unchanged if already that size)."""
    if image.shape[-2:] == (size, size):
        return image
    return F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=image.shape[-1] > size)


@dataclass
class SwapOutput:
    """All of a swap of aligned faces: images ``[B,3,R,R]`` in [-1,1], codes ``[B,num_ws,w_dim]``,
    ``mask`` ``[B,1,R,R]`` in [0,1] (the target's dilated, feathered face mask)."""

    source: torch.Tensor
    target: torch.Tensor
    stage1: torch.Tensor
    stage2: torch.Tensor
    final: torch.Tensor
    mask: torch.Tensor
    w_source: torch.Tensor
    w_target: torch.Tensor
    w_stage1: torch.Tensor
    w_stage2: torch.Tensor


@dataclass
class VideoReport:
    """Result of :meth:`FaceSwapper.swap_video`: frames written, frames without a face (passed through)."""

    frames: int
    no_face: int
    path: str


def paste_face(original: np.ndarray, crop: torch.Tensor, mask: torch.Tensor, matrix: torch.Tensor,
               feather: Optional[float] = None) -> tuple[np.ndarray, np.ndarray]:
    """Composite a processed crop into the original frame through a feathered mask.

    original uint8 ``[H,W,3]``; crop ``[3,S,S]`` in [-1,1]; mask ``[1,S,S]`` in [0,1] (where the crop
    replaces the frame); matrix ``[3,3]`` original -> crop pixels; feather: border ramp width in crop
    pixels (default S/16). Returns ``(composite uint8 [H,W,3], region bool [H,W])``; outside
    ``region`` (where the warped mask is 0) the composite equals ``original`` bit for bit.
    """
    rgb = to_rgb_uint8(original)
    s = crop.shape[-1]
    if crop.dim() != 3 or crop.shape[0] != 3 or crop.shape[1] != s or mask.shape != (1, s, s):
        raise ValueError(f"paste_face needs crop [3,S,S] and mask [1,S,S], got {list(crop.shape)} and {list(mask.shape)}")
    base = image_to_tensor(rgb).to(crop.device)
    h, w = rgb.shape[:2]
    inv = torch.linalg.inv(matrix.to(torch.float64))
    border = fa.feather_mask(s, s / 16 if feather is None else feather, dtype=crop.dtype, device=crop.device)
    full_mask = border * mask[None].to(crop.dtype)
    face = fa.warp(crop[None], inv, (h, w), mode="bilinear", padding_mode="border")[0].clamp(-1, 1)
    m = fa.warp(full_mask, inv, (h, w), mode="bilinear", padding_mode="zeros")[0].clamp(0, 1)
    blended = m * face + (1 - m) * base
    region = (m[0] > 0).cpu().numpy()
    vals = ((blended.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    out = rgb.copy()
    out[region] = vals[region]
    return out, region


class FaceSwapper(nn.Module):
    """Stages 1-3 plus alignment, inversion and pasting (module docstring).

    Args:
        backbone: the frozen :class:`FaceBackbone` the stages were trained with.
        stage2: frozen stages 1+2 (:class:`~ipsb.stages.detail_module.StageTwoSwap`).
        msft: the trained stage-3 :class:`MSFT` (None: no blending, the final image is stage 2's).
        face_mask: :class:`FaceRegionMask` for stage 3 and pasting.
        aligner: a :class:`FaceAligner` (default: FFHQ crop at ``align_size``).
        align_size: side of the aligned crop (default: the generator's resolution).
        inversion: ``"auto"`` (the backbone's encoder if it has one, else optimisation), ``"encoder"``,
            ``"optimize"``.
        invert_steps, invert_lr, invert_perceptual: optimisation-based inversion (Adam on W+ from the
            mean latent or a warm start; loss MSE + invert_perceptual * LPIPS when the backbone has one).
        smooth_landmarks, smooth_latents: EMA weights of the previous frame in videos (0 = off).
        paste_feather: border ramp of the pasted crop in crop pixels (default S/16).
        noise_mode: generator noise mode.
    """

    def __init__(self, backbone: FaceBackbone, stage2: StageTwoSwap, msft: Optional[MSFT] = None,
                 face_mask: Optional[FaceRegionMask] = None, aligner: Optional[FaceAligner] = None,
                 align_size: Optional[int] = None, inversion: str = "auto", invert_steps: int = 100,
                 invert_lr: float = 0.05, invert_perceptual: float = 1.0, smooth_landmarks: float = 0.5,
                 smooth_latents: float = 0.5, paste_feather: Optional[float] = None, noise_mode: str = "const"):
        super().__init__()
        if inversion not in INVERSIONS:
            raise ValueError(f"inversion must be one of {INVERSIONS}, got {inversion!r}")
        if inversion == "encoder" and getattr(backbone, "encoder", None) is None:
            raise ValueError("inversion='encoder' needs a backbone with an encoder (e.g. e4e); use 'optimize'")
        for name, v in (("smooth_landmarks", smooth_landmarks), ("smooth_latents", smooth_latents)):
            if not 0.0 <= v < 1.0:
                raise ValueError(f"{name} must lie in [0,1), got {v}")
        self.backbone, self.stage2, self.msft = backbone, stage2, msft
        self.face_mask = face_mask if face_mask is not None else FaceRegionMask()
        self.resolution = int(backbone.generator.resolution)
        self.align_size = int(align_size or self.resolution)
        self.aligner = aligner if aligner is not None else FaceAligner(output_size=self.align_size)
        self.inversion, self.invert_steps, self.invert_lr = inversion, int(invert_steps), float(invert_lr)
        self.invert_perceptual = float(invert_perceptual)
        self.smooth_landmarks, self.smooth_latents = float(smooth_landmarks), float(smooth_latents)
        self.paste_feather, self.noise_mode = paste_feather, noise_mode
        self.eval().requires_grad_(False)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_checkpoints(cls, mapping_ckpt: str, detail_ckpt: str, blend_ckpt: Optional[str],
                         backbone: Union[FaceBackbone, dict, str, os.PathLike], **kwargs) -> "FaceSwapper":
        """Build from the stage-1/2/3 checkpoints and the backbone (object, config dict or YAML path).

        ``blend_ckpt=None`` skips stage 3. A stage-3 checkpoint also stores the stage-1/2 weights it
        was trained with, and those are used (the stage-1/2 files then only give the architecture).
        The backbone's checkpoint files must be those the stages were trained with (sha256, else
        ValueError naming the file). A missing, unreadable or wrong-kind checkpoint is named in one
        line (:func:`ipsb.checkpoints.load_stage_checkpoint`). kwargs go to the constructor.
        """
        from ipsb.checkpoints import load_stage_checkpoint, read_stage_checkpoint
        from ipsb.stages.detail_module import DetailModule
        from ipsb.stages.mapping_module import MappingModule

        roles = {"mapping": "the mapping checkpoint (--mapping)", "detail": "the detail checkpoint (--detail)",
                 "blend": "the blend checkpoint (--blend)"}
        for path, stage, role in ((mapping_ckpt, MappingModule, roles["mapping"]),
                                  (detail_ckpt, DetailModule, roles["detail"]),
                                  (blend_ckpt, BlendModule, roles["blend"])):
            if path is not None:          # every file checked (kind included) before anything is built
                read_stage_checkpoint(path, stage, role)
        if not isinstance(backbone, FaceBackbone):
            backbone = FaceBackbone.from_config(backbone)
        if blend_ckpt is None:
            stage2 = load_detail_stage(str(detail_ckpt), backbone, str(mapping_ckpt), roles["detail"])
            return cls(backbone, stage2, None, **kwargs)
        blend = load_stage_checkpoint(blend_ckpt, BlendModule, roles["blend"], backbone=backbone,
                                      detail_checkpoint=str(detail_ckpt), mapping_checkpoint=str(mapping_ckpt))
        kwargs.setdefault("noise_mode", blend.noise_mode)
        return cls(backbone, blend.stage2, blend.msft, blend.face_mask, **kwargs)

    @property
    def device(self) -> torch.device:
        return next(self.backbone.buffers()).device

    # ------------------------------------------------------------------ inversion
    def uses_encoder(self) -> bool:
        return self.inversion == "encoder" or (self.inversion == "auto"
                                               and getattr(self.backbone, "encoder", None) is not None)

    def invert(self, image: torch.Tensor, init: Optional[torch.Tensor] = None, steps: Optional[int] = None
               ) -> torch.Tensor:
        """Aligned faces ``[B,3,H,W]`` in [-1,1] -> W+ ``[B,num_ws,w_dim]`` (encoder or optimisation)."""
        gen = self.backbone.generator
        image = image.to(self.device)
        if self.uses_encoder():
            enc = self.backbone.encoder
            size = getattr(enc, "input_size", None)
            x = resize_image(image, int(size)) if size else image
            with torch.no_grad():
                return (enc.encode if hasattr(enc, "encode") else enc)(x)
        target = resize_image(image, self.resolution)
        if init is None:
            init = gen.mean_latent()[:, None].expand(image.shape[0], gen.num_ws, gen.w_dim)
        w = init.detach().clone().to(self.device).requires_grad_(True)
        opt = torch.optim.Adam([w], lr=self.invert_lr)
        lpips = self.invert_perceptual if getattr(self.backbone, "perceptual", None) is not None else 0.0
        with torch.enable_grad():
            for _ in range(self.invert_steps if steps is None else steps):
                out = gen.synthesis(w, noise_mode=self.noise_mode)
                loss = F.mse_loss(out, target)
                if lpips > 0:
                    loss = loss + lpips * self.backbone.perceptual(out, target).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
        return w.detach()

    # ------------------------------------------------------------------ stages 1-3 on aligned faces
    @torch.no_grad()
    def swap_aligned(self, source: Optional[torch.Tensor], target: Optional[torch.Tensor],
                     w_source: Optional[torch.Tensor] = None, w_target: Optional[torch.Tensor] = None) -> SwapOutput:
        """Swap aligned faces ``[B,3,H,W]`` in [-1,1] (or given W+ codes) -> :class:`SwapOutput`.

        A missing image is replaced by the synthesis of its code; a missing code by the inversion of
        its image. Stage 3 blends with the *given* target image (a real crop keeps its own background).
        """
        gen, bb = self.backbone.generator, self.backbone
        if w_source is None:
            if source is None:
                raise ValueError("swap_aligned needs a source image or a source W+ code")
            w_source = self.invert(source)
        if w_target is None:
            if target is None:
                raise ValueError("swap_aligned needs a target image or a target W+ code")
            w_target = self.invert(target)
        for name, w in (("w_source", w_source), ("w_target", w_target)):
            gen.check_wplus(w)
        w_source, w_target = w_source.to(self.device), w_target.to(self.device)
        b = w_source.shape[0]
        recon = gen.synthesis(torch.cat([w_source, w_target]), noise_mode=self.noise_mode)
        coeffs = bb.regressor(recon)
        source = recon[:b] if source is None else resize_image(source.to(self.device), self.resolution)
        target = recon[b:] if target is None else resize_image(target.to(self.device), self.resolution)
        w_st, w_mix = self.stage2(w_source, w_target, coeffs[:b], coeffs[b:])
        images = gen.synthesis(torch.cat([w_st, w_mix]), noise_mode=self.noise_mode)
        stage1, stage2 = images[:b], images[b:]
        mask = self.face_mask(bb, target)
        final = stage2 if self.msft is None else self.msft(gen, w_mix, target, mask, noise_mode=self.noise_mode)
        return SwapOutput(source, target, stage1, stage2, final.clamp(-1, 1), mask, w_source, w_target, w_st, w_mix)

    # ------------------------------------------------------------------ real images
    def align(self, image, name: Optional[str] = None):
        """uint8 RGB ``[H,W,3]`` (or anything :func:`to_rgb_uint8` takes) -> :class:`AlignedFace`."""
        return self.aligner.align(image, name=name)

    def paste(self, original: np.ndarray, out: SwapOutput, matrix: torch.Tensor, index: int = 0
              ) -> tuple[np.ndarray, np.ndarray]:
        """Paste ``out.final[index]`` back into ``original`` through the face mask -> (frame, region)."""
        crop, mask = out.final[index:index + 1], out.mask[index:index + 1]
        if self.align_size != self.resolution:
            crop, mask = resize_image(crop, self.align_size), resize_image(mask, self.align_size)
        return paste_face(original, crop[0], mask[0], matrix, self.paste_feather)

    @torch.no_grad()
    def swap_image(self, source, target, source_name: str = "the source image",
                   target_name: str = "the target image", return_region: bool = False):
        """Full-frame swap: the face of ``source`` onto ``target`` (uint8 RGB arrays or paths).

        Returns the composite uint8 ``[H,W,3]`` (and the bool ``[H,W]`` region that may differ from
        ``target`` if ``return_region``). NoFaceError (naming the image) when either has no face.
        """
        src_rgb, tgt_rgb = load_rgb(source), load_rgb(target)
        src = self.align(src_rgb, source_name)
        tgt = self.align(tgt_rgb, target_name)
        out = self.swap_aligned(src.image[None], tgt.image[None])
        frame, region = self.paste(tgt_rgb, out, tgt.matrix)
        return (frame, region) if return_region else frame

    @torch.no_grad()
    def swap_video(self, source, target_path: Union[str, os.PathLike], out_path: Union[str, os.PathLike],
                   progress: bool = True, lossless: bool = False, source_name: str = "the source image"
                   ) -> VideoReport:
        """Swap the face of ``source`` (image array or path) into every frame of a video.

        Writes an audio-free mp4 at the input's frame rate; frames without a face are written
        unchanged and counted in the returned :class:`VideoReport`.
        """
        from tqdm import tqdm

        from ipsb.data.video import count_frames, iter_frames
        from ipsb.video_io import Mp4Writer, frame_rate

        src = self.align(load_rgb(source), source_name)
        w_source = self.invert(src.image[None])
        fps = frame_rate(target_path)
        total = count_frames(target_path)
        lm_prev = w_prev = None
        no_face = 0
        with Mp4Writer(out_path, fps, lossless=lossless) as writer:
            for _, frame in tqdm(iter_frames(target_path), total=total, disable=not progress, unit="frame",
                                 desc=f"swap {Path(target_path).name}"):
                try:
                    lms = self.aligner.detect(frame)
                except NoFaceError:
                    writer.write(frame)
                    no_face += 1
                    lm_prev = w_prev = None
                    continue
                lms = self._smooth_landmarks(lms, lm_prev)
                aligned = self.aligner.align_landmarks(frame, lms)
                # warm start: a quarter of the steps from the previous frame's code
                steps = None if w_prev is None else max(1, self.invert_steps // 4)
                w_t = self.invert(aligned.image[None], init=w_prev, steps=steps)
                if w_prev is not None and self.smooth_latents > 0:
                    w_t = self.smooth_latents * w_prev + (1 - self.smooth_latents) * w_t
                lm_prev, w_prev = lms, w_t
                out = self.swap_aligned(src.image[None], aligned.image[None], w_source=w_source, w_target=w_t)
                writer.write(self.paste(frame, out, aligned.matrix)[0])
            frames = writer.frames
        return VideoReport(frames=frames, no_face=no_face, path=str(out_path))

    def _smooth_landmarks(self, lms: torch.Tensor, prev: Optional[torch.Tensor]) -> torch.Tensor:
        """EMA of landmarks ``[68,2]``; restarts when the face moved more than 10% of its size."""
        if prev is None or self.smooth_landmarks == 0:
            return lms
        size = float((lms.max(0).values - lms.min(0).values).norm())
        if float((lms - prev).norm(dim=1).mean()) > 0.1 * size:
            return lms
        return self.smooth_landmarks * prev + (1 - self.smooth_landmarks) * lms


@torch.no_grad()
def swap_pairs(swapper: FaceSwapper, sources: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """Stages 1-3 for a batch of pairs, every intermediate image, for demo grids.

    ``sources``/``targets``: aligned faces ``[B,3,H,W]`` in [-1,1], or W+ codes ``[B,num_ws,w_dim]``
    (no inversion; the images are their syntheses). Returns ``{"source", "target", "stage1",
    "stage2", "final"}``, each ``[B,3,R,R]`` in [-1,1] at the generator's resolution, so a grid
    source | target | stage 1 | stage 2 | final can be drawn row by row.
    """
    def split(x):
        if x.dim() == 3:
            return None, x
        if x.dim() == 4 and x.shape[1] == 3:
            return x, None
        raise ValueError(f"expected images [B,3,H,W] or W+ codes [B,num_ws,w_dim], got {list(x.shape)}")

    s_img, s_w = split(sources)
    t_img, t_w = split(targets)
    if sources.shape[0] != targets.shape[0]:
        raise ValueError(f"sources and targets must pair up: {sources.shape[0]} vs {targets.shape[0]}")
    out = swapper.swap_aligned(s_img, t_img, w_source=s_w, w_target=t_w)
    return {"source": out.source, "target": out.target, "stage1": out.stage1, "stage2": out.stage2,
            "final": out.final}
