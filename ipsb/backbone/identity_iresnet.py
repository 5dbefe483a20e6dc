"""iResNet-50/100: insightface ``arcface_torch`` identity backbones (``backbone.pth``).

Architecture of ``recognition/arcface_torch/backbones/iresnet.py`` (fp16=False) with its exact state
dict layout. Input: arcface-aligned 112x112 RGB in [-1,1] (``crop='none'``) or an FFHQ-aligned
square cropped with the pSp box (``crop='ffhq'``, the default, for generator images).
``raw_embedding`` gives the reference's un-normalised 512-d output; ``forward`` normalises it.
No in-place ops in the forward, so ``torch.func`` transforms apply.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ipsb.backbone.identity_crop import PSP_BOX_256, make_crop
from ipsb.backbone.identity_irse import feature_side
from ipsb.backbone.interfaces import IdentityEncoder, freeze
from ipsb.backbone.state_loading import CheckpointSource, load_state_strict, read_state_dict
from ipsb.checkpoints import CorruptCheckpointError

#: Blocks per stage of arcface_torch's named models.
IRESNET_LAYERS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 14, 3), 100: (3, 13, 30, 3), 200: (6, 26, 60, 6)}
WHAT = "insightface arcface_torch iResNet (backbone.pth)"


class IBasicBlock(nn.Module):
    """BN -> 3x3 -> BN -> PReLU -> 3x3/stride -> BN, plus shortcut; no activation after the sum."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch, eps=1e-5)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch, eps=1e-5)
        self.prelu = nn.PReLU(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch, eps=1e-5)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False),
                                            nn.BatchNorm2d(out_ch, eps=1e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class IResNet(IdentityEncoder):
    """arcface_torch iResNet. ``layers``: blocks per stage; ``num_features``: embedding width;
    ``input_size``: network input side (112; small sizes make cheap test models).

    ``forward(image)``: ``[B,3,H,W]`` in [-1,1] -> unit-norm ``[B,num_features]``.
    """

    def __init__(self, layers: Sequence[int] = IRESNET_LAYERS[50], num_features: int = 512,
                 crop: str = "ffhq", dropout: float = 0.0, input_size: int = 112):
        super().__init__()
        self.input_size = (input_size, input_size)
        self.embedding_dim = num_features
        self.crop = make_crop(crop, self.input_size, PSP_BOX_256)
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        in_ch = 64
        for i, (out_ch, n) in enumerate(zip((64, 128, 256, 512), layers), start=1):
            blocks = [IBasicBlock(in_ch if j == 0 else out_ch, out_ch, 2 if j == 0 else 1) for j in range(n)]
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
            in_ch = out_ch
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(512 * feature_side(input_size) ** 2, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-5)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False

    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        """Aligned face ``[B,3,H,W]`` in [-1,1] -> ``[B,3,112,112]`` in [-1,1]."""
        return self.crop(image, "iResNet")

    def raw_embedding(self, x: torch.Tensor) -> torch.Tensor:
        """Network input ``[B,3,112,112]`` in [-1,1] -> raw (un-normalised) ``[B,num_features]``."""
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Aligned face ``[B,3,H,W]`` in [-1,1] -> L2-normalised identity embedding."""
        return F.normalize(self.raw_embedding(self.preprocess(image)), dim=-1)


def iresnet(depth: int = 50, num_features: int = 512, crop: str = "ffhq") -> IResNet:
    """``get_model('r50'|'r100'|...)`` of arcface_torch (randomly initialised)."""
    if depth not in IRESNET_LAYERS:
        raise ValueError(f"iResNet depth must be one of {sorted(IRESNET_LAYERS)}, got {depth}")
    return IResNet(IRESNET_LAYERS[depth], num_features=num_features, crop=crop)


def infer_iresnet_layout(state: dict, label: str = "<state dict>") -> tuple[tuple[int, ...], int]:
    """``(blocks per stage, num_features)`` from an arcface_torch state dict's keys."""
    layers = []
    for i in range(1, 5):
        idx = {int(k.split(".")[1]) for k in state if k.startswith(f"layer{i}.")}
        layers.append(max(idx) + 1 if idx else 0)
    if 0 in layers or "fc.weight" not in state:
        raise CorruptCheckpointError(
            f"'{label}' is not an {WHAT} checkpoint: expected keys layer1..layer4.* and fc.weight "
            f"(found e.g. {list(state)[:4]})")
    return tuple(layers), int(state["fc.weight"].shape[0])


def load_iresnet(checkpoint: CheckpointSource = "backbone.pth", depth: int | None = None,
                 crop: str = "ffhq") -> IResNet:
    """Frozen iResNet with ``backbone.pth`` loaded strictly; depth/width inferred from the file.

    ``depth`` (50, 100, ...) if given must agree with the file, else CorruptCheckpointError.
    """
    state, label = read_state_dict(checkpoint, WHAT)
    layers, num_features = infer_iresnet_layout(state, label)
    if depth is not None:
        if depth not in IRESNET_LAYERS:
            raise ValueError(f"iResNet depth must be one of {sorted(IRESNET_LAYERS)}, got {depth}")
        if tuple(IRESNET_LAYERS[depth]) != layers:
            raise CorruptCheckpointError(
                f"'{label}' holds an iResNet with blocks {layers}, not iResNet-{depth} "
                f"{IRESNET_LAYERS[depth]}")
    model = IResNet(layers, num_features=num_features, crop=crop)
    return freeze(load_state_strict(model, state, label, WHAT))
