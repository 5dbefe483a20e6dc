"""CosFace sphere20: the FF++ "ID retrieval" network (``net_sphere20_data_vggface2_acc_9955.pth``).

Architecture of MuggleWang/CosFace_pytorch ``net.sphere(type=20)`` with its exact state dict
layout: four stages of (3x3/2 conv with bias, PReLU, residual blocks of two 3x3 conv + PReLU), no
BatchNorm, ``fc`` Linear(512*h*w, 512) with h x w the last feature map. Two input sizes exist:

* 112x96 (H x W), ``fc`` 512*7*6 = 21504 wide: CosFace_pytorch's own ``net.py`` (sphereface crops);
* 112x112, ``fc`` 512*7*7 = 25088 wide: the variant ReliableSwap's FF++ evaluation code defines
  and loads ``net_sphere20_data_vggface2_acc_9955.pth`` into strictly, so that file has this shape.

:func:`load_sphere20` reads the width of ``fc.weight`` and builds the matching variant. With
``mirror`` (the LFW protocol) the feature is ``cat(net(x), net(hflip(x)))`` (1024-d); :meth:`forward`
returns the feature L2-normalised, so a dot product equals the reference's cosine
``f1.f2/(|f1||f2|+1e-5)`` up to the 1e-5. No in-place ops in the forward, so ``torch.func``
transforms apply.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ipsb.backbone.identity_crop import PSP_BOX_256, SPHERE_BOX_256, make_crop
from ipsb.backbone.identity_irse import feature_side
from ipsb.backbone.interfaces import IdentityEncoder, freeze
from ipsb.backbone.state_loading import CheckpointSource, load_state_strict, read_state_dict

SPHERE20_BLOCKS = (1, 2, 4, 1)
#: ``fc.weight`` width -> network input (H, W).
INPUT_SIZE_BY_FC_WIDTH = {512 * 7 * 6: (112, 96), 512 * 7 * 7: (112, 112)}


class SphereBlock(nn.Module):
    """x + PReLU(conv2(PReLU(conv1(x)))), 3x3 convs without bias."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.prelu1 = nn.PReLU(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.prelu2 = nn.PReLU(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.prelu2(self.conv2(self.prelu1(self.conv1(x))))


class SphereFace(IdentityEncoder):
    """CosFace sphere network (sphere20 by default). ``forward``: ``[B,3,H,W]`` -> unit-norm ``[B,1024]``.

    ``crop``: ``'none'`` (input is already ``input_size``, a sphereface-aligned face), ``'ffhq'``
    (FFHQ-aligned square, cropped with :data:`SPHERE_BOX_256` for 112x96 or
    :data:`~ipsb.backbone.identity_crop.PSP_BOX_256` for square inputs, then pooled) or ``'resize'``
    (the whole frame resized bilinearly, ``align_corners=True``: ReliableSwap's FF++ evaluation).
    ``mirror``: concatenate the embedding of the horizontally flipped image (the LFW protocol);
    ``False`` gives ``[B,512]``. ``input_size``: (H, W) of the network input (112x96 or 112x112;
    small sizes make cheap test models).
    """

    def __init__(self, blocks: Sequence[int] = SPHERE20_BLOCKS, crop: str = "ffhq", mirror: bool = True,
                 input_size: tuple[int, int] = (112, 96)):
        super().__init__()
        self.input_size = tuple(input_size)
        box = PSP_BOX_256 if self.input_size[0] == self.input_size[1] else SPHERE_BOX_256
        self.crop = make_crop(crop, self.input_size, box)
        self.mirror = mirror
        self.embedding_dim = 1024 if mirror else 512
        in_ch = 3
        for i, (out_ch, n) in enumerate(zip((64, 128, 256, 512), blocks), start=1):
            stage = [nn.Conv2d(in_ch, out_ch, 3, 2, 1), nn.PReLU(out_ch)]
            stage += [SphereBlock(out_ch) for _ in range(n)]
            setattr(self, f"layer{i}", nn.Sequential(*stage))
            in_ch = out_ch
        self.fc = nn.Linear(512 * feature_side(input_size[0]) * feature_side(input_size[1]), 512)

    def preprocess(self, image: torch.Tensor) -> torch.Tensor:
        """Aligned face ``[B,3,H,W]`` in [-1,1] -> network input ``[B,3,*input_size]`` in [-1,1]."""
        return self.crop(image, "sphere20")

    def raw_embedding(self, x: torch.Tensor) -> torch.Tensor:
        """Network input ``[B,3,*input_size]`` in [-1,1] -> raw ``[B,512]`` (the reference forward)."""
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(x, 1))

    def mirror_feature(self, x: torch.Tensor) -> torch.Tensor:
        """Network input ``[B,3,*input_size]`` -> raw ``[B,1024]`` = cat(net(x), net(hflip(x)))."""
        both = self.raw_embedding(torch.cat([x, x.flip(-1)], 0))
        return torch.cat(both.chunk(2, 0), 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Aligned face ``[B,3,H,W]`` in [-1,1] -> L2-normalised ``[B,1024]`` (``[B,512]`` without mirror)."""
        x = self.preprocess(image)
        feat = self.mirror_feature(x) if self.mirror else self.raw_embedding(x)
        return F.normalize(feat, dim=-1)


def sphere20(crop: str = "ffhq", mirror: bool = True, input_size: tuple[int, int] = (112, 96)) -> SphereFace:
    """CosFace ``sphere(type=20)`` (randomly initialised) for ``input_size`` 112x96 or 112x112."""
    return SphereFace(SPHERE20_BLOCKS, crop=crop, mirror=mirror, input_size=input_size)


def sphere20_input_size(state: dict) -> tuple[int, int]:
    """The input (H, W) a sphere20 state dict was trained for, from the width of ``fc.weight``.

    Unknown widths give the 112x96 default; the strict load then names the mismatching key.
    """
    fc = state.get("fc.weight")
    width = int(fc.shape[1]) if torch.is_tensor(fc) and fc.dim() == 2 else None
    return INPUT_SIZE_BY_FC_WIDTH.get(width, (112, 96))


def load_sphere20(checkpoint: CheckpointSource = "net_sphere20_data_vggface2_acc_9955.pth",
                  crop: str = "ffhq", mirror: bool = True) -> SphereFace:
    """Frozen sphere20 with the CosFace checkpoint (or a path / state dict) loaded strictly.

    The variant (112x96 or 112x112 input) is the one whose ``fc.weight`` width the file holds.
    """
    what = "CosFace sphere20 (net_sphere20_data_vggface2_acc_9955.pth)"
    state, label = read_state_dict(checkpoint, what)
    net = sphere20(crop, mirror, input_size=sphere20_input_size(state))
    return freeze(load_state_strict(net, state, label, what))
