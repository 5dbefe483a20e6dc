"""IR-SE50: the ArcFace network of pSp/e4e's identity loss (``model_ir_se50.pth``).

Architecture of TreB1eN/InsightFace_Pytorch's ``Backbone(112, 50, 'ir_se')`` with its exact state
dict layout (``input_layer.*``, ``body.N.{shortcut_layer,res_layer}.*``, ``output_layer.*``).
Input: an FFHQ-aligned face ``[B,3,S,S]`` in [-1,1] (RGB), cropped/pooled to 112 by
:class:`~ipsb.backbone.identity_crop.FaceCrop` exactly as pSp/e4e's ID loss does; or, with
``crop='none'``, an arcface-aligned 112x112 face. Output: unit-norm ``[B,512]``.
The forward pass uses no in-place ops, so ``torch.func`` (vmap/jacrev/jvp) applies.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ipsb.backbone.identity_crop import PSP_BOX_256, make_crop
from ipsb.backbone.interfaces import IdentityEncoder, freeze
from ipsb.backbone.state_loading import CheckpointSource, load_state_strict, read_state_dict

#: Units per stage for the depths of the reference ``get_blocks``.
IRSE_BLOCKS = {50: (3, 4, 14, 3), 100: (3, 13, 30, 3), 152: (3, 8, 36, 3)}
STAGE_CHANNELS = (64, 128, 256, 512)


def feature_side(size: int) -> int:
    """Side of the last feature map after four stride-2 stages (112 -> 7)."""
    return -(-size // 16)


class SqueezeExcite(nn.Module):
    """x ``[B,C,H,W]`` -> x * sigmoid(fc2(relu(fc1(avgpool(x))))); 1x1 convs without bias."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


class BottleneckIRSE(nn.Module):
    """One IR-SE unit: BN -> 3x3 -> PReLU -> 3x3/stride -> BN -> SE, plus the shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        if in_ch == out_ch:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False),
                                                nn.BatchNorm2d(out_ch))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_ch),
            nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=False),
            nn.PReLU(out_ch),
            nn.Conv2d(out_ch, out_ch, 3, stride, 1, bias=False),
            nn.BatchNorm2d(out_ch),
            SqueezeExcite(out_ch, 16),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class IRSE(IdentityEncoder):
    """IR-SE ArcFace backbone (112x112 input) with the pSp/e4e face crop in front.

    ``blocks``: units per stage (IR-SE50: (3,4,14,3)); ``input_size``: network input side (112;
    the reference also allows 224; small sizes make cheap test models); ``crop``: ``'ffhq'`` (pSp box on a square
    FFHQ-aligned face of any size) or ``'none'`` (input must be 112x112). ``forward(image)``:
    ``[B,3,H,W]`` in [-1,1] -> unit-norm ``[B,512]``.
    """

    embedding_dim = 512

    def __init__(self, blocks: Sequence[int] = IRSE_BLOCKS[50], crop: str = "ffhq", drop_ratio: float = 0.6,
                 input_size: int = 112):
        super().__init__()
        self.input_size = (input_size, input_size)
        self.crop = make_crop(crop, self.input_size, PSP_BOX_256)
        self.input_layer = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        units, in_ch = [], 64
        for out_ch, n in zip(STAGE_CHANNELS, blocks):
            for i in range(n):
                units.append(BottleneckIRSE(in_ch, out_ch, 2 if i == 0 else 1))
                in_ch = out_ch
        self.body = nn.Sequential(*units)
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(512), nn.Dropout(drop_ratio), nn.Flatten(),
            nn.Linear(512 * feature_side(input_size) ** 2, 512), nn.BatchNorm1d(512))

    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        """Aligned face ``[B,3,H,W]`` in [-1,1] -> network input ``[B,3,112,112]`` in [-1,1]."""
        return self.crop(image, "IR-SE")

    def embed_aligned(self, x: torch.Tensor) -> torch.Tensor:
        """Network input ``[B,3,112,112]`` (``input_size``) in [-1,1] -> unit-norm ``[B,512]`` (the reference forward)."""
        x = self.output_layer(self.body(self.input_layer(x)))
        return x / x.norm(p=2, dim=1, keepdim=True)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Aligned face ``[B,3,H,W]`` in [-1,1] -> L2-normalised identity embedding ``[B,512]``."""
        return self.embed_aligned(self.preprocess(image))


def ir_se50(crop: str = "ffhq") -> IRSE:
    """IR-SE50 as pSp/e4e's ``IDLoss`` builds it (randomly initialised)."""
    return IRSE(IRSE_BLOCKS[50], crop=crop)


def load_ir_se50(checkpoint: CheckpointSource = "model_ir_se50.pth", crop: str = "ffhq") -> IRSE:
    """Frozen IR-SE50 with ``model_ir_se50.pth`` (or a path / state dict) loaded strictly.

    ``module.`` prefixes and missing ``num_batches_tracked`` entries are accepted.
    """
    what = "IR-SE50 ArcFace (model_ir_se50.pth)"
    state, label = read_state_dict(checkpoint, what)          # the file first: a bad one fails before the build
    return freeze(load_state_strict(ir_se50(crop), state, label, what))
