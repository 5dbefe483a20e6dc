"""Deep3DFaceRecon's 3DMM regressor (ResNet-50 ReconNet, 257 coefficients) and its ``epoch_20.pth`` loader.

Architecture (``ReconNetWrapper('resnet50', use_last_fc=False)``): a torchvision ResNet-50 without
``fc`` (pooled features ``[B,2048,1,1]``) and seven 1x1-conv heads -> id 80, exp 64, tex 80, angle 3,
gamma 27, (tx, ty) 2, tz 1, concatenated to ``[B,257]`` (the split of
:class:`~ipsb.backbone.face_model.BFMFaceModel`). The backbone is torchvision's own ResNet-50 (same
module names as the checkpoint), so nothing is hand-written there.

Input convention of the network: RGB in [0,1], NCHW, 224x224, the face aligned by Deep3D's
5-landmark alignment (:mod:`ipsb.data.deep3d_align`); no mean/std normalisation, no BGR.
:class:`Deep3DRegressor` takes ipsb's ``[B,3,H,W]`` in [-1,1] and converts (``(x+1)/2``, bilinear
antialiased resize to 224 when needed). The forward is ``torch.func``-compatible (eval BatchNorm,
no in-place ops on the input, no data-dependent control flow).
"""
from __future__ import annotations

import os
from collections import OrderedDict
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ipsb.backbone.interfaces import CoeffRegressor, freeze
from ipsb.checkpoints import (CorruptCheckpointError, WrongCheckpointKindError, describe_contents, load_torch_file,
                              resolve_checkpoint)

DEFAULT_CHECKPOINT = "epoch_20.pth"
HEAD_SIZES = (80, 64, 80, 3, 27, 2, 1)
INPUT_SIZE = 224


class ReconNet(nn.Module):
    """ResNet-50 features + seven 1x1-conv heads; state-dict keys = ``epoch_20.pth['net_recon']``.

    forward: image ``[B,3,224,224]`` RGB in [0,1] -> coefficients ``[B,257]``.
    """

    def __init__(self):
        super().__init__()
        from torchvision.models import resnet50

        self.backbone = resnet50(weights=None)
        del self.backbone.fc
        self.final_layers = nn.ModuleList([nn.Conv2d(2048, k, 1, bias=True) for k in HEAD_SIZES])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B,3,H,W]`` -> pooled ResNet-50 features ``[B,2048,1,1]``."""
        b = self.backbone
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        x = b.layer4(b.layer3(b.layer2(b.layer1(x))))
        return b.avgpool(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        return torch.cat([head(f) for head in self.final_layers], 1).flatten(1)


def recon_state_dict(ckpt: dict, path: str | os.PathLike = "<dict>") -> "OrderedDict[str, torch.Tensor]":
    """A loaded ``epoch_20.pth`` (or a bare ReconNet state dict) -> ReconNet state dict.

    Takes ``ckpt['net_recon']`` when present, strips ``module.`` prefixes (DataParallel/DDP saves)
    and adds missing ``num_batches_tracked`` counters (zeros; they do not affect eval).
    """
    state = ckpt.get("net_recon", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise WrongCheckpointKindError(
            f"'{path}' is {describe_contents(ckpt)}, not the Deep3DFaceRecon regressor (a state dict under "
            f"'net_recon', epoch_20.pth); see checkpoints/README.md")
    out = OrderedDict()
    for k, v in state.items():
        while k.startswith("module."):
            k = k[len("module."):]
        out[k] = v
    for k in [k for k in out if k.endswith(".running_mean")]:
        out.setdefault(k[: -len("running_mean")] + "num_batches_tracked", torch.zeros((), dtype=torch.long))
    return out


def load_recon_net(net: ReconNet, checkpoint: str | os.PathLike | dict, label: Optional[str] = None) -> ReconNet:
    """Load ``epoch_20.pth`` (name or path, or its :func:`recon_state_dict` read from file ``label``)
    into ``net`` strictly; a clear error names bad keys."""
    if isinstance(checkpoint, dict):
        path, state = label or "<state dict>", checkpoint
    else:
        path = resolve_checkpoint(checkpoint)
        state = recon_state_dict(load_torch_file(path, "the Deep3D regressor (epoch_20.pth)"), path)
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k}: {list(state[k].shape)} vs {list(v.shape)}" for k, v in expected.items()
             if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        raise CorruptCheckpointError(
            f"'{path}' does not match Deep3D's ReconNet (ResNet-50, 257 outputs): missing keys "
            f"{missing[:8]}{'...' if len(missing) > 8 else ''}, unexpected keys {unexpected[:8]}"
            f"{'...' if len(unexpected) > 8 else ''}, shape mismatches {wrong[:8]}. See checkpoints/README.md.")
    net.load_state_dict(state, strict=True)
    return net


class Deep3DRegressor(CoeffRegressor):
    """Frozen Deep3DFaceRecon regressor: aligned face ``[B,3,H,W]`` in [-1,1] -> coefficients ``[B,257]``.

    Args:
        checkpoint: ``None`` (architecture only, weights left at their random init: tests and
            stand-in weights), a registry name (``"epoch_20.pth"``) or a path.

    The image must already be aligned the way Deep3D expects (:func:`ipsb.data.deep3d_align.align_img`
    for real photos); the regressor only resizes to 224 and maps [-1,1] to [0,1].
    """

    num_coeffs = 257

    def __init__(self, checkpoint: Optional[str | os.PathLike] = None):
        super().__init__()
        self.checkpoint = None if checkpoint is None else resolve_checkpoint(checkpoint)
        if self.checkpoint is not None:     # the file first: a bad one fails before the network is built
            state = recon_state_dict(load_torch_file(self.checkpoint, "the Deep3D regressor (epoch_20.pth)"),
                                     self.checkpoint)
        self.net = ReconNet()
        if self.checkpoint is not None:
            load_recon_net(self.net, state, str(self.checkpoint))
        freeze(self)

    @staticmethod
    def preprocess(image: torch.Tensor) -> torch.Tensor:
        """``[B,3,H,W]`` in [-1,1] -> ``[B,3,224,224]`` in [0,1] (bilinear antialiased resize if needed)."""
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"expected an RGB image batch [B,3,H,W] in [-1,1], got {list(image.shape)}")
        x = (image + 1) / 2
        if tuple(x.shape[-2:]) != (INPUT_SIZE, INPUT_SIZE):
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False,
                              antialias=True)
        return x

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(self.preprocess(image))

    def train(self, mode: bool = True):
        """Stays in eval mode (frozen BatchNorm statistics) whatever the caller's ``train()`` says."""
        return super().train(False)
