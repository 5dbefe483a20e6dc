"""BiSeNet face parser (zllrunning/face-parsing.PyTorch, ``79999_iter.pth``, 19 CelebAMask-HQ classes).

Same modules and state dict layout as the reference (``cp.resnet.*``, ``cp.arm16/32``, ``cp.conv_head*``,
``cp.conv_avg``, ``ffm.*``, ``conv_out``, ``conv_out16``, ``conv_out32``). The ResNet-18 trunk is
assembled from torchvision's ``resnet18(weights=None)`` blocks (identical maths and key names), so
unlike the reference nothing is downloaded at construction.

Preprocessing (reference ``test.py``): RGB in [0,1] -> resize to 512x512 (bilinear, antialiased like
PIL) -> ImageNet mean/std. Our images are ``[B,3,H,W]`` in [-1,1]; logits come back at ``H x W``.
Masks group class probabilities: face (skin, brows, eyes, glasses, nose, mouth, lips by default),
hair, background; see :data:`LABELS`.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18

from ipsb.backbone.identity_crop import check_image
from ipsb.backbone.interfaces import FaceMasker, freeze
from ipsb.backbone.state_loading import CheckpointSource, load_state_strict, read_state_dict

LABELS = ("background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "l_ear", "r_ear", "ear_r",
          "nose", "mouth", "u_lip", "l_lip", "neck", "neck_l", "cloth", "hair", "hat")
#: skin, brows, eyes, eyeglasses, nose, mouth, lips (ears, neck, hair, hat excluded).
FACE_CLASSES = (1, 2, 3, 4, 5, 6, 10, 11, 12, 13)
HAIR_CLASSES = (17,)
BACKGROUND_CLASSES = (0,)
INPUT_SIZE = 512
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ConvBNReLU(nn.Module):
    """Conv (no bias) -> BN -> ReLU."""

    def __init__(self, in_ch: int, out_ch: int, ks: int = 3, stride: int = 1, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, ks, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class AttentionRefinement(nn.Module):
    """ConvBNReLU 3x3, then channel attention: sigmoid(BN(1x1 conv(global mean)))."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = ConvBNReLU(in_ch, out_ch)
        self.conv_atten = nn.Conv2d(out_ch, out_ch, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        atten = torch.sigmoid(self.bn_atten(self.conv_atten(feat.mean((2, 3), keepdim=True))))
        return feat * atten


class ResNet18Features(nn.Module):
    """torchvision ResNet-18 without its head: ``x`` -> (1/8, 1/16, 1/32) features (128, 256, 512 ch)."""

    def __init__(self):
        super().__init__()
        trunk = resnet18(weights=None)
        self.conv1, self.bn1, self.maxpool = trunk.conv1, trunk.bn1, trunk.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = trunk.layer1, trunk.layer2, trunk.layer3, trunk.layer4

    def forward(self, x: torch.Tensor):
        x = self.layer1(self.maxpool(F.relu(self.bn1(self.conv1(x)))))
        feat8 = self.layer2(x)
        feat16 = self.layer3(feat8)
        return feat8, feat16, self.layer4(feat16)


class ContextPath(nn.Module):
    """ResNet-18 + attention refinement of the 1/32 and 1/16 features with a global context term."""

    def __init__(self):
        super().__init__()
        self.resnet = ResNet18Features()
        self.arm16 = AttentionRefinement(256, 128)
        self.arm32 = AttentionRefinement(512, 128)
        self.conv_head32 = ConvBNReLU(128, 128)
        self.conv_head16 = ConvBNReLU(128, 128)
        self.conv_avg = ConvBNReLU(512, 128, ks=1, padding=0)

    def forward(self, x: torch.Tensor):
        """-> (feat8 [B,128,H/8], context 1/8 [B,128,H/8], context 1/16 [B,128,H/16])."""
        feat8, feat16, feat32 = self.resnet(x)
        avg = self.conv_avg(feat32.mean((2, 3), keepdim=True))  # nearest upsample of 1x1 == broadcast
        feat32_up = self.conv_head32(F.interpolate(self.arm32(feat32) + avg, size=feat16.shape[-2:], mode="nearest"))
        feat16_up = self.conv_head16(F.interpolate(self.arm16(feat16) + feat32_up, size=feat8.shape[-2:],
                                                   mode="nearest"))
        return feat8, feat16_up, feat32_up


class FeatureFusion(nn.Module):
    """cat -> ConvBNReLU 1x1 -> feat * (1 + channel attention)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.convblk = ConvBNReLU(in_ch, out_ch, ks=1, padding=0)
        self.conv1 = nn.Conv2d(out_ch, out_ch // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(out_ch // 4, out_ch, 1, bias=False)

    def forward(self, fsp: torch.Tensor, fcp: torch.Tensor) -> torch.Tensor:
        feat = self.convblk(torch.cat([fsp, fcp], 1))
        atten = torch.sigmoid(self.conv2(F.relu(self.conv1(feat.mean((2, 3), keepdim=True)))))
        return feat * atten + feat


class ParsingHead(nn.Module):
    """ConvBNReLU 3x3 -> 1x1 conv (no bias) to the class logits."""

    def __init__(self, in_ch: int, mid_ch: int, n_classes: int):
        super().__init__()
        self.conv = ConvBNReLU(in_ch, mid_ch)
        self.conv_out = nn.Conv2d(mid_ch, n_classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv(x))


def class_masks(logits: torch.Tensor, face_classes: Sequence[int] = FACE_CLASSES,
                hair_classes: Sequence[int] = HAIR_CLASSES, background_classes: Sequence[int] = BACKGROUND_CLASSES,
                hard: bool = False) -> dict[str, torch.Tensor]:
    """Logits ``[B,K,H,W]`` -> ``{"face","hair","background","other"}`` masks ``[B,1,H,W]`` in [0,1].

    Soft masks sum the softmax probabilities of each group; ``hard=True`` uses the argmax (0/1).
    The four masks sum to 1 at every pixel ("other": ears, neck, cloth, hat, ...).
    """
    probs = F.one_hot(logits.argmax(1), logits.shape[1]).permute(0, 3, 1, 2).to(logits.dtype) if hard \
        else logits.softmax(1)
    groups = {"face": face_classes, "hair": hair_classes, "background": background_classes}
    out = {name: probs[:, list(idx)].sum(1, keepdim=True) for name, idx in groups.items()}
    out["other"] = (1 - out["face"] - out["hair"] - out["background"]).clamp(0, 1)
    return out


class BiSeNet(FaceMasker):
    """BiSeNet face parser. ``forward(image [B,3,H,W] in [-1,1])`` -> soft face mask ``[B,1,H,W]`` in [0,1]."""

    def __init__(self, n_classes: int = 19, face_classes: Sequence[int] = FACE_CLASSES, hard: bool = False):
        super().__init__()
        self.cp = ContextPath()
        self.ffm = FeatureFusion(256, 256)
        self.conv_out = ParsingHead(256, 256, n_classes)
        self.conv_out16 = ParsingHead(128, 64, n_classes)
        self.conv_out32 = ParsingHead(128, 64, n_classes)
        self.face_classes = tuple(face_classes)
        self.hard = hard
        if any(not 0 <= c < n_classes for c in self.face_classes):
            raise ValueError(f"face_classes must lie in [0,{n_classes}), got {self.face_classes}")
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def network_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normalised input ``[B,3,S,S]`` -> (out, out16, out32) logits ``[B,K,S,S]`` (the reference forward)."""
        size = x.shape[-2:]
        feat8, cp8, cp16 = self.cp(x)
        outs = (self.conv_out(self.ffm(feat8, cp8)), self.conv_out16(cp8), self.conv_out32(cp16))
        return tuple(F.interpolate(o, size=size, mode="bilinear", align_corners=True) for o in outs)

    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        """``[B,3,H,W]`` in [-1,1] -> ImageNet-normalised ``[B,3,512,512]``."""
        check_image(image, "BiSeNet")
        x = (image + 1) / 2
        if tuple(x.shape[-2:]) != (INPUT_SIZE, INPUT_SIZE):
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=True)
        return (x - self.mean) / self.std

    def logits(self, image: torch.Tensor) -> torch.Tensor:
        """``[B,3,H,W]`` in [-1,1] -> class logits ``[B,19,H,W]`` (bilinear back to the input size)."""
        out = self.network_logits(self.preprocess(image))[0]
        if out.shape[-2:] != image.shape[-2:]:
            out = F.interpolate(out, size=image.shape[-2:], mode="bilinear", align_corners=False)
        return out

    def parse(self, image: torch.Tensor) -> torch.Tensor:
        """``[B,3,H,W]`` in [-1,1] -> label map ``[B,H,W]`` long (indices into :data:`LABELS`)."""
        return self.logits(image).argmax(1)

    def masks(self, image: torch.Tensor, hard: bool | None = None) -> dict[str, torch.Tensor]:
        """``[B,3,H,W]`` in [-1,1] -> face / hair / background / other masks ``[B,1,H,W]`` in [0,1]."""
        return class_masks(self.logits(image), self.face_classes, hard=self.hard if hard is None else hard)

    def face_mask(self, image: torch.Tensor) -> torch.Tensor:
        """``[B,3,H,W]`` in [-1,1] -> face mask ``[B,1,H,W]`` in [0,1]."""
        return self.masks(image)["face"]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """FaceMasker interface: the face mask ``[B,1,H,W]`` in [0,1]."""
        return self.face_mask(image)


def load_bisenet(checkpoint: CheckpointSource = "79999_iter.pth", face_classes: Sequence[int] = FACE_CLASSES,
                 hard: bool = False) -> BiSeNet:
    """Frozen BiSeNet with ``79999_iter.pth`` (or a path / state dict) loaded strictly."""
    what = "BiSeNet face parser (79999_iter.pth)"
    state, label = read_state_dict(checkpoint, what)          # the file first: a bad one fails before the build
    return freeze(load_state_strict(BiSeNet(19, face_classes, hard), state, label, what))
