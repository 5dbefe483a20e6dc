"""HopeNet head pose (natanielruiz/deep-head-pose, ``hopenet_robust_alpha1.pkl``).

A torchvision ResNet-50 trunk (the reference builds it from torchvision's ``Bottleneck``, so we reuse
torchvision's blocks rather than re-typing them) with a fixed ``AvgPool2d(7)`` and three 66-bin
heads ``fc_yaw``, ``fc_pitch``, ``fc_roll`` (plus the unused ``fc_finetune`` kept for strict loading).
Bins are 3 degrees wide from -99; degrees are the softmax expectation ``sum(p * arange(66)) * 3 - 99``.

Preprocessing (``preprocessing="imagenet224"``, the reference test scripts): RGB face crop in
[0,1] -> resize the shorter side to 224 (bilinear, antialiased like PIL) -> centre crop 224 ->
ImageNet mean/std. Our input is ``[B,3,H,W]`` in [-1,1]; :meth:`HopeNet.preprocess` does the rest.

``preprocessing="reliableswap"`` is what ReliableSwap's FF++ evaluation code feeds HopeNet: the
[-1,1] image goes through the ImageNet mean/std as it is (no [0,1] mapping) and is not resized, so a
256 px frame leaves an 8x8 ``layer4`` map of which the fixed ``AvgPool2d(7)`` averages the top-left
7x7 cells (docs/evaluation.md).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet50

from ipsb.backbone.identity_crop import check_image
from ipsb.backbone.interfaces import PoseEstimator, freeze
from ipsb.backbone.state_loading import CheckpointSource, load_state_strict, read_state_dict

NUM_BINS = 66
BIN_WIDTH = 3.0
BIN_OFFSET = -99.0
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_SIZE = 224
PREPROCESSING = ("imagenet224", "reliableswap")


def bins_to_degrees(logits: torch.Tensor) -> torch.Tensor:
    """Bin logits ``[..., 66]`` -> degrees ``[...]``: softmax expectation of the bin index * 3 - 99."""
    idx = torch.arange(logits.shape[-1], device=logits.device, dtype=logits.dtype)
    return (logits.softmax(-1) * idx).sum(-1) * BIN_WIDTH + BIN_OFFSET


def resize_shorter_center_crop(image: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """``[B,C,H,W]`` -> ``[B,C,size,size]``: torchvision ``Resize(size)`` + ``CenterCrop(size)``.

    Bilinear with antialiasing (PIL-like when shrinking); the long side is ``int(size*long/short)``
    and the crop offset ``round((dim - size) / 2)``, as torchvision computes them.
    """
    h, w = image.shape[-2:]
    if (h, w) != (size, size):
        if h <= w:
            new_h, new_w = size, int(size * w / h)
        else:
            new_h, new_w = int(size * h / w), size
        image = F.interpolate(image, size=(new_h, new_w), mode="bilinear", align_corners=False,
                              antialias=True)
        top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
        image = image[..., top:top + size, left:left + size]
    return image


class HopeNet(PoseEstimator):
    """HopeNet ResNet-50. ``forward(image [B,3,H,W] in [-1,1])`` -> ``[B,3]`` (yaw, pitch, roll) degrees.

    ``preprocessing``: ``"imagenet224"`` (HopeNet's own: [0,1], 224 px, ImageNet mean/std) or
    ``"reliableswap"`` (ImageNet mean/std on the [-1,1] image, no resize; see the module docstring).
    """

    def __init__(self, num_bins: int = NUM_BINS, preprocessing: str = "imagenet224"):
        super().__init__()
        if preprocessing not in PREPROCESSING:
            raise ValueError(f"HopeNet preprocessing must be one of {PREPROCESSING}, got {preprocessing!r}")
        self.preprocessing = preprocessing
        trunk = resnet50(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = trunk.conv1, trunk.bn1, trunk.relu, trunk.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = trunk.layer1, trunk.layer2, trunk.layer3, trunk.layer4
        self.avgpool = nn.AvgPool2d(7)
        self.fc_yaw = nn.Linear(2048, num_bins)
        self.fc_pitch = nn.Linear(2048, num_bins)
        self.fc_roll = nn.Linear(2048, num_bins)
        self.fc_finetune = nn.Linear(2048 + 3, 3)  # unused by the reference forward; in its state dict
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        """Face crop ``[B,3,H,W]`` in [-1,1] -> ImageNet-normalised ``[B,3,224,224]`` (``[B,3,H,W]``
        unchanged in size with ``preprocessing="reliableswap"``)."""
        check_image(image, "HopeNet")
        if self.preprocessing == "reliableswap":
            return (image - self.mean) / self.std
        x = resize_shorter_center_crop((image + 1) / 2, INPUT_SIZE)
        return (x - self.mean) / self.std

    def network_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normalised input ``[B,3,224,224]`` -> (yaw, pitch, roll) logits, each ``[B,66]`` (the reference forward).

        ``AvgPool2d(7)`` is fixed: larger inputs pool only the top-left 7x7 cells of ``layer4``, as the
        reference does."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc_yaw(x), self.fc_pitch(x), self.fc_roll(x)

    def logits(self, image: torch.Tensor) -> torch.Tensor:
        """Face crop ``[B,3,H,W]`` in [-1,1] -> bin logits ``[B,3,66]`` (yaw, pitch, roll)."""
        return torch.stack(self.network_logits(self.preprocess(image)), 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Face crop ``[B,3,H,W]`` in [-1,1] -> ``[B,3]`` yaw, pitch, roll in degrees."""
        return bins_to_degrees(self.logits(image))


def load_hopenet(checkpoint: CheckpointSource = "hopenet_robust_alpha1.pkl",
                 preprocessing: str = "imagenet224") -> HopeNet:
    """Frozen HopeNet with the official snapshot (or a path / state dict) loaded strictly.

    The snapshot predates ``num_batches_tracked``; its absence is accepted. ``preprocessing``: see
    :class:`HopeNet`.
    """
    what = "HopeNet head pose (hopenet_robust_alpha1.pkl)"
    state, label = read_state_dict(checkpoint, what)          # the file first: a bad one fails before the build
    return freeze(load_state_strict(HopeNet(preprocessing=preprocessing), state, label, what))
